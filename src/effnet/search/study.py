"""The paper's Observations 1 and 2 on the user's data: scale one dimension, or all three.

The baseline is scaled by width only, depth only, resolution only (the paper's sweeps) and by
compound φ; every point trains with the same proxy budget. The four curves of accuracy against
multiply-adds go in one figure and one CSV. The baseline itself is trained once and starts every
curve. Same storage and resumability as the grid search.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from effnet.atomic import atomic_write_text, prepare_target
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.results import Result
from effnet.runs import check_other_run, write_record
from effnet.scale.compound import ALPHA, BETA, GAMMA, MAX_MULTIPLIER, MAX_PHI, MIN_PHI
from effnet.search import stats
from effnet.search.grid import reporting_callback
from effnet.search.proxy import Proxy, baseline_macs, check_trials, proxy_base, scale_at_proxy, train_proxy
from effnet.search.queue import Point, seed_key, seeded, train_points
from effnet.search.record import TrialRecord, point_row, row_estimate
from effnet.search.stats import Estimate, combine, interpolation_weights, learning_threshold
from effnet.search.storage import DEFAULT_HEARTBEAT, open_study, redact_url
from effnet.search.worker import check_settings, study_url
from effnet.train.logs import TRAIN_MARKERS

#: The paper's single-dimension sweeps (Figure 3) and a compound sweep.
PAPER_WIDTHS = (1.0, 1.4, 1.8, 2.6, 3.8, 5.0)
PAPER_DEPTHS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
PAPER_RESOLUTIONS = (1.0, 1.3, 1.5, 1.7, 1.9, 2.2, 2.5)
DEFAULT_PHIS = (0.0, 1.0, 2.0, 3.0, 4.0)
FAMILIES = ("width", "depth", "resolution", "compound")
CSV_COLUMNS = (
    "family",
    "value",
    "depth",
    "width",
    "resolution_multiplier",
    "resolution",
    "params",
    "macs",
    "activations",
    "num_classes",
    "accuracy",
    "accuracy_ci95",
    "accuracy_std",
    "seeds",
    "accuracies",
    "learned",
    "seconds",
    "train_seconds",
    "state",
)
#: What ``compare_by`` compares the curves at: the row field of each point's cost.
COMPARE_BY = {"macs": "macs", "time": "train_seconds", "params": "params", "activations": "activations"}
COST_WORDS = {"macs": "multiply-adds", "time": "training time", "params": "parameters", "activations": "activations"}
#: Values per sweep at most.
MAX_SWEEP = 100


@dataclass(frozen=True)
class Sweeps:
    """The multipliers of each curve; ``limit`` keeps the first N of each, ``max_macs_ratio``
    drops points whose multiply-adds exceed that many times the baseline's."""

    widths: tuple[float, ...] = PAPER_WIDTHS
    depths: tuple[float, ...] = PAPER_DEPTHS
    resolutions: tuple[float, ...] = PAPER_RESOLUTIONS
    phis: tuple[float, ...] = DEFAULT_PHIS
    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA
    limit: int | None = None
    max_macs_ratio: float | None = None
    families: tuple[str, ...] = FAMILIES

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise UserError(
                f"families holds unknown {', '.join(sorted(unknown)) or 'nothing'} (known: {', '.join(FAMILIES)})",
                field="families",
            )
        for name in ("widths", "depths", "resolutions"):
            if any(not math.isfinite(v) or not 0 < v <= MAX_MULTIPLIER for v in getattr(self, name)):
                raise UserError(f"{name} must be numbers within (0, {MAX_MULTIPLIER:g}]", field=name)
        if any(not math.isfinite(v) or not MIN_PHI <= v <= MAX_PHI for v in self.phis):
            raise UserError(f"phis must be numbers within [{MIN_PHI:g}, {MAX_PHI:g}]", field="phis")
        for name in ("widths", "depths", "resolutions", "phis"):
            if len(getattr(self, name)) > MAX_SWEEP:
                raise UserError(f"{name} holds {len(getattr(self, name))} values; at most {MAX_SWEEP}", field=name)
        for name in ("alpha", "beta", "gamma"):  # compound's bases: φ's multipliers are their powers
            check_number(name, getattr(self, name), low=0, high=MAX_MULTIPLIER, strict_low=True)
        if self.limit is not None:
            check_whole_number("limit", self.limit, 1)
        if self.max_macs_ratio is not None:
            check_number("max_macs_ratio", self.max_macs_ratio, low=0, strict_low=True)

    def values(self, family: str) -> list[float]:
        raw = {"width": self.widths, "depth": self.depths, "resolution": self.resolutions, "compound": self.phis}
        values = sorted(set(raw[family]))
        return values[: self.limit] if self.limit else values

    def multipliers(self, family: str, value: float) -> tuple[float, float, float]:
        """(depth, width, resolution) multipliers of one point."""
        if family == "width":
            return 1.0, value, 1.0
        if family == "depth":
            return value, 1.0, 1.0
        if family == "resolution":
            return 1.0, 1.0, value
        return self.alpha**value, self.beta**value, self.gamma**value


