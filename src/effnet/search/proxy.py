"""The proxy task every search and study trial trains on: same data, resolution and budget for all.

A trial is one point trained with one seed. A point is trained with ``seeds`` seeds (``seed``,
``seed + 1``, …), so that a report can say how sure it is (:mod:`effnet.search.stats`). The budget
of each trial is one of :data:`BUDGET_MODES`:

- ``epochs``: ``epochs`` epochs (of at most ``max_steps_per_epoch`` steps) for every point;
- ``macs``: the same training compute for every point: the baseline's ``epochs`` worth of steps,
  times the baseline's multiply-adds over the point's (a model twice as costly trains half as long);
- ``time``: ``time_per_point`` seconds of training for every point (steps from a timing of the
  point's own training step, the run stopped at twice the budget at the latest);
- ``plateau``: up to ``epochs`` epochs, stopped once validation accuracy has not improved for
  ``patience`` epochs; the best epoch's accuracy is the point's, and the epochs taken are recorded.

With ``memory`` (the default) the data is decoded once into uint8 tensors and augmented a batch at a
time (:mod:`effnet.data.tensor_cache`), so a small proxy is bound by the model, not by decoding.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.scale.compound import scale_network
from effnet.train.config import MAX_TIME_LIMIT

BUDGET_MODES = ("epochs", "macs", "time", "plateau")
#: At most this many seeds per point (each one trains the point again), and trials (points × seeds)
#: per search or study (ten thousand trained models are weeks on a CPU, hours on many GPUs).
MAX_SEEDS = 100
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class Proxy:
    """Training budget of one trial. ``resolution`` is the baseline's proxy resolution in pixels;
    a trial's resolution multiplier γ trains at round(γ × resolution). ``seeds`` trials per point,
    seeded ``seed``, ``seed + 1``, …; ``budget`` one of :data:`BUDGET_MODES` (see the module)."""

    data: str = "digits"
    resolution: int = 32
    epochs: int = 2
    batch_size: int = 64
    seed: int = 0
    recipe: str = "small"
    max_steps_per_epoch: int | None = None
    seeds: int = 1
    budget: str = "epochs"
    time_per_point: float | None = None
    patience: int = 2
    tensor_cache: bool = True

    def __post_init__(self) -> None:
        for name in ("resolution", "epochs", "batch_size", "patience"):
            check_whole_number(name, getattr(self, name), 1)
        check_whole_number("seed", self.seed, 0)
        check_whole_number("seeds", self.seeds, 1, high=MAX_SEEDS)
        if self.budget not in BUDGET_MODES:
            raise UserError(
                f"budget_mode {self.budget!r} is unknown (known: {', '.join(BUDGET_MODES)})", field="budget_mode"
            )
        if (self.budget == "time") != (self.time_per_point is not None):
            raise UserError(
                "time_per_point (seconds of training per point) goes with budget_mode time, and only with it",
                field="time_per_point",
            )
        if self.time_per_point is not None:
            check_number("time_per_point", self.time_per_point, low=0, high=MAX_TIME_LIMIT, strict_low=True)

    @property
    def seed_values(self) -> list[int]:
        """The seeds every point is trained with."""
        return list(range(self.seed, self.seed + self.seeds))

    def settings(self) -> dict[str, Any]:
        """What makes two trials comparable (recorded in the study): everything but the number of
        seeds, so that a rerun with more seeds reuses the trials already trained. The data path is
        kept as given, so that workers on other machines may mount the same data elsewhere."""
        settings = asdict(self)
        del settings["seeds"]
        return settings

    def describe_budget(self) -> str:
        """The budget of each trial in words, for reports."""
        steps = f" of at most {self.max_steps_per_epoch} steps" if self.max_steps_per_epoch else ""
        if self.budget == "macs":
            return (
                f"equal training compute: the baseline's {self.epochs} epoch(s){steps}, "
                "other points steps × (baseline's multiply-adds / theirs)"
            )
        if self.budget == "time":
            return f"equal training time: {self.time_per_point:g} s of training per point"
        if self.budget == "plateau":
            return (
                f"to a plateau: up to {self.epochs} epoch(s){steps}, stopped after {self.patience} "
                "epoch(s) without a better validation accuracy (the best epoch counts)"
            )
        return f"{self.epochs} epoch(s){steps} per point"


def check_trials(points: int, proxy: Proxy) -> None:
    """Refuse more than :data:`MAX_TRIALS` trials (``points`` × seeds), naming ``seeds``."""
    if points * proxy.seeds > MAX_TRIALS:
        raise UserError(
            f"seeds: {points:,} points × {proxy.seeds} seed(s) make {points * proxy.seeds:,} trials; at most "
            f"{MAX_TRIALS:,} (fewer points or seeds)",
            field="seeds",
        )


def proxy_base(base: NetworkSpec, proxy: Proxy) -> NetworkSpec:
    """The baseline at the proxy resolution."""
    if proxy.resolution < base.total_stride:
        raise UserError(
            f"resolution {proxy.resolution} is below the baseline's total stride {base.total_stride}",
            field="resolution",
        )
    return base.with_(resolution=proxy.resolution)


def baseline_macs(base: NetworkSpec, proxy: Proxy, num_classes: int | None = None) -> int:
    """The baseline's multiply-adds at the proxy's resolution and number of classes (``num_classes``
    when the caller has already read the data, else from the proxy's data): the yardstick of the
    ``macs`` budget (each point trains ``base_macs / macs`` times the baseline's steps)."""
    from effnet.models.profile import profile

    classes = num_classes if num_classes is not None else proxy_splits(proxy).num_classes
    return profile(proxy_base(base, proxy), num_classes=classes).macs


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


def proxy_splits(proxy: Proxy) -> Any:
    """The proxy's data: decoded once per process into tensors (``tensor_cache``), else loaded as given."""
    if proxy.tensor_cache:
        from effnet.data.tensor_cache import tensor_splits

        return tensor_splits(proxy.data)
    from effnet.data import load_splits

    return load_splits(proxy.data)


def steps_per_epoch(proxy: Proxy, splits: Any) -> int:
    """Training steps of one proxy epoch on ``splits`` (whole batches, capped by ``max_steps_per_epoch``)."""
    full = max(1, len(splits.train) // proxy.batch_size)
    return min(full, proxy.max_steps_per_epoch or full)


def step_seconds(spec: NetworkSpec, proxy: Proxy, num_classes: int, *, device: str | None = None) -> float:
    """Seconds of one training step of ``spec`` at the proxy's batch size (median of three after one
    warm-up step, on random images): what the ``time`` budget divides by."""
    import torch

    from effnet.models.efficientnet import EfficientNet

    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = EfficientNet(spec, num_classes=num_classes).to(where).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(proxy.batch_size, 3, spec.resolution, spec.resolution, device=where)
    targets = torch.randint(0, num_classes, (proxy.batch_size,), device=where)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if where.type == "cuda":
            torch.cuda.synchronize(where)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def budget_steps(proxy: Proxy, per_epoch: int, *, macs: int = 0, base_macs: int = 0, step_time: float = 0.0) -> int:
    """The training steps of a point under the ``macs`` budget (the baseline's ``epochs × per_epoch``
    scaled by ``base_macs / macs``) or the ``time`` budget (``time_per_point / step_time``)."""
    if proxy.budget == "macs":
        return max(1, round(proxy.epochs * per_epoch * base_macs / macs))
    assert proxy.budget == "time" and proxy.time_per_point is not None
    return max(1, math.floor(proxy.time_per_point / max(step_time, 1e-6)))


class _Plateau(Exception):
    """Raised from the epoch callback to stop a ``plateau`` run."""


def train_proxy(
    spec: NetworkSpec,
    proxy: Proxy,
    *,
    seed: int | None = None,
    base_macs: int | None = None,
    output: str | Path | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = False,
    **recipe_overrides: Any,
) -> dict[str, Any]:
    """Train ``spec`` on the proxy task with ``seed`` (default the proxy's first) under the proxy's
    budget; returns accuracy (top-1 fraction), the model's cost, the time and steps it took.

    ``base_macs`` (the baseline's multiply-adds) is needed by the ``macs`` budget. With ``output``
    the trained weights, description and report are written there; ``recipe_overrides`` go to
    :func:`effnet.train.train_model` (e.g. ``warmup_epochs``, ``device``).
    """
    from effnet.models.profile import profile
    from effnet.train import train_model

    seed = proxy.seed if seed is None else seed
    splits = proxy_splits(proxy) if proxy.tensor_cache or proxy.budget != "epochs" else None
    epochs, max_steps, time_limit = proxy.epochs, proxy.max_steps_per_epoch, None
    extra: dict[str, Any] = {"budget": proxy.budget}
    if proxy.budget in ("macs", "time"):
        per_epoch = steps_per_epoch(proxy, splits)
        if proxy.budget == "macs":
            if base_macs is None:
                raise UserError("budget_mode macs needs the baseline's multiply-adds", field="budget_mode")
            steps = budget_steps(
                proxy, per_epoch, macs=profile(spec, num_classes=splits.num_classes).macs, base_macs=base_macs
            )
        else:
            step_time = step_seconds(spec, proxy, splits.num_classes, device=recipe_overrides.get("device"))
            steps = budget_steps(proxy, per_epoch, step_time=step_time)
            extra["step_seconds_estimate"] = round(step_time, 5)
            time_limit = 2 * float(proxy.time_per_point or 0)
        epochs = math.ceil(steps / per_epoch)
        max_steps = math.ceil(steps / epochs)
        extra["budget_steps"] = epochs * max_steps
    history: list[dict[str, Any]] = []

    def epoch_end(epoch: int, metrics: dict) -> None:
        history.append(dict(metrics))
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        if proxy.budget == "plateau":
            best = max(range(len(history)), key=lambda i: history[i]["top1"])
            if len(history) - 1 - best >= proxy.patience:
                raise _Plateau

    start = time.perf_counter()
    settings: dict[str, Any] = dict(
        epochs=epochs,
        batch_size=proxy.batch_size,
        resolution=spec.resolution,
        seed=seed,
        recipe=proxy.recipe,
        output=output,
        progress=progress,
        max_steps_per_epoch=max_steps,
        on_epoch_end=epoch_end,
        time_limit=time_limit,
    )
    data = splits if proxy.tensor_cache else proxy.data
    try:
        report: dict[str, Any] = train_model(spec, data, **settings, **recipe_overrides).to_dict()
    except _Plateau:  # stopped early: what the report would say, from the epochs run
        counts = profile(spec, num_classes=splits.num_classes)
        last = history[-1]
        report = {
            "params": counts.params,
            "macs": counts.macs,
            "num_classes": splits.num_classes,
            "train_seconds": last["seconds"],
            "steps": last["step"],
        }
    if proxy.budget == "plateau":
        best = max(history, key=lambda m: m["top1"])  # the earliest of the best epochs
        report.update(top1=best["top1"], top5=best["top5"], loss=best["val_loss"])
        extra.update(epochs_trained=len(history), best_epoch=int(best["epoch"]))
    return {
        "accuracy": float(report["top1"]),
        "top5": float(report.get("top5", math.nan)),
        "loss": float(report.get("loss", math.nan)),
        "params": int(report["params"]),
        "macs": int(report["macs"]),
        "resolution": spec.resolution,
        "num_classes": int(report["num_classes"]),
        "seconds": round(float(report.get("seconds", time.perf_counter() - start)), 3),
        "train_seconds": round(float(report["train_seconds"]), 3),
        "steps": int(report["steps"]),
        "seed": seed,
        **extra,
    }
