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

from effnet.atomic import prepare_target
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.models.profile import profile
from effnet.results import Result
from effnet.runs import check_other_run, write_record
from effnet.search import stats
from effnet.search.proxy import (
    Proxy,
    baseline_macs,
    check_trials,
    proxy_base,
    proxy_splits,
    scale_at_proxy,
    train_proxy,
)
from effnet.search.queue import Point, seed_key, seeded, train_points
from effnet.search.record import TrialRecord, point_row, row_estimate
from effnet.search.stats import Estimate, difference, learning_threshold
from effnet.search.storage import DEFAULT_HEARTBEAT, open_study, redact_url
from effnet.search.worker import check_settings, study_url
from effnet.train.logs import TRAIN_MARKERS

#: Defaults of the grid: the paper's constraint α·β²·γ² ≈ 2 on a 0.05 grid.
TARGET = 2.0
TOLERANCE = 0.1
STEP = 0.05
RANGES = {"alpha": (1.0, 2.0), "beta": (1.0, 1.5), "gamma": (1.0, 1.5)}
#: Values per axis at most (a grid step of 0.005 over the default α range), and grid points to train
#: at most (each trains a model: a thousand is already days on a CPU).
MAX_GRID_VALUES = 201
MAX_POINTS = 1000


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
            check_whole_number("max_points", self.max_points, 1, high=MAX_POINTS)


def constraint(alpha: float, beta: float, gamma: float) -> float:
    """The ideal multiply-add growth of one compound step: α·β²·γ²."""
    return alpha * beta**2 * gamma**2


def _values(name: str, low: float, high: float, step: float) -> list[float]:
    count = int(math.floor(min((high - low) / step, 1e12) + 1e-9)) + 1
    if count > MAX_GRID_VALUES:
        raise UserError(
            f"grid_step {step:g} gives {count:,} values of {name} in [{low:g}, {high:g}]; at most "
            f"{MAX_GRID_VALUES} per axis (use a coarser grid step or a narrower range)",
            field="grid_step",
        )
    return [round(low + i * step, 10) for i in range(count)]


def _gammas(alpha: float, beta: float, gammas: list[float], config: GridConfig) -> list[float]:
    """The γ values that satisfy the constraint with (α, β), found by bisection on the sorted axis."""
    import bisect

    slack = config.tolerance + 1e-9
    low = math.sqrt(max(0.0, config.target - slack) / (alpha * beta**2))
    high = math.sqrt((config.target + slack) / (alpha * beta**2))
    start, stop = bisect.bisect_left(gammas, low - 1e-9), bisect.bisect_right(gammas, high + 1e-9)
    return [g for g in gammas[start:stop] if abs(constraint(alpha, beta, g) - config.target) <= slack]


