"""The proxy task every search and study trial trains on: same data, resolution and budget for all."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.scale.compound import scale_network


@dataclass(frozen=True)
class Proxy:
    """Training budget of one trial. ``resolution`` is the baseline's proxy resolution in pixels;
    a trial's resolution multiplier γ trains at round(γ × resolution)."""

    data: str = "digits"
    resolution: int = 32
    epochs: int = 2
    batch_size: int = 64
    seed: int = 0
    recipe: str = "small"
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        for name in ("resolution", "epochs", "batch_size"):
            check_whole_number(name, getattr(self, name), 1)

    def settings(self) -> dict[str, Any]:
        """What makes two trials comparable (recorded in the study). The data path is kept as given,
        so that workers on other machines may mount the same data elsewhere under the same name."""
        return asdict(self)


def proxy_base(base: NetworkSpec, proxy: Proxy) -> NetworkSpec:
    """The baseline at the proxy resolution."""
    if proxy.resolution < base.total_stride:
        raise UserError(
            f"resolution {proxy.resolution} is below the baseline's total stride {base.total_stride}",
            field="resolution",
        )
    return base.with_(resolution=proxy.resolution)


def scale_at_proxy(
    base: NetworkSpec, proxy: Proxy, *, depth: float = 1.0, width: float = 1.0, resolution: float = 1.0, name: str = ""
) -> NetworkSpec:
    """The baseline scaled by (depth, width, resolution multiplier) at the proxy resolution.

    The resolution is rounded to whole pixels (not to the 4-pixel step used at full size), so that
    small proxy resolutions still tell γ = 1.05 from 1.10.
    """
    start = proxy_base(base, proxy)
    size = max(start.total_stride, int(math.floor(proxy.resolution * resolution + 0.5)))
    return scale_network(start, depth=depth, width=width, image_size=size, name=name or start.name)


def train_proxy(
    spec: NetworkSpec,
    proxy: Proxy,
    *,
    output: str | Path | None = None,
    on_epoch_end: Any = None,
    progress: bool = False,
    **recipe_overrides: Any,
) -> dict[str, Any]:
    """Train ``spec`` on the proxy task; returns accuracy (top-1 fraction) and the model's cost.

    With ``output`` the trained weights (safetensors), description and report are written there;
    ``recipe_overrides`` go to :func:`effnet.train.train_model` (e.g. ``warmup_epochs``).
    """
    from effnet.train import train_model

    start = time.perf_counter()
    report = train_model(
        spec,
        proxy.data,
        epochs=proxy.epochs,
        batch_size=proxy.batch_size,
        resolution=spec.resolution,
        seed=proxy.seed,
        recipe=proxy.recipe,
        output=output,
        progress=progress,
        max_steps_per_epoch=proxy.max_steps_per_epoch,
        on_epoch_end=on_epoch_end,
        **recipe_overrides,
    )
    return {
        "accuracy": float(report["top1"]),
        "top5": float(report.get("top5", math.nan)),
        "loss": float(report.get("loss", math.nan)),
        "params": int(report["params"]),
        "macs": int(report["macs"]),
        "resolution": spec.resolution,
        "num_classes": int(report["num_classes"]),
        "seconds": round(float(report.get("seconds", time.perf_counter() - start)), 3),
    }