def _is_base(family: str, value: float) -> bool:
    return value == (0.0 if family == "compound" else 1.0)


#: The sweep option of each single-dimension family.
SWEEP_NAMES = {"width": "widths", "depth": "depths", "resolution": "resolutions"}
#: How far rounding may take a point's network beyond its multiplier: past this, the multiplier is below
#: what the network can realise (one repeat per stage, the channel divisor, the total stride) and the
#: point would train a network other than the one it is labelled with.
MAX_ROUNDING = 2.0


def check_realised(family: str, value: float, start: NetworkSpec, spec: NetworkSpec) -> None:
    """A UserError naming the sweep when ``spec``, ``start`` scaled by ``value`` along ``family``, is
    degenerate: smaller than the total stride, or more than :data:`MAX_ROUNDING` times the multiplier."""
    name = SWEEP_NAMES[family]
    wanted = start.resolution * value
    if family == "resolution" and math.floor(wanted + 0.5) < start.total_stride:
        raise UserError(
            f"{name} value {value:g} gives {wanted:.3g} px at the proxy's {start.resolution} px, below the "
            f"network's total stride {start.total_stride}: the smallest value is {start.total_stride / start.resolution:.3g}",
            field=name,
        )
    if family == "depth":
        realised = sum(b.repeats for b in spec.blocks) / sum(b.repeats for b in start.blocks)
        what = "layers"
    elif family == "width":
        realised = sum(b.out_channels for b in spec.blocks) / sum(b.out_channels for b in start.blocks)
        what = "channels"
    else:
        realised = spec.resolution / start.resolution
        what = "pixels"
    if realised > MAX_ROUNDING * value:
        raise UserError(
            f"{name} value {value:g} is below what the network can realise: rounding gives {realised:.3g}× the "
            f"baseline's {what}, so the point would not be the one it is labelled; use values ≥ {realised / MAX_ROUNDING:.3g}",
            field=name,
        )


def check_scaled_down(
    phi: float, multipliers: tuple[float, float, float], start: NetworkSpec, spec: NetworkSpec
) -> None:
    """:func:`check_realised` for a compound point below the baseline (φ < 0): a UserError naming ``phis``
    where the proxy resolution would fall below the total stride, or where rounding keeps any dimension more
    than :data:`MAX_ROUNDING` times its multiplier (depth α^φ, width β^φ, resolution γ^φ)."""
    depth, width, resolution = multipliers
    wanted = start.resolution * resolution
    if math.floor(wanted + 0.5) < start.total_stride:
        # γ^φ = resolution, so the φ whose γ^φ reaches the stride is log(stride / px) / log(γ)
        smallest = math.log(start.total_stride / start.resolution) / math.log(resolution) * phi
        raise UserError(
            f"phis value {phi:g} gives {wanted:.3g} px at the proxy's {start.resolution} px, below the network's "
            f"total stride {start.total_stride}: the smallest φ there is about {smallest:.3g} (a larger --resolution "
            "allows smaller φ)",
            field="phis",
        )
    realised = {
        "layers": (sum(b.repeats for b in spec.blocks) / sum(b.repeats for b in start.blocks), depth),
        "channels": (sum(b.out_channels for b in spec.blocks) / sum(b.out_channels for b in start.blocks), width),
        "pixels": (spec.resolution / start.resolution, resolution),
    }
    for what, (got, multiplier) in realised.items():
        if got > MAX_ROUNDING * multiplier:
            raise UserError(
                f"phis value {phi:g} is below what the network can realise: rounding gives {got:.3g}× the "
                f"baseline's {what} where φ asks {multiplier:.3g}×, so the point would not be the one it is "
                "labelled; use larger φ",
                field="phis",
            )


