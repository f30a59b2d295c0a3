"""Step 1 of the paper: fix φ = 1 and grid-search α, β, γ ≥ 1 under α·β²·γ² ≈ target.

Each grid point scales the baseline by depth α, width β and resolution γ at the proxy resolution,
trains it with the same budget, and records validation accuracy, parameters, multiply-adds and
time. Points are trained exactly once across workers and interruptions
(:class:`~effnet.search.queue.PointQueue`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.models.profile import profile
from effnet.results import Result
from effnet.search.proxy import Proxy, proxy_base, scale_at_proxy, train_proxy
from effnet.search.queue import Point, train_points
from effnet.search.record import TrialRecord
from effnet.search.storage import DEFAULT_HEARTBEAT, check_settings, open_study, study_url

#: Defaults of the grid: the paper's constraint α·β²·γ² ≈ 2 on a 0.05 grid.
TARGET = 2.0
TOLERANCE = 0.1
STEP = 0.05
RANGES = {"alpha": (1.0, 2.0), "beta": (1.0, 1.5), "gamma": (1.0, 1.5)}


@dataclass(frozen=True)
class GridConfig:
    """Which (α, β, γ) points to train: every grid point with |α·β²·γ² − target| ≤ tolerance."""

    target: float = TARGET
    tolerance: float = TOLERANCE
    step: float = STEP
    alpha: tuple[float, float] = RANGES["alpha"]
    beta: tuple[float, float] = RANGES["beta"]
    gamma: tuple[float, float] = RANGES["gamma"]
    #: Keep at most this many points, spread evenly over the sorted grid (None: all).
    max_points: int | None = None

    def __post_init__(self) -> None:
        check_number("grid_step", self.step, low=0, strict_low=True)
        check_number("tolerance", self.tolerance, low=0)
        check_number("target", self.target, low=1)
        for name in ("alpha", "beta", "gamma"):
            low, high = getattr(self, name)
            if not (1.0 <= low <= high) or not math.isfinite(high):
                raise UserError(
                    f"{name}_range must be LOW,HIGH with 1 ≤ LOW ≤ HIGH, got {low},{high}", field=f"{name}_range"
                )
        if self.max_points is not None:
            check_whole_number("max_points", self.max_points, 1)


def constraint(alpha: float, beta: float, gamma: float) -> float:
    """The ideal multiply-add growth of one compound step: α·β²·γ²."""
    return alpha * beta**2 * gamma**2


def _values(low: float, high: float, step: float) -> list[float]:
    count = int(math.floor((high - low) / step + 1e-9))
    return [round(low + i * step, 10) for i in range(count + 1)]


def scaling_grid(config: GridConfig | None = None) -> list[tuple[float, float, float]]:
    """The (α, β, γ) grid points satisfying the constraint, sorted by α, β, γ."""
    config = config or GridConfig()
    points = [
        (a, b, g)
        for a in _values(*config.alpha, config.step)
        for b in _values(*config.beta, config.step)
        for g in _values(*config.gamma, config.step)
        if abs(constraint(a, b, g) - config.target) <= config.tolerance + 1e-9
    ]
    if not points:
        raise UserError(
            f"no grid point has |α·β²·γ² − {config.target:g}| ≤ {config.tolerance:g}: "
            "widen the tolerance or the ranges, or use a finer grid step"
        )
    if config.max_points is not None and config.max_points < len(points):
        n = config.max_points
        picks = [round(i * (len(points) - 1) / (n - 1)) for i in range(n)] if n > 1 else [len(points) // 2]
        points = [points[i] for i in sorted(set(picks))]
    return points


def point_key(alpha: float, beta: float, gamma: float) -> str:
    return f"a{alpha:.4g}_b{beta:.4g}_g{gamma:.4g}"


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """``median`` (stop a trial whose accuracy after an epoch is below the median of earlier trials) or ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"pruner {name!r} is unknown (known: median, none)", field="pruner")


