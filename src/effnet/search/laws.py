"""Fitted scaling laws: each curve of a study as a saturating law of error against cost, its
prediction at a larger cost with an interval, and the check of that prediction on a held-out point.

Per curve (width, depth, resolution, compound; the baseline starts every curve) the law is
err(C) = e∞ + k·(C/C₀)^(−a), C₀ the baseline's cost (for conditioning: k is the gain over e∞ at the
baseline), fitted by weighted least squares (SciPy) over every seed's accuracy, each point weighted by
its seed spread. Intervals are 95% percentiles of a bootstrap over seeds: each point's seed accuracies
are resampled with replacement and every curve refitted (:func:`resample_seeds`). Every verdict uses
the one rule of :func:`effnet.search.stats.decide`: a difference whose 95% interval contains 0 is a tie.
The input is the CSV ``study-scaling`` writes (:func:`read_study`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effnet.errors import UserError, check_number, check_whole_number, read_bounded
from effnet.results import Result
from effnet.search.stats import from_interval, percentile_interval
from effnet.search.study import COMPARE_BY as COSTS  # each cost's row field, as the study compares curves at
from effnet.search.study import COST_WORDS, CSV_COLUMNS
from effnet.search.study import FAMILIES as CURVES

#: The CSV a study writes in its run folder.
STUDY_CSV = "scaling_study.csv"
#: Larger study CSVs are refused before they are read (a study holds at most a few hundred rows).
MAX_CSV_BYTES = 10_000_000
#: The columns a study CSV must have for a fit.
REQUIRED = ("family", "value", "accuracies")
#: Columns read as numbers (empty: None): every column of the study's CSV but these.
_NUMBERS = tuple(c for c in CSV_COLUMNS if c not in ("family", "accuracies", "learned", "state"))
_WHOLE = ("resolution", "params", "macs", "activations", "seeds", "num_classes")


def _number(name: str, text: str, line: int) -> float | int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"study CSV line {line}: {name} {text!r} is not a number", field="source") from None
    if name in _WHOLE and math.isfinite(value) and value == int(value):
        return int(value)
    return value


def _accuracies(text: str, line: int) -> list[float]:
    """';'-joined seed accuracies; an empty entry (a seed with no accuracy) reads as NaN."""
    out = []
    for part in text.split(";") if text.strip() else []:
        part = part.strip()
        try:
            out.append(float(part) if part else math.nan)
        except ValueError:
            raise UserError(f"study CSV line {line}: accuracy {part!r} is not a number", field="source") from None
    return out


def read_study(source: str | Path) -> list[dict[str, Any]]:
    """The rows of a study's CSV (a run folder holding ``scaling_study.csv``, or the CSV itself) in
    file order: numbers parsed (empty cells None), ``accuracies`` a list of floats (NaN for a seed
    without one), ``learned`` a bool or None, ``family`` the curve the row belongs to, as written
    (the baseline appears once per curve). Old CSVs without ``num_classes`` or ``activations`` read
    with those None. A UserError naming ``source`` for anything that is not such a CSV."""
    path = Path(source)
    if path.is_dir():
        path = path / STUDY_CSV
        if not path.exists():
            raise UserError(f"source {source} holds no {STUDY_CSV}: is it a study-scaling run folder?", field="source")
    data = read_bounded(path, MAX_CSV_BYTES, "study CSV", field="source")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"source {path} is not a text CSV (not UTF-8)", field="source") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
    if missing:
        raise UserError(
            f"source {path} is not a study CSV: it lacks the column(s) {', '.join(missing)}", field="source"
        )
    rows = []
    for line, raw in enumerate(reader, start=2):
        if None in raw:
            raise UserError(f"study CSV line {line} has more cells than the header", field="source")
        family = (raw.get("family") or "").strip()
        if family not in CURVES:
            raise UserError(
                f"study CSV line {line}: family {family!r} is unknown (known: {', '.join(CURVES)})", field="source"
            )
        row: dict[str, Any] = {"family": family}
        for name in _NUMBERS:
            row[name] = _number(name, raw[name] or "", line) if name in raw else None
        if row["value"] is None or not math.isfinite(row["value"]):
            raise UserError(f"study CSV line {line}: value is missing", field="source")
        row["accuracies"] = _accuracies(raw.get("accuracies") or "", line)
        learned = (raw.get("learned") or "").strip()
        row["learned"] = {"True": True, "False": False}.get(learned)
        row["state"] = (raw.get("state") or "").strip() or None
        rows.append(row)
    if not rows:
        raise UserError(f"source {path} holds no rows", field="source")
    return rows


def is_base(row: dict[str, Any]) -> bool:
    """Whether ``row`` is the baseline (every multiplier 1; by its curve's value where the CSV lacks them)."""
    multipliers = [row.get(k) for k in ("depth", "width", "resolution_multiplier")]
    if all(m is not None for m in multipliers):
        return all(math.isclose(m, 1.0, rel_tol=1e-6) for m in multipliers)
    return row["value"] == (0.0 if row["family"] == "compound" else 1.0)


def point_key(row: dict[str, Any]) -> tuple:
    """One trained point, whichever curves list it: the baseline is one point in every curve."""
    if is_base(row):
        return ("base",)
    return (row["family"], row["value"])


def resample_seeds(rows: Sequence[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """The bootstrap unit: ``rows`` copied, each point's seed accuracies drawn with replacement from
    its own (as many as it has) and ``accuracy`` their mean. A point listed in several curves (the
    baseline) gets the same draw in each, as it was trained once."""
    drawn: dict[tuple, list[float]] = {}
    out = []
    for row in rows:
        key = point_key(row)
        if key not in drawn:
            values = row["accuracies"]
            drawn[key] = [values[i] for i in rng.integers(0, len(values), len(values))] if values else []
        values = drawn[key]
        out.append({**row, "accuracies": values, "accuracy": float(np.mean(values)) if values else None})
    return out


def widen(values: Sequence[float], drawn: Sequence[float]) -> np.ndarray:
    """A point's ``drawn`` seeds (one bootstrap draw of its ``values``) moved away from the values' mean by
    √(n/(n−1)): the mean of n values drawn from n has (n−1)/n of the sampling variance, too little at the
    few seeds a study trains (the usual small-sample correction). Linear, so accuracies or errors alike."""
    values, drawn = np.asarray(values, dtype=float), np.asarray(drawn, dtype=float)
    n = len(values)
    return values.mean() + (drawn - values.mean()) * math.sqrt(n / (n - 1)) if n > 1 else drawn


#: How many seeds' worth of the pooled variance each point's own variance is shrunk toward: a variance
#: from a few seeds is itself noisy (from 8 seeds, ±50%), and weights 1/s² from it would let the points
#: whose seeds happened to agree take the fit.
PRIOR_SEEDS = 8.0


def shrunk_sigmas(seeds: Sequence[Sequence[float]], prior: float = PRIOR_SEEDS) -> np.ndarray:
    """Each point's seed standard deviation for a fit's weights: its own sample variance shrunk toward the
    variance pooled over all ``seeds`` (one sequence per point) by ``prior`` seeds' worth
    (σᵢ² = ((nᵢ−1)·sᵢ² + ν₀·s²)/(nᵢ−1+ν₀)); a point with one seed, or whose seeds agree exactly, gets
    (mostly) the pooled spread."""
    dof = np.array([len(a) - 1 for a in seeds], dtype=float)
    own = np.array([np.var(a, ddof=1) if len(a) > 1 else 0.0 for a in seeds])
    pooled = float(np.sum(dof * own) / np.sum(dof))
    return np.sqrt((dof * own + prior * pooled) / (dof + prior))


# -- the fit ----------------------------------------------------------------------------------------
#: The exponent's bounds: a > 0 makes error fall with cost; past A_MAX the law is a step, not a
#: power law (published scaling exponents are well below 1).
A_MAX = 4.0
#: Bootstrap resamples by default, and the seed of their fixed random generator.
RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: A target beyond this many times a curve's largest measured cost is flagged: the law is then
#: trusted far outside the data that fixed it.
FAR = 10.0
#: Where an estimate is said to sit at a bound (relative to the bound's scale).
_AT_BOUND = 1e-3
PARAMETERS = ("e_inf", "k", "a")


def law(x: np.ndarray, e_inf: float, k: float, a: float) -> np.ndarray:
    """err(x) = e∞ + k·x^(−a), x the cost over the baseline's."""
    return e_inf + k * np.power(x, -a)


def check_cost(cost: str) -> str:
    """The row field of ``cost`` (macs, params, activations, time); a UserError naming cost else."""
    if cost not in COSTS:
        raise UserError(f"cost {cost!r} is unknown (known: {', '.join(COSTS)})", field="cost")
    return COSTS[cost]


def _name(row: dict[str, Any]) -> str:
    return "base" if is_base(row) else f"{row['family']}={row['value']:g}"


def _finished(row: dict[str, Any]) -> bool:
    """A row of a point still training (state other than COMPLETE) is left out, not refused."""
    return row.get("state") in (None, "COMPLETE")


@dataclass
class Curve:
    """One curve's data for the fit: each point's cost over the baseline's, its seed errors, and the
    standard deviation its observations are weighted by (:func:`_sigmas`)."""

    family: str
    x: np.ndarray
    errors: list[np.ndarray]
    sigma: np.ndarray
    base_cost: float
    names: list[str]
    left_out: list[str]

    def observations(self, errors: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every seed's (x, error, σ) flattened."""
        errors = self.errors if errors is None else errors
        xs = np.concatenate([np.full(len(e), x) for x, e in zip(self.x, errors)])
        sig = np.concatenate([np.full(len(e), s) for s, e in zip(self.sigma, errors)])
        return xs, np.concatenate(errors), sig

    def seed_errors(self, rows: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        """The seed errors of this curve's points in ``rows`` (a bootstrap resample of the study), each
        widened by the small-sample correction (:func:`widen`)."""
        by_name = {_name(r): r for r in rows if r["family"] == self.family}
        return [
            widen(own, 1.0 - np.asarray(by_name[name]["accuracies"], dtype=float))
            for name, own in zip(self.names, self.errors)
        ]

    def without_last(self) -> Curve:
        """The curve less its largest-cost point (the holdout fit)."""
        last = int(np.argmax(self.x))
        keep = [i for i in range(len(self.x)) if i != last]
        return Curve(
            self.family,
            self.x[keep],
            [self.errors[i] for i in keep],
            self.sigma[keep],
            self.base_cost,
            [self.names[i] for i in keep],
            self.left_out,
        )


#: The smallest seed standard deviation a point is weighted with (0.1 point).
MIN_SIGMA = 1e-3


def _sigmas(accuracies: Sequence[Sequence[float]]) -> np.ndarray:
    """Each point's weight scale on a curve: :func:`shrunk_sigmas`, at least :data:`MIN_SIGMA`."""
    return np.maximum(shrunk_sigmas(accuracies), MIN_SIGMA)


def learned(row: dict[str, Any]) -> bool:
    """Whether a point learned: its mean accuracy at or above the learning threshold (3× chance,
    :func:`~effnet.search.stats.learning_threshold`) where the row knows its number of classes, else the CSV's
    ``learned`` column. A point that did not learn measures training that failed, not capacity: the fits
    leave it out."""
    from effnet.search.stats import learning_threshold

    if row.get("num_classes"):
        return float(np.mean(row["accuracies"])) >= learning_threshold(row["num_classes"])
    return row.get("learned") is not False


def prepare_curve(rows: Sequence[dict[str, Any]], family: str, cost: str = "macs") -> Curve:
    """The curve ``family`` of a study's rows ready to fit, or a UserError (field ``curve``) saying
    in one line why no law can mean anything on it: a cost missing, a missing (NaN) accuracy, one seed
    everywhere, every point below the learning threshold, fewer than three distinct costs. Points below
    the learning threshold (3× chance, :func:`~effnet.search.stats.learning_threshold`, where the CSV
    has ``num_classes``; else its ``learned`` column) are left out: their accuracy measures training
    that failed, not capacity."""
    fieldname = check_cost(cost)
    curve = [r for r in rows if r["family"] == family and _finished(r)]
    if not curve:
        raise UserError(f"curve {family}: the study has no finished point on it", field="curve")
    if fieldname == "activations" and all(r.get("activations") is None for r in curve):
        raise UserError(
            "cost activations: this study's CSV has no activations column (written before they were counted); "
            "rerun study-scaling to add it, or use --cost macs",
            field="cost",
        )
    base = next((r for r in curve if is_base(r)), None)
    if base is None:
        raise UserError(f"curve {family}: no baseline row (every curve starts with it)", field="curve")
    for r in curve:
        if not r.get(fieldname) or not math.isfinite(r[fieldname]) or r[fieldname] <= 0:
            raise UserError(f"curve {family}: point {_name(r)} has no {COST_WORDS[cost]}", field="curve")
        if not r["accuracies"] or any(not math.isfinite(a) for a in r["accuracies"]):
            raise UserError(
                f"curve {family}: point {_name(r)} has a missing (NaN) accuracy; a fit needs every seed's",
                field="curve",
            )
    if all(len(r["accuracies"]) < 2 for r in curve):
        raise UserError(
            f"curve {family}: one seed per point, so no spread to weight or bootstrap; rerun the study with --seeds 3",
            field="curve",
        )
    kept = [r for r in curve if learned(r)]
    left_out = [_name(r) for r in curve if not learned(r)]
    if not kept:
        raise UserError(
            f"curve {family}: every point is below the learning threshold (3× chance): nothing to fit",
            field="curve",
        )
    distinct = len({round(r[fieldname] / base[fieldname], 9) for r in kept})
    if distinct < 3:
        raise UserError(
            f"curve {family}: {distinct} distinct {COST_WORDS[cost]} among its learned points; "
            "a law of 3 parameters needs at least 3",
            field="curve",
        )
    kept.sort(key=lambda r: r[fieldname])
    if all(len(set(r["accuracies"])) < 2 for r in kept):
        raise UserError(
            f"curve {family}: the seeds of every point agree exactly: no spread to bootstrap", field="curve"
        )
    return Curve(
        family=family,
        x=np.array([r[fieldname] / base[fieldname] for r in kept]),
        errors=[1.0 - np.asarray(r["accuracies"], dtype=float) for r in kept],
        sigma=_sigmas([r["accuracies"] for r in kept]),
        base_cost=float(base[fieldname]),
        names=[_name(r) for r in kept],
        left_out=left_out,
    )


def _bounds(num_classes: int | None) -> tuple[list[float], list[float]]:
    """e∞ within [0, 1 − 1/classes] (an error floor worse than guessing means nothing; 1 where the
    classes are unknown), k ≥ 0 and 0 < a ≤ :data:`A_MAX` (error falls with cost)."""
    top = 1.0 - 1.0 / num_classes if num_classes else 1.0
    return [0.0, 0.0, 1e-6], [top, np.inf, A_MAX]


def _solve(
    curve: Curve, errors: Sequence[np.ndarray], bounds: tuple, starts: Sequence[np.ndarray]
) -> np.ndarray | None:
    """The weighted least-squares parameters from the best of ``starts`` (None when none converges)."""
    from scipy.optimize import least_squares

    x, y, sigma = curve.observations(errors)
    best = None
    for start in starts:
        start = np.clip(start, np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)

        def residuals(p: np.ndarray) -> np.ndarray:
            return (law(x, *p) - y) / sigma

        def jacobian(p: np.ndarray) -> np.ndarray:
            power = np.power(x, -p[2])
            return np.stack([np.ones_like(x), power, -p[1] * power * np.log(x)], axis=1) / sigma[:, None]

        try:
            found = least_squares(residuals, start, jac=jacobian, bounds=bounds, method="trf", x_scale="jac")
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(found.x)) and (best is None or found.cost < best.cost):
            best = found
    return None if best is None else best.x


def _starts(curve: Curve, bounds: tuple) -> list[np.ndarray]:
    """Starting points: for a few exponents, e∞ and k from the weighted linear fit at that exponent."""
    means = np.array([e.mean() for e in curve.errors])
    w = 1.0 / curve.sigma**2
    out = []
    for a in (0.1, 0.3, 1.0, 3.0):
        design = np.stack([np.ones_like(curve.x), np.power(curve.x, -a)], axis=1)
        coef, *_ = np.linalg.lstsq(design * np.sqrt(w)[:, None], means * np.sqrt(w), rcond=None)
        e, k = float(np.clip(coef[0], 0.0, bounds[1][0])), max(float(coef[1]), 1e-3)
        out.append(np.array([e, k, a]))
    return out


def _degenerate(p: np.ndarray | None, bounds: tuple) -> str | None:
    """Why the fitted parameters mean nothing, or None."""
    if p is None or not np.all(np.isfinite(p)):
        return "the fit did not converge to finite parameters"
    e_inf, k, a = p
    if k <= 1e-6:
        return "the fit gives error independent of cost (k = 0): accuracy does not rise with cost on it"
    if a <= 1e-4:
        return "the fit's exponent a is 0: accuracy does not rise with cost on it"
    if a >= A_MAX * (1 - _AT_BOUND):
        return f"the fit's exponent a sits at its bound {A_MAX:g}: a step, not a power law"
    if bounds[1][0] < 1.0 and e_inf >= bounds[1][0] * (1 - _AT_BOUND):
        return "the fit's error floor e∞ sits at chance: the curve does not say where it saturates"
    return None


@dataclass(frozen=True)
class Interval(Result):
    """A point estimate and its 95% bootstrap percentile interval (None: no resample could be fitted)."""

    value: float
    low: float | None
    high: float | None

    def contains(self, x: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= x <= self.high


def _interval(value: float, draws: np.ndarray) -> Interval:
    """``value`` and the 95% percentile interval of the finite ``draws``, to 1e-7 (a bound's 1e-16 is 0)."""
    low, high = percentile_interval(draws)
    if low is None or high is None:
        return Interval(round(float(value), 7), None, None)
    return Interval(round(float(value), 7), round(low, 7), round(high, 7))


@dataclass(frozen=True)
class CurveFit(Result):
    """One curve's law: parameters with intervals (cost over the baseline's ``base_cost``), the fit's
    goodness (R² of the point means, RMSE in points), its prediction ``at`` the target and its
    ``holdout`` check; or ``refused``, the reason no law can mean anything on it."""

    family: str
    params: dict[str, Interval] | None = None
    fit: dict[str, Any] | None = None
    base_cost: float | None = None
    max_cost: float | None = None
    at: dict[str, Any] | None = None
    holdout: dict[str, Any] | None = None
    refused: str | None = None


@dataclass(frozen=True)
class FitReport(Result):
    """Every curve's fit (under its family's name in :meth:`to_dict`), the target, the verdicts at it
    (compound against each other curve), warnings, and the drawing data of the figure (not in
    :meth:`to_dict`)."""

    source: str
    cost: str
    resamples: int
    curves: dict[str, CurveFit]
    target: dict[str, Any] | None = None
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    plot: str | None = None
    #: The joint model's α, β, γ at the target φ (:func:`effnet.search.joint.choose_at_phi`, added by the CLI).
    choice: dict[str, Any] | None = None
    drawing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "cost": self.cost, "resamples": self.resamples}
        for family, curve in self.curves.items():
            if curve.refused:
                out[family] = {"refused": curve.refused}
            else:
                out[family] = {
                    "params": {k: v.to_dict() for k, v in (curve.params or {}).items()},
                    "fit": curve.fit,
                    "base_cost": curve.base_cost,
                    "max_cost": curve.max_cost,
                    "at": curve.at,
                    "holdout": curve.holdout,
                }
        out.update(target=self.target, verdicts=self.verdicts, warnings=self.warnings, plot=self.plot)
        if self.choice is not None:
            out["choice"] = self.choice
        return out


def phi_cost(rows: Sequence[dict[str, Any]], phi: float, cost: str = "macs") -> float:
    """The compound point's cost at ``phi``, from the study's compound rows: log cost is linear in φ
    (the cost of α^φ, β^φ, γ^φ grows as (α·β²·γ²)^φ for multiply-adds; as a power of φ's base for the
    others too, up to rounding), fitted by least squares over the rows and extrapolated. A UserError
    naming at_phi when the study has fewer than two compound φ."""
    from effnet.scale.compound import MAX_PHI, MIN_PHI

    check_number("at_phi", phi, low=MIN_PHI, high=MAX_PHI)
    fieldname = check_cost(cost)
    known = {(r["value"], r[fieldname]) for r in rows if r["family"] == "compound" and r.get(fieldname)}
    phis = np.array([p for p, _ in known], dtype=float)
    if len(set(phis)) < 2:
        raise UserError("at_phi needs a study with at least two compound φ to place φ on the cost axis", field="at_phi")
    slope, intercept = np.polyfit(phis, np.log([c for _, c in known]), 1)
    return float(math.exp(intercept + slope * phi))


def _goodness(curve: Curve, p: np.ndarray) -> dict[str, Any]:
    means = np.array([1.0 - e.mean() for e in curve.errors])
    predicted = 1.0 - law(curve.x, *p)
    residual = float(np.sum((means - predicted) ** 2))
    total = float(np.sum((means - means.mean()) ** 2))
    return {
        "r2": round(1.0 - residual / total, 4) if total > 0 else None,
        "rmse": round(100 * math.sqrt(residual / len(means)), 3),
        "points": len(means),
        "seeds": int(sum(len(e) for e in curve.errors)),
        "left_out": curve.left_out,
    }


def fit_study(
    rows: Sequence[dict[str, Any]],
    *,
    cost: str = "macs",
    at_cost: float | None = None,
    at_phi: float | None = None,
    holdout: bool = False,
    curves: Sequence[str] | None = None,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    source: str = "",
    progress: bool = False,
) -> FitReport:
    """Fit each curve of a study (``rows`` from :func:`read_study`), predict at ``at_cost`` (in the
    unit of ``cost``) or at compound ``at_phi`` (:func:`phi_cost`), and with ``holdout`` check each
    curve's prediction of its own largest-cost point from the others.

    A curve that cannot be fitted is reported with its reason; a UserError only when none can, or
    when one named in ``curves`` cannot. Intervals are 95% bootstrap percentiles over ``resamples``
    resamples of the seeds (:func:`resample_seeds`, numpy's generator seeded with ``seed``)."""
    fieldname = check_cost(cost)
    check_whole_number("resamples", resamples, 20, high=100_000)
    if at_cost is not None and at_phi is not None:
        raise UserError("give at most one target: at_cost (at_macs) or at_phi", field="at_phi")
    present = [c for c in CURVES if any(r["family"] == c for r in rows)]
    for name in curves or ():
        if name not in present:
            raise UserError(f"curves: the study has no {name} curve (it has {', '.join(present)})", field="curves")
    target = None
    if at_cost is not None:
        target = {"cost": check_number("at_cost", at_cost, low=0, strict_low=True), "phi": None}
    elif at_phi is not None:
        target = {"cost": phi_cost(rows, at_phi, cost), "phi": float(at_phi), "how": "log cost linear in φ"}
    num_classes = next((int(r["num_classes"]) for r in rows if r.get("num_classes")), None)
    bounds = _bounds(num_classes)
    fitted, refused = _fit_curves(rows, list(curves) if curves else present, cost, bounds, strict=bool(curves))
    if not fitted:
        raise UserError(_none_fitted(refused), field="source")
    held, held_refused = {}, {}
    if holdout:
        held, held_refused = _fit_curves(rows, list(fitted), cost, bounds, strict=False, hold=fitted)
    draws, held_draws, held_measured = _bootstrap(rows, fitted, held, bounds, resamples, seed, progress)
    warnings: list[str] = []
    fits: dict[str, CurveFit] = {}
    predictions: dict[str, np.ndarray] = {}
    for family in list(curves) if curves else present:
        if family in refused:
            fits[family] = CurveFit(family, refused=refused[family])
            continue
        (curve, p), d = fitted[family], draws[family]
        good = _goodness(curve, p)
        good["resamples"] = int(np.isfinite(d[:, 0]).sum())
        max_cost = float(curve.x.max() * curve.base_cost)
        at = None
        if target:
            x = target["cost"] / curve.base_cost
            predictions[family] = predicted_draws(x, d)
            estimate = _interval(1.0 - law(x, *p), predictions[family])
            beyond = target["cost"] / max_cost
            at = {"cost": target["cost"], "predicted": estimate.value, "low": estimate.low, "high": estimate.high,
                  "beyond": beyond}  # fmt: skip
            if beyond > FAR:
                warnings.append(
                    f"{family}: the target is {beyond:.3g}× the curve's largest measured {COST_WORDS[cost]} "
                    f"(past {FAR:g}×): the law is trusted far beyond its data"
                )
        check = None
        if holdout:
            check = _holdout(curve, family, held.get(family), held_draws.get(family), held_measured.get(family),
                             held_refused.get(family))  # fmt: skip
        fits[family] = CurveFit(
            family,
            params={name: _interval(p[i], d[:, i]) for i, name in enumerate(PARAMETERS)},
            fit=good,
            base_cost=curve.base_cost,
            max_cost=max_cost,
            at=at,
            holdout=check,
        )
    return FitReport(
        source=source,
        cost=cost,
        resamples=resamples,
        curves=fits,
        target=target,
        verdicts=_verdicts(predictions, fits, target, cost) if target else {},
        warnings=warnings,
        drawing=_drawing(rows, fitted, draws, fieldname, target),
    )


def _fit_curves(
    rows: Sequence[dict[str, Any]],
    families: Sequence[str],
    cost: str,
    bounds: tuple,
    *,
    strict: bool,
    hold: dict[str, tuple[Curve, np.ndarray]] | None = None,
) -> tuple[dict[str, tuple[Curve, np.ndarray]], dict[str, str]]:
    """Each curve's data and fitted parameters, and the reason of each curve that cannot be fitted
    (``strict``: a UserError instead). With ``hold`` (the full fits), each curve less its largest-cost
    point, for the holdout."""
    fitted: dict[str, tuple[Curve, np.ndarray]] = {}
    refused: dict[str, str] = {}
    for family in families:
        try:
            curve = prepare_curve(rows, family, cost) if hold is None else hold[family][0]
        except UserError as err:
            if err.field == "cost" or strict:
                raise
            refused[family] = str(err)
            continue
        if hold is not None:
            if len(set(np.round(curve.x, 9))) < 4:
                refused[family] = "fewer than 4 distinct costs: the fit without the largest would have under 3"
                continue
            curve = curve.without_last()
        p = _solve(curve, curve.errors, bounds, _starts(curve, bounds))
        why = _degenerate(p, bounds)
        if why:
            if strict:
                raise UserError(f"curve {family}: {why}", field="curve")
            refused[family] = why if hold is not None else f"curve {family}: {why}"
            continue
        fitted[family] = (curve, p)  # type: ignore[assignment]
    return fitted, refused


def _bootstrap(
    rows: Sequence[dict[str, Any]],
    fitted: dict[str, tuple[Curve, np.ndarray]],
    held: dict[str, tuple[Curve, np.ndarray]],
    bounds: tuple,
    resamples: int,
    seed: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each curve's parameters refitted on every resample of the seeds (from its full fit), the
    holdout fits' too, and each held-out point's resampled mean accuracy: NaN where a fit failed."""
    from effnet.progress import progress_bar

    rng = np.random.default_rng(seed)
    draws = {f: np.full((resamples, 3), np.nan) for f in fitted}
    held_draws = {f: np.full((resamples, 3), np.nan) for f in held}
    held_measured = {f: np.full(resamples, np.nan) for f in held}
    with progress_bar(resamples, desc="bootstrap", unit="resample", enabled=progress, leave=False) as bar:
        for b in range(resamples):
            resampled = resample_seeds(rows, rng)
            for family, (curve, p) in fitted.items():
                errors = curve.seed_errors(resampled)
                found = _solve(curve, errors, bounds, [p])
                if found is not None:
                    draws[family][b] = found
                if family in held:
                    curve_held, p_held = held[family]
                    found = _solve(curve_held, curve_held.seed_errors(resampled), bounds, [p_held])
                    if found is not None:
                        held_draws[family][b] = found
                    held_measured[family][b] = 1.0 - float(np.mean(errors[int(np.argmax(curve.x))]))
            bar.update()
    return draws, held_draws, held_measured


def _none_fitted(refused: dict[str, str]) -> str:
    """One line for every curve refused: the curves that share a reason named once before it."""
    reasons: dict[str, list[str]] = {}
    for family, text in refused.items():
        reasons.setdefault(text.removeprefix(f"curve {family}: "), []).append(family)
    return "no curve can be fitted: " + "; ".join(f"{', '.join(f)}: {why}" for why, f in reasons.items())


def _holdout(
    curve: Curve,
    family: str,
    held: tuple[Curve, np.ndarray] | None,
    draws: np.ndarray | None,
    measured_draws: np.ndarray | None,
    refused: str | None,
) -> dict[str, Any]:
    """The prediction of the curve's largest-cost point from the fit without it (``held``, its
    bootstrap ``draws``), against its measurement (mean and t-interval over its seeds). ``inside``: the
    measured mean lies within the prediction's 95% interval. ``agrees``: the one rule of every verdict on
    predicted − measured, the bootstrap difference (each resample refits the others and redraws the
    point's seeds, ``measured_draws``) whose 95% interval contains 0; it counts the measurement's own
    noise, which ``inside`` does not."""
    from effnet.search.stats import estimate

    last = int(np.argmax(curve.x))
    name = curve.names[last]
    if held is None or draws is None or measured_draws is None:
        return {"point": name, "refused": refused or "no fit"}
    x = curve.x[last]
    predicted = _interval(1.0 - law(x, *held[1]), predicted_draws(x, draws))
    measured = estimate(1.0 - curve.errors[last])
    assert measured is not None
    gap = _interval(predicted.value - measured.mean, predicted_draws(x, draws) - measured_draws)
    return {
        "point": name,
        "cost": float(x * curve.base_cost),
        "predicted": predicted.to_dict(),
        "measured": {"value": measured.mean, "low": measured.low, "high": measured.high},
        "inside": bool(predicted.contains(measured.mean)),
        "difference": gap.to_dict(),
        "agrees": bool(gap.contains(0.0)),
    }


def predicted_draws(x: float | np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Accuracy at ``x`` (cost over the baseline's) under each resample's parameters (rows of ``draws``)."""
    return 1.0 - law(x, draws[:, 0], draws[:, 1], draws[:, 2])


def _verdicts(
    predictions: dict[str, np.ndarray], fits: dict[str, CurveFit], target: dict[str, Any], cost: str
) -> dict[str, dict[str, Any]]:
    """Compound against each other curve at the target, by :func:`effnet.search.stats.decide` on the
    bootstrap difference of their predictions (paired: one resample of the study feeds both): its
    95% percentile interval containing 0 is a tie."""
    from effnet.search.stats import decide, judge

    out: dict[str, dict[str, Any]] = {}
    if "compound" not in fits:
        return out
    where = _where(target, cost)
    for family in ("width", "depth", "resolution"):
        if family not in fits:
            continue
        if family not in predictions or "compound" not in predictions:
            missing = family if family not in predictions else "compound"
            out[family] = {"verdict": "unknown", "text": f"no verdict: the {missing} curve could not be fitted"}
            continue
        diff = predictions["compound"] - predictions[family]
        diff = diff[np.isfinite(diff)]
        if not len(diff):
            out[family] = {"verdict": "unknown", "text": "no verdict: no bootstrap resample fitted both curves"}
            continue
        value = fits["compound"].at["predicted"] - fits[family].at["predicted"]  # type: ignore[index]
        low, high = percentile_interval(diff)
        centred = from_interval(low, high, n=len(diff), std=float(np.std(diff)))  # type: ignore[arg-type]
        out[family] = {
            "difference": {"value": value, "low": low, "high": high},
            "verdict": decide(centred),
            "text": judge(centred, "compound", family, where),
        }
    return out


def _where(target: dict[str, Any], cost: str) -> str:
    phi = f"φ = {target['phi']:g}, " if target.get("phi") is not None else ""
    return f"at {phi}{target['cost']:.4g} {COST_WORDS[cost]} (predicted)"


def _drawing(
    rows: Sequence[dict[str, Any]],
    fitted: dict[str, tuple[Curve, np.ndarray]],
    draws: dict[str, np.ndarray],
    fieldname: str,
    target: dict[str, Any] | None,
) -> dict[str, Any]:
    """What :func:`effnet.plots.plot_fit` draws: each curve's measured points (mean accuracy and seed
    95% interval; ``fitted`` false for those left out), and for each fitted curve its law and bootstrap
    band over a log grid reaching the target; the target."""
    from effnet.search.stats import estimate

    out: dict[str, Any] = {"target": target["cost"] if target else None, "curves": {}}
    for family in CURVES:
        curve, p = fitted.get(family, (None, None))
        shown = []
        for r in rows:
            if r["family"] != family or not r.get(fieldname) or not r["accuracies"]:
                continue
            e = estimate(a for a in r["accuracies"] if math.isfinite(a))
            if e is not None:
                used = curve is not None and _name(r) in curve.names
                shown.append({"cost": r[fieldname], "accuracy": e.mean, "accuracy_ci95": e.ci95, "fitted": used})
        if not shown:
            continue
        out["curves"][family] = {"points": sorted(shown, key=lambda s: s["cost"])}
        if curve is None:
            continue
        top = curve.x.max() * curve.base_cost
        right = max(top, target["cost"] if target else top) * 1.05
        grid = np.geomspace(curve.x.min() * curve.base_cost, right, 80)
        x = grid / curve.base_cost
        d = draws[family][np.isfinite(draws[family][:, 0])]
        band = predicted_draws(x[None, :], d[:, :, None])
        out["curves"][family].update(
            cost=grid.tolist(),
            accuracy=(1.0 - law(x, *p)).tolist(),
            low=np.percentile(band, 2.5, axis=0).tolist(),
            high=np.percentile(band, 97.5, axis=0).tolist(),
            max_cost=float(top),
        )
    return out


def fit_scaling(
    source: str | Path,
    *,
    cost: str = "macs",
    at_cost: float | None = None,
    at_phi: float | None = None,
    holdout: bool = False,
    curves: Sequence[str] | None = None,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    plot: str | Path | None = "",
    progress: bool = False,
) -> FitReport:
    """:func:`fit_study` on a study's CSV or run folder (:func:`read_study`), the figure
    (:func:`effnet.plots.plot_fit`) written to ``plot`` ("": ``<csv stem>_fit.png`` next to the CSV,
    None: none)."""
    from dataclasses import replace

    from effnet.atomic import prepare_target

    path = Path(source)
    csv_path = path / STUDY_CSV if path.is_dir() else path
    if plot:
        prepare_target(plot, field="plot")
    rows = read_study(source)
    report = fit_study(
        rows,
        cost=cost,
        at_cost=at_cost,
        at_phi=at_phi,
        holdout=holdout,
        curves=curves,
        resamples=resamples,
        seed=seed,
        source=str(csv_path),
        progress=progress,
    )
    if plot is None:
        return report
    from effnet.plots import plot_fit

    where = Path(plot) if plot else csv_path.with_name(f"{csv_path.stem}_fit.png")
    title = f"fitted laws err = e∞ + k·C^(−a), {resamples} bootstrap resamples of the seeds"
    written = plot_fit(report.drawing, where, title=title, x=COSTS[cost])
    return replace(report, plot=str(written))