def study_points(base: NetworkSpec, proxy: Proxy, sweeps: Sweeps, base_macs: int) -> tuple[list[Point], dict]:
    """The points to train (the baseline once) and, per family, the keys of its curve in order; every
    point's description is made here, so one beyond effnet's bounds is refused before any training."""
    from effnet.models.profile import profile

    points: dict[str, Point] = {}
    curves: dict[str, list[tuple[str, float]]] = {}
    for family in sweeps.families:
        curve = []
        for value in sweeps.values(family):
            key = "base" if _is_base(family, value) else f"{family}={value:g}"
            if key not in points:
                d, w, r = sweeps.multipliers(family, value)
                spec = scale_at_proxy(base, proxy, depth=d, width=w, resolution=r)
                if family != "compound":
                    check_realised(family, value, proxy_base(base, proxy), spec)
                elif value < 0:
                    check_scaled_down(value, (d, w, r), proxy_base(base, proxy), spec)
                if sweeps.max_macs_ratio is not None and key != "base":
                    if profile(spec, num_classes=10).macs > sweeps.max_macs_ratio * base_macs:
                        continue
                points[key] = Point(key, {"family": "base" if key == "base" else family, "value": value})
            curve.append((key, value))
        curves[family] = curve
    return list(points.values()), curves


def cost_field(by: str) -> str:
    """The row field of the cost ``by`` names (macs, time, params, activations); a UserError naming compare_by else."""
    if by not in COMPARE_BY:
        raise UserError(f"compare_by {by!r} is unknown (known: {', '.join(COMPARE_BY)})", field="compare_by")
    return COMPARE_BY[by]


def _span(ratios: list[float], by: str) -> str:
    low, high = min(ratios), max(ratios)
    where = f"at {low:.2g}×" if math.isclose(low, high, rel_tol=0.005) else f"over {low:.2g}×–{high:.2g}×"
    return f"{where} the baseline's {COST_WORDS[by]}"


def verdict(family: str, difference: Estimate, span: str) -> str:
    """compound − ``family`` in words, by the one rule of :func:`effnet.search.stats.decide`: who is
    ahead and by how much, or a tie (the difference's 95% interval contains 0)."""
    return stats.judge(difference, "compound", family, span)


def compare_curves(curves: dict[str, list[dict[str, Any]]], by: str = "macs") -> dict[str, dict[str, Any]]:
    """Each single-dimension curve against compound at equal cost (``by``: macs, time, params or activations).

    At every point of the single-dimension curve (the baseline aside) whose cost lies within
    compound's measured range, compound's accuracy is interpolated linearly in log(cost) between its
    two neighbours (never extrapolated); the difference compound − family there, and its mean over
    those points, carry the 95% interval of the linear combination of the point estimates
    (:func:`effnet.search.stats.combine`). A curve with no such point gets no verdict."""
    cost = cost_field(by)
    known = [(r[cost], row_estimate(r)) for r in curves.get("compound", []) if r.get(cost)]
    compound = sorted(((x, e) for x, e in known if e is not None), key=lambda item: item[0])
    xs = [x for x, _ in compound]
    rows = [r for family in curves.values() for r in family]
    base = next((r[cost] for r in rows if r.get("family") == "base" and r.get(cost)), None)
    out: dict[str, dict[str, Any]] = {}
    for family in ("width", "depth", "resolution"):
        if family not in curves:
            continue
        positions, total = [], {}
        for j, row in enumerate(curves[family]):
            own = row_estimate(row)
            weights = (
                interpolation_weights(xs, row[cost]) if own and row["family"] != "base" and row.get(cost) else None
            )
            if weights is None:
                continue
            terms = {("compound", i): (w, compound[i][1]) for i, w in weights.items()}
            at = combine(terms)
            diff = combine({**terms, (family, j): (-1.0, own)})
            ratio = row[cost] / base if base else math.nan
            positions.append(
                {
                    "value": row.get("value"),
                    by: row[cost],
                    "cost_ratio": round(ratio, 4),
                    "compound": at.mean,
                    "compound_ci95": at.ci95,
                    family: own.mean,
                    f"{family}_ci95": own.ci95,
                    "difference": diff.mean,
                    "ci95": diff.ci95,
                    "verdict": verdict(family, diff, _span([ratio], by)),
                }
            )
            for key, (w, e) in {**terms, (family, j): (-1.0, own)}.items():
                total[key] = (total.get(key, (0.0, e))[0] + w, e)
        if not positions:
            out[family] = {
                "by": by,
                "points": 0,
                "difference": None,
                "ci95": None,
                "verdict": f"no verdict: no {family} point lies within compound's measured range of {COST_WORDS[by]}",
                "positions": [],
            }
            continue
        mean = combine({key: (w / len(positions), e) for key, (w, e) in total.items()})
        span = _span([p["cost_ratio"] for p in positions], by)
        out[family] = {
            "by": by,
            "points": len(positions),
            "compound_ahead": sum(p["difference"] > 0 for p in positions),
            "mean_gain": round(mean.mean, 4),
            "difference": mean.mean,
            "ci95": mean.ci95,
            "verdict": verdict(family, mean, span),
            "positions": positions,
        }
    return out