def reporting_callback(trial: optuna.Trial) -> Callable[[int, dict], None]:
    """An ``on_epoch_end`` that reports accuracy to Optuna and prunes hopeless trials."""

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        trial.report(float(metrics["top1"]), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    return on_epoch_end


def grid_row(trial: FrozenTrial | None, point: Point) -> dict[str, Any]:
    """One grid point as its JSON/CSV/table row: the point's parameters, then its trial's record."""
    record = TrialRecord.of(trial, present=("constraint", "resolution", "macs_ratio", "top5"))
    return record.row(point.params, number="trial")


def best_of(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most accurate finished row (fewer multiply-adds break ties)."""
    done = [r for r in rows if r.get("accuracy") is not None]
    return max(done, key=lambda r: (r["accuracy"], -(r.get("macs") or 0))) if done else None


@dataclass(frozen=True)
class GridSearchResult(Result):
    """What :func:`search_scaling` found: the best row, every point's row, where the study lives."""

    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    study: str
    storage: str
    base: str
    proxy: dict[str, Any]
    grid: dict[str, Any]
    plot: str | None = None


def search_scaling(
    base: NetworkSpec,
    *,
    proxy: Proxy | None = None,
    grid: GridConfig | None = None,
    storage: str | Path | None = None,
    study_name: str = "search-scaling",
    output: str | Path = "runs/search-scaling",
    n_trials: int | None = None,
    pruner: str = "none",
    heartbeat: int = DEFAULT_HEARTBEAT,
    progress: bool = False,
    plot: str | Path | None = "",
) -> GridSearchResult:
    """Run (or resume, or join) the grid search.

    ``plot`` is the PNG path ("" for ``<output>/search_scaling.png``, None for no figure).
    """
    proxy = proxy or Proxy()
    grid = grid or GridConfig()
    output = Path(output)
    points = [Point(point_key(a, b, g), {"alpha": a, "beta": b, "gamma": g}) for a, b, g in scaling_grid(grid)]
    proxy_base(base, proxy)  # resolution check before any storage is touched
    study = open_study(storage, study_name, output=output, pruner=make_pruner(pruner), heartbeat=heartbeat)
    # What a trial's result depends on. The grid is not part of it: a point's key names its
    # (α, β, γ), so a finer, wider or truncated grid reuses the points already trained.
    check_settings(
        study, {"kind": "search-scaling", "base": base.to_dict(), "proxy": proxy.settings(), "pruner": pruner}
    )
    ranges = {"alpha": grid.alpha, "beta": grid.beta, "gamma": grid.gamma}
    cache: dict[str, int] = {}

    def objective(trial: optuna.Trial, point: Point) -> tuple[float, dict[str, Any]]:
        a, b, g = (trial.suggest_float(k, *ranges[k]) for k in ("alpha", "beta", "gamma"))
        spec = scale_at_proxy(base, proxy, depth=a, width=b, resolution=g, name=f"{base.name}-{point.key}")
        if "classes" not in cache:
            from effnet.train.data import load_splits

            cache["classes"] = load_splits(proxy.data).num_classes
            cache["base_macs"] = profile(proxy_base(base, proxy), num_classes=cache["classes"]).macs
        counts = profile(spec, num_classes=cache["classes"])
        cost = {
            "constraint": round(constraint(a, b, g), 6),
            "macs": counts.macs,
            "params": counts.params,
            "resolution": spec.resolution,
            "macs_ratio": round(counts.macs / cache["base_macs"], 4),
        }
        for name, value in cost.items():  # recorded first, so pruned and failed trials show them too
            trial.set_user_attr(name, value)
        result = train_proxy(spec, proxy, on_epoch_end=reporting_callback(trial))
        return result["accuracy"], {**result, **cost}

    standing = train_points(study, points, objective, desc="search-scaling", n_trials=n_trials, progress=progress)
    rows = [grid_row(standing[p.key], p) for p in points]
    plot_path = None
    if plot is not None:
        from effnet.plots import plot_search

        path = Path(plot) if plot else output / "search_scaling.png"
        plot_path = str(plot_search(rows, path, title=f"α/β/γ grid search on {base.name} (φ = 1)"))
    return GridSearchResult(
        best=best_of(rows),
        trials=rows,
        study=study_name,
        storage=study_url(study),
        base=base.name,
        proxy=proxy.settings(),
        grid={**asdict(grid), "points": len(points)},
        plot=plot_path,
    )