def scaling_grid(config: GridConfig | None = None) -> list[tuple[float, float, float]]:
    """The (α, β, γ) grid points satisfying the constraint, sorted by α, β, γ (at most
    :data:`MAX_GRID_VALUES` values per axis, :data:`MAX_POINTS` points kept)."""
    config = config or GridConfig()
    alphas, betas, gammas = (_values(n, *getattr(config, n), config.step) for n in ("alpha", "beta", "gamma"))
    points = [(a, b, g) for a in alphas for b in betas for g in _gammas(a, b, gammas, config)]
    if not points:
        raise UserError(
            f"no grid point has |α·β²·γ² − {config.target:g}| ≤ {config.tolerance:g}: "
            "widen the tolerance or the ranges, or use a finer grid step"
        )
    if config.max_points is not None and config.max_points < len(points):
        n = config.max_points
        picks = [round(i * (len(points) - 1) / (n - 1)) for i in range(n)] if n > 1 else [len(points) // 2]
        points = [points[i] for i in sorted(set(picks))]
    if len(points) > MAX_POINTS:
        raise UserError(
            f"max_points: the grid has {len(points):,} points and at most {MAX_POINTS} can be trained; "
            "give max_points to spread fewer over it, or use a coarser grid step",
            field="max_points",
        )
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


def grid_row(trials: list[FrozenTrial | None], point: Point) -> dict[str, Any]:
    """One grid point as its JSON/CSV/table row: the point's parameters, then its trials' record
    (one trial per seed: means, intervals and each seed's accuracy)."""
    records = [TrialRecord.of(t, present=RECORDED) for t in trials]
    return point_row(records, {**point.params, "point": point.key}, number="trial")


#: The user attributes of a grid trial that its row shows.
RECORDED = ("constraint", "resolution", "macs_ratio", "top5", "train_seconds", "num_classes", "steps", "epochs_trained")


def _label(row: dict[str, Any]) -> str:
    return f"α={row['alpha']:g} β={row['beta']:g} γ={row['gamma']:g}"


@dataclass(frozen=True)
class Choice(Result):
    """Which grid point the search chooses, and how sure it is, by the one rule of
    :func:`effnet.search.stats.decide`.

    ``best`` is the learned point of highest mean accuracy; ``margin`` the best's mean minus the
    runner-up's with Welch's 95% interval; ``tied`` the other learned points whose difference from the
    best has a 95% interval containing 0 (None where a point has one seed: unknown); ``decision``
    ``"ahead"`` (the best's difference from every other learned point excludes 0: a winner), ``"tie"``,
    ``"unknown"``, or None with nothing to compare; ``not_learned`` the points below
    :func:`learning_threshold` (left out of the choice unless none learned); ``verdict`` all that in one
    sentence."""

    best: str | None
    runner_up: str | None
    margin: Estimate | None
    tied: list[str] | None
    not_learned: list[str]
    threshold: float | None
    verdict: str
    decision: str | None = None


def choose(rows: list[dict[str, Any]]) -> Choice:
    """Rank the finished rows by mean accuracy; the first wins only if its difference from every other
    learned point lies above 0 (:func:`effnet.search.stats.decide`)."""
    done = [r for r in rows if r.get("accuracy") is not None]
    if not done:
        return Choice(None, None, None, None, [], None, "no grid point finished training")
    classes = next((r["num_classes"] for r in done if r.get("num_classes")), None)
    threshold = learning_threshold(classes) if classes else None
    not_learned = [r["point"] for r in done if threshold is not None and r["accuracy"] < threshold]
    learned = [r for r in done if r["point"] not in not_learned]
    ranked = sorted(learned or done, key=lambda r: (-r["accuracy"], r.get("macs") or 0))
    estimates = {r["point"]: row_estimate(r) for r in ranked}
    best, lead = ranked[0], estimates[ranked[0]["point"]]
    assert lead is not None
    below = f"below {stats.points(threshold or 0)}%, the learning threshold"
    if not learned:
        text = (
            f"no grid point learned (every accuracy is {below}): {_label(best)} ranks first at "
            f"{stats.show(lead)}, a choice between noise; train longer"
        )
        return Choice(best["point"], None, None, None, not_learned, threshold, text)
    runner = ranked[1] if len(ranked) > 1 else None
    differences = {r["point"]: difference(lead, estimates[r["point"]]) for r in ranked[1:]}  # type: ignore[arg-type]
    verdicts = {key: stats.decide(d) for key, d in differences.items()}
    tied = None if stats.UNKNOWN in verdicts.values() else [k for k, v in verdicts.items() if v == stats.TIE]
    text = f"{_label(best)} ranks first at {stats.show(lead)}"
    margin = decision = None
    if runner is None:
        text += " (the only point that learned)"
    else:
        margin = differences[runner["point"]]
        if tied is None:
            decision = stats.UNKNOWN
            text += (
                f", {stats.points(margin.mean)} points above {_label(runner)} (a point with one seed has no "
                "interval, so neither a winner nor a tie can be told; use 2 or more seeds)"
            )
        elif tied:
            decision = stats.TIE
            first = next(r for r in ranked[1:] if r["point"] in tied)
            more = f" and {len(tied) - 1} more point(s)" if len(tied) > 1 else ""
            which = "the runner-up " if first is runner else ""
            text += (
                f"; tied with {which}{_label(first)}{more} (difference "
                f"{stats.show(differences[first['point']], ' points')}, interval contains 0): no winner at this budget"
            )
        else:
            decision = stats.AHEAD
            text += f", ahead of the runner-up {_label(runner)} by {stats.show(margin, ' points')}"
    if not_learned:
        text += f"; {len(not_learned)} point(s) did not learn ({below}) and are left out of the choice"
    return Choice(
        best["point"], runner["point"] if runner else None, margin, tied, not_learned, threshold, text, decision
    )


@dataclass(frozen=True)
class GridSearchResult(Result):
    """What :func:`search_scaling` found: the chosen row, every point's row, the choice and how sure
    it is, where the study lives."""

    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    study: str
    storage: str
    base: str
    proxy: dict[str, Any]
    grid: dict[str, Any]
    choice: Choice
    seeds: int = 1
    budget: str = ""
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
    """Run (or resume, or join) the grid search: every point trained once per seed of the proxy.

    ``plot`` is the PNG path ("" for ``<output>/search_scaling.png``, None for no figure).
    """
    proxy = proxy or Proxy()
    grid = grid or GridConfig()
    output = Path(output)
    points = [Point(point_key(a, b, g), {"alpha": a, "beta": b, "gamma": g}) for a, b, g in scaling_grid(grid)]
    check_trials(len(points), proxy)
    proxy_base(base, proxy)  # resolution check before any storage is touched
    for point in points:  # every description within effnet's bounds, before any storage is touched
        scale_at_proxy(
            base, proxy, depth=point.params["alpha"], width=point.params["beta"], resolution=point.params["gamma"]
        )
    if plot:  # the figure's folder made, or refused, before any training
        prepare_target(plot, field="plot")
    # another command's run in the folder is refused; once the study opens, the folder records this one
    check_other_run(output, commands=("search-scaling", "pipeline"), others=TRAIN_MARKERS)
    study = open_study(storage, study_name, output=output, pruner=make_pruner(pruner), heartbeat=heartbeat)
    write_record(
        output,
        {
            "command": "search-scaling",
            "study": study_name,
            "storage": redact_url(str(storage)) if storage else "output",
        },
    )
    # What a trial's result depends on. The grid is not part of it: a point's key names its
    # (α, β, γ), so a finer, wider or truncated grid reuses the points already trained; nor is the
    # number of seeds: more seeds add trials (a trial is a point and a seed).
    check_settings(
        study, {"kind": "search-scaling", "base": base.to_dict(), "proxy": proxy.settings(), "pruner": pruner}
    )
    ranges = {"alpha": grid.alpha, "beta": grid.beta, "gamma": grid.gamma}
    cache: dict[str, int] = {}

    def objective(trial: optuna.Trial, point: Point) -> tuple[float, dict[str, Any]]:
        a, b, g = (trial.suggest_float(k, *ranges[k]) for k in ("alpha", "beta", "gamma"))
        key = point.key.rsplit("/", 1)[0]
        spec = scale_at_proxy(base, proxy, depth=a, width=b, resolution=g, name=f"{base.name}-{key}")
        if "classes" not in cache:
            cache["classes"] = proxy_splits(proxy).num_classes
            cache["base_macs"] = baseline_macs(base, proxy, cache["classes"])  # the data read once
        counts = profile(spec, num_classes=cache["classes"])
        cost = {
            "constraint": round(constraint(a, b, g), 6),
            "macs": counts.macs,
            "params": counts.params,
            "resolution": spec.resolution,
            "macs_ratio": round(counts.macs / cache["base_macs"], 4),
            "seed": point.params["seed"],
        }
        for name, value in cost.items():  # recorded first, so pruned and failed trials show them too
            trial.set_user_attr(name, value)
        result = train_proxy(
            spec, proxy, seed=point.params["seed"], base_macs=cache["base_macs"], on_epoch_end=reporting_callback(trial)
        )
        return result["accuracy"], {**result, **cost}

    seeds = proxy.seed_values
    standing = train_points(
        study, seeded(points, seeds), objective, desc="search-scaling", n_trials=n_trials, progress=progress
    )
    rows = [grid_row([standing[seed_key(p.key, s)] for s in seeds], p) for p in points]
    choice = choose(rows)
    best = next((r for r in rows if r["point"] == choice.best), None)
    plot_path = None
    if plot is not None:
        from effnet.plots import plot_search

        path = Path(plot) if plot else output / "search_scaling.png"
        title = f"α/β/γ grid search on {base.name} (φ = 1), {proxy.seeds} seed(s) per point"
        plot_path = str(plot_search(rows, path, title=title, best=best))
    return GridSearchResult(
        best=best,
        trials=rows,
        study=study_name,
        storage=study_url(study),
        base=base.name,
        proxy=proxy.settings(),
        grid={**asdict(grid), "points": len(points)},
        choice=choice,
        seeds=proxy.seeds,
        budget=proxy.describe_budget(),
        plot=plot_path,
    )