@dataclass(frozen=True)
class StudyResult(Result):
    """What :func:`study_scaling` found: each family's curve of rows (means and intervals over the
    seeds), compound against each single dimension at equal cost (``compare_by``), where the study
    lives and the files written."""

    curves: dict[str, list[dict[str, Any]]]
    comparison: dict[str, dict[str, Any]]
    study: str
    storage: str
    base: str
    proxy: dict[str, Any]
    coefficients: dict[str, float]
    points: int
    seeds: int = 1
    budget: str = ""
    compare_by: str = "macs"
    not_learned: list[str] = field(default_factory=list)
    csv: str | None = None
    plot: str | None = None


#: The user attributes of a study trial that its row shows.
RECORDED = ("resolution", "train_seconds", "num_classes", "steps", "epochs_trained")


def study_scaling(
    base: NetworkSpec,
    *,
    proxy: Proxy | None = None,
    sweeps: Sweeps | None = None,
    storage: str | Path | None = None,
    study_name: str = "study-scaling",
    output: str | Path = "runs/study-scaling",
    n_trials: int | None = None,
    heartbeat: int = DEFAULT_HEARTBEAT,
    progress: bool = False,
    plot: str | Path | None = "",
    csv_path: str | Path | None = "",
    compare_by: str = "macs",
) -> StudyResult:
    """Train (or resume) the four sweeps, every point once per seed of the proxy; ``plot`` and
    ``csv_path`` are file paths ("" for the default in ``output``, None for none); ``compare_by``
    (macs, time, params, activations) is the cost at which the curves are compared and drawn."""
    from effnet.models.profile import profile

    proxy = proxy or Proxy()
    sweeps = sweeps or Sweeps()
    cost_field(compare_by)
    output = Path(output)
    start = proxy_base(base, proxy)
    base_macs = profile(start, num_classes=10).macs
    points, curve_keys = study_points(base, proxy, sweeps, base_macs)
    check_trials(len(points), proxy)
    for path, name in ((plot, "plot"), (csv_path, "csv_path")):
        if path:  # the file's folder made, or refused, before any training
            prepare_target(path, field=name)
    # another command's run in the folder is refused; once the study opens, the folder records this one
    check_other_run(output, commands=("study-scaling",), others=TRAIN_MARKERS)
    study = open_study(storage, study_name, output=output, heartbeat=heartbeat, pruner=optuna.pruners.NopPruner())
    write_record(
        output,
        {"command": "study-scaling", "study": study_name, "storage": redact_url(str(storage)) if storage else "output"},
    )
    check_settings(
        study,
        # The sweeps are not part of it (longer or truncated sweeps reuse trained points), nor the
        # number of seeds (more seeds add trials); the compound coefficients are, since they give
        # "compound=φ" its meaning.
        {
            "kind": "study-scaling",
            "base": base.to_dict(),
            "proxy": proxy.settings(),
            "compound": [sweeps.alpha, sweeps.beta, sweeps.gamma],
        },
    )
    cache: dict[str, int] = {}

    def objective(trial: optuna.Trial, point: Point) -> tuple[float, dict[str, Any]]:
        family, value = point.params["family"], point.params["value"]
        d, w, r = (1.0, 1.0, 1.0) if family == "base" else sweeps.multipliers(family, value)
        key = point.key.rsplit("/", 1)[0]
        spec = scale_at_proxy(base, proxy, depth=d, width=w, resolution=r, name=f"{base.name}-{key}")
        if "base_macs" not in cache and proxy.budget == "macs":
            cache["base_macs"] = baseline_macs(base, proxy)
        result = train_proxy(
            spec,
            proxy,
            seed=point.params["seed"],
            base_macs=cache.get("base_macs"),
            on_epoch_end=reporting_callback(trial),
        )
        result.update(depth=round(d, 6), width=round(w, 6), resolution_multiplier=round(r, 6))
        return result["accuracy"], result

    seeds = proxy.seed_values
    standing = train_points(
        study, seeded(points, seeds), objective, desc="study-scaling", n_trials=n_trials, progress=progress
    )
    curves: dict[str, list[dict[str, Any]]] = {}
    trained = {p.key for p in points}
    activations: dict[str, int] = {}  # per point: the baseline is in every curve
    for family, keys in curve_keys.items():
        rows = []
        for key, value in keys:
            if key not in trained:
                continue
            d, w, r = sweeps.multipliers(family, value)
            lead = {
                "family": "base" if key == "base" else family,
                "value": value,
                "depth": round(d, 6),
                "width": round(w, 6),
                "resolution_multiplier": round(r, 6),
            }
            records = [
                TrialRecord.of(standing[seed_key(key, s)], always=RECORDED[:1], present=RECORDED[1:]) for s in seeds
            ]
            row = point_row(records, lead, number=None)
            if key not in activations:  # elements written per image, a cost besides multiply-adds (profile)
                spec = scale_at_proxy(base, proxy, depth=d, width=w, resolution=r)
                activations[key] = profile(spec, num_classes=row.get("num_classes") or 10).activations
            row["activations"] = activations[key]
            rows.append(row)
        curves[family] = rows
    not_learned = _flag_learning(curves)
    csv_file = plot_file = None
    if csv_path is not None:
        csv_file = str(write_csv(curves, Path(csv_path) if csv_path else output / "scaling_study.csv"))
    if plot is not None:
        from effnet.plots import plot_study

        path = Path(plot) if plot else output / "scaling_study.png"
        title = (
            f"scaling {base.name}: one dimension vs compound (α={sweeps.alpha:g}, β={sweeps.beta:g}, "
            f"γ={sweeps.gamma:g}), {proxy.seeds} seed(s) per point"
        )
        plot_file = str(plot_study(curves, path, title=title, x=cost_field(compare_by)))
    return StudyResult(
        curves=curves,
        comparison=compare_curves(curves, compare_by),
        study=study_name,
        storage=study_url(study),
        base=base.name,
        proxy=proxy.settings(),
        coefficients={"alpha": sweeps.alpha, "beta": sweeps.beta, "gamma": sweeps.gamma},
        points=len(points),
        seeds=proxy.seeds,
        budget=proxy.describe_budget(),
        compare_by=compare_by,
        not_learned=not_learned,
        csv=csv_file,
        plot=plot_file,
    )


def _flag_learning(curves: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Mark every finished row ``learned`` (mean accuracy at or above :func:`learning_threshold`);
    returns the points that did not learn (``family=value``)."""
    missed = []
    for rows in curves.values():
        for row in rows:
            if row.get("accuracy") is None or not row.get("num_classes"):
                continue
            row["learned"] = row["accuracy"] >= learning_threshold(row["num_classes"])
            name = "base" if row["family"] == "base" else f"{row['family']}={row['value']:g}"
            if not row["learned"] and name not in missed:
                missed.append(name)
    return missed


def write_csv(curves: dict[str, Sequence[dict[str, Any]]], path: Path) -> Path:
    """One row per (curve, point); the baseline appears at the start of every curve."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for family, rows in curves.items():
        for row in rows:
            accuracies = ";".join("" if a is None else f"{a:.6g}" for a in row.get("accuracies") or ())
            writer.writerow({**row, "family": family, "accuracies": accuracies})
    return atomic_write_text(path, buffer.getvalue(), mkdir=True)
