"""A joint law of error over depth, width and resolution, and the (α, β, γ) it chooses at a target φ.

The grid search fixes α, β, γ at φ = 1; a user deploys at a larger φ. Here one law of error against
the three multipliers (d, w, r) is fitted to every point of a study (or grid), every seed's accuracy
an observation weighted by its point's seed spread (shrunk towards the pooled spread), in one of two forms:

- ``multiplicative``: err = e∞ + k·d^(−a)·w^(−b)·r^(−c). Its log is linear in log d, log w, log r, so
  on the constraint surface its best split is always a corner: all the cost in one dimension.
- ``additive``: err = e∞ + k_d·d^(−a) + k_w·w^(−b) + k_r·r^(−c). Each dimension saturates on its own
  (the paper's Observation 1), which makes a balanced split best.

The forms are compared by leave-one-point-out error (a point and all its seeds left out, the rest
refitted, the point's mean error predicted) and the lower one is used. The choice is the (α, β, γ)
with α, β, γ ≥ 1 and α·β²·γ² = target exactly that maximises the law's predicted accuracy at
(α^φ, β^φ, γ^φ), searched on a fine grid of the surface. Intervals come from a bootstrap over seeds
(:func:`effnet.search.laws.resample_seeds`, with the small-sample correction of :func:`_resample`):
the winning form refitted and the choice made again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from effnet.errors import UserError, check_number, check_whole_number
from effnet.results import Result
from effnet.scale.compound import ALPHA, BETA, GAMMA, MAX_PHI, MIN_PHI
from effnet.search import stats
from effnet.search.laws import FAR, learned, resample_seeds, shrunk_sigmas, widen
from effnet.search.stats import learning_threshold

#: The paper's constraint α·β²·γ² ≈ 2.
TARGET = 2.0
#: The paper's coefficients, shown beside every choice.
PAPER = (ALPHA, BETA, GAMMA)
#: The points must span at least this ratio of ideal cost d·w²·r²: a grid on one constraint surface
#: (α·β²·γ² ≈ 2 ± 5%) says nothing about how error falls with cost, hence nothing about another φ.
MIN_COST_SPAN = 2.0
#: Bootstrap resamples by default.
RESAMPLES = 500
#: Exponent bounds: 0 (the dimension does not help) to 10 (far steeper than any measured curve).
MAX_EXPONENT = 10.0


@dataclass(frozen=True)
class Bounds(Result):
    """A fitted number with its 95% bootstrap interval (None where the bootstrap gave none)."""

    value: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Predicted(Result):
    """A predicted accuracy (a fraction) with its 95% bootstrap interval."""

    predicted: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class FormFit(Result):
    """One functional form: its fitted parameters, in-sample and held-out RMSE of the points' mean
    accuracy (percentage points), or the reason it was not fitted (``dropped``)."""

    name: str
    formula: str
    params: dict[str, float] | None = None
    rmse: float | None = None
    heldout_rmse: float | None = None
    dropped: str | None = None


@dataclass(frozen=True)
class JointFit(Result):
    """The joint law fitted to a study: the winning form and its parameters, every form tried, the
    held-out comparison in one sentence, and the data it saw (distinct learned points, seed
    observations, the span of ideal cost d·w²·r², the largest measured ideal cost, the error at chance;
    rows not finished and points that did not learn, left out)."""

    form: str
    params: dict[str, float]
    forms: list[FormFit]
    comparison: str
    points: int
    observations: int
    cost_span: float
    max_cost: float
    max_error: float
    skipped: int = 0
    not_learned: int = 0

    def error(self, depth: Any, width: Any, resolution: Any) -> np.ndarray:
        """The law's predicted error at the multipliers (arrays broadcast)."""
        logs = np.stack(np.broadcast_arrays(np.log(depth), np.log(width), np.log(resolution)), axis=-1)
        return FORMS[self.form].error(np.array([self.params[n] for n in FORMS[self.form].names]), logs)

    def accuracy(self, depth: Any, width: Any, resolution: Any) -> np.ndarray:
        """The law's predicted accuracy (a fraction) at the multipliers."""
        return 1.0 - self.error(depth, width, resolution)


@dataclass(frozen=True)
class Candidate(Result):
    """A fixed (α, β, γ) (the paper's, the grid's φ = 1 choice) at the target φ: its predicted
    accuracy, the chosen coefficients' gain over it (a fraction; the bootstrap refits evaluated at the
    choice and at this point) and the verdict on that gain by :func:`effnet.search.stats.decide`."""

    label: str
    alpha: float
    beta: float
    gamma: float
    predicted: Predicted
    gain: Bounds
    verdict: str


@dataclass(frozen=True)
class CoefficientChoice(Result):
    """The (α, β, γ) on α·β²·γ² = ``target`` that the joint law predicts best at ``phi``, each with its
    95% bootstrap interval; the predicted accuracy there; the paper's and the grid's coefficients beside
    it; how far beyond the measured cost the target lies (``beyond``: ideal cost ratio); the fit."""

    phi: float
    target: float
    form: str
    alpha: Bounds
    beta: Bounds
    gamma: Bounds
    multipliers: dict[str, float]
    predicted: Predicted
    paper: Candidate
    grid: Candidate | None
    beyond: float
    resamples: int
    fit: JointFit
    summary: str


# -- the forms ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Form:
    name: str
    formula: str
    names: tuple[str, ...]
    #: (params, logs[..., 3]) → error
    error: Callable[[np.ndarray, np.ndarray], np.ndarray]
    #: (params, logs[n, 3]) → d error / d params, [n, P]
    jacobian: Callable[[np.ndarray, np.ndarray], np.ndarray]
    bounds: Callable[[float], tuple[np.ndarray, np.ndarray]]


def _mult_error(p: np.ndarray, logs: np.ndarray) -> np.ndarray:
    return p[0] + np.exp(p[1] - logs @ p[2:5])


def _mult_jacobian(p: np.ndarray, logs: np.ndarray) -> np.ndarray:
    g = np.exp(p[1] - logs @ p[2:5])
    return np.column_stack([np.ones_like(g), g, -logs[:, 0] * g, -logs[:, 1] * g, -logs[:, 2] * g])


def _add_error(p: np.ndarray, logs: np.ndarray) -> np.ndarray:
    return (
        p[0]
        + p[1] * np.exp(-p[2] * logs[..., 0])
        + p[3] * np.exp(-p[4] * logs[..., 1])
        + p[5] * np.exp(-p[6] * logs[..., 2])
    )


def _add_jacobian(p: np.ndarray, logs: np.ndarray) -> np.ndarray:
    columns = [np.ones(len(logs))]
    for i in range(3):
        h = np.exp(-p[2 + 2 * i] * logs[:, i])
        columns += [h, -p[1 + 2 * i] * logs[:, i] * h]
    return np.column_stack(columns)


FORMS: dict[str, _Form] = {
    "multiplicative": _Form(
        "multiplicative",
        "err = e_inf + k·d^(−a)·w^(−b)·r^(−c)",
        ("e_inf", "log_k", "a", "b", "c"),
        _mult_error,
        _mult_jacobian,
        lambda e_max: (np.array([0.0, -30.0, 0, 0, 0]), np.array([e_max, 5.0, *[MAX_EXPONENT] * 3])),
    ),
    "additive": _Form(
        "additive",
        "err = e_inf + k_d·d^(−a) + k_w·w^(−b) + k_r·r^(−c)",
        ("e_inf", "k_d", "a", "k_w", "b", "k_r", "c"),
        _add_error,
        _add_jacobian,
        lambda e_max: (np.zeros(7), np.array([e_max, *[5.0, MAX_EXPONENT] * 3])),
    ),
}


# -- the data -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Data:
    """Distinct points (their log multipliers), every seed's error as an observation, weights."""

    logs: np.ndarray  # [n, 3]
    mean: np.ndarray  # [n] mean error per point
    obs_point: np.ndarray  # [m] the point of each observation
    obs_error: np.ndarray  # [m]
    sigma: np.ndarray  # [n] each point's weight scale
    e_max: float  # the error at chance (or 1 where chance is unknown)


def _multipliers(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """(d, w, r) of a study row (depth, width, resolution_multiplier) or a grid row (alpha, beta, gamma)."""
    for keys in (("depth", "width", "resolution_multiplier"), ("alpha", "beta", "gamma")):
        values = [row.get(k) for k in keys]
        if all(v is not None for v in values):
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
                raise UserError(f"rows: multipliers {values} must be positive finite numbers", field="rows")
            return float(values[0]), float(values[1]), float(values[2])
    raise UserError(
        "rows: a row has neither depth, width, resolution_multiplier (a study) nor alpha, beta, gamma (a grid)",
        field="rows",
    )


def _label(d: float, w: float, r: float) -> str:
    return f"d={d:.4g} w={w:.4g} r={r:.4g}"


def prepare_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The finished points of ``rows`` once each (a study lists the baseline in every curve), as rows
    that :func:`effnet.search.laws.resample_seeds` draws from, and how many rows were skipped as not
    finished (a state other than COMPLETE, or no accuracy at all). A NaN or out-of-range accuracy in a
    finished point is refused."""
    merged: dict[tuple[float, float, float], dict[str, Any]] = {}
    skipped = 0
    for row in rows:
        values = [a for a in row.get("accuracies") or () if a is not None]
        if not values and row.get("accuracy") is not None:
            values = [row["accuracy"]]
        if row.get("state") not in (None, "COMPLETE") or not values:
            skipped += 1
            continue
        d, w, r = _multipliers(row)
        for a in values:
            if not isinstance(a, (int, float)) or not math.isfinite(a) or not 0 <= a <= 1:
                raise UserError(
                    f"accuracies: point {_label(d, w, r)} has accuracy {a!r}: every seed of a finished point "
                    "needs an accuracy within [0, 1]",
                    field="accuracies",
                )
        key = (round(d, 6), round(w, 6), round(r, 6))
        point = merged.setdefault(
            key,
            {
                "depth": d,
                "width": w,
                "resolution_multiplier": r,
                "accuracies": [],
                "num_classes": None,
                "learned": row.get("learned"),
                "_seen": [],
            },
        )
        if tuple(values) not in point["_seen"]:  # the same point listed again (the baseline of each curve)
            point["_seen"].append(tuple(values))
            point["accuracies"] = point["accuracies"] + [float(a) for a in values]
        point["num_classes"] = point["num_classes"] or row.get("num_classes")
    out = []
    for i, point in enumerate(merged.values()):
        point.pop("_seen")
        out.append({**point, "family": "point", "value": float(i)})  # resample_seeds keys a point by these
    return out, skipped


def _data(points: Sequence[Mapping[str, Any]], sigma: np.ndarray | None = None) -> _Data:
    logs = np.log(np.array([[p["depth"], p["width"], p["resolution_multiplier"]] for p in points]))
    errors = [1.0 - np.asarray(p["accuracies"], dtype=float) for p in points]
    classes = next((p["num_classes"] for p in points if p.get("num_classes")), None)
    e_max = 1.0 - 1.0 / classes if classes else 1.0
    if sigma is None:
        sigma = _sigma(errors)
    return _Data(
        logs=logs,
        mean=np.array([e.mean() for e in errors]),
        obs_point=np.concatenate([np.full(len(e), i) for i, e in enumerate(errors)]),
        obs_error=np.concatenate(errors),
        sigma=sigma,
        e_max=e_max,
    )


def _sigma(errors: Sequence[np.ndarray]) -> np.ndarray:
    """Each point's weight scale (:func:`~effnet.search.laws.shrunk_sigmas`): a few seeds estimate a variance
    poorly (a point whose seeds happen to agree must not dominate the fit), yet a point whose seeds truly
    scatter (one seed did not learn) still counts less. A point with one seed gets the pooled variance."""
    if not any(len(e) > 1 and e.var(ddof=1) > 0 for e in errors):
        raise UserError(
            "accuracies: no point's seeds differ (one seed, or identical accuracies): there is no spread to "
            "weight the fit or to bootstrap; train 2 or more seeds per point",
            field="accuracies",
        )
    return shrunk_sigmas(errors)


def _resample(points: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """One bootstrap draw (:func:`effnet.search.laws.resample_seeds`), each point's drawn seeds widened by
    the small-sample correction (:func:`effnet.search.laws.widen`) and kept within [0, 1]."""
    return [
        {**drawn, "accuracies": np.clip(widen(point["accuracies"], drawn["accuracies"]), 0, 1).tolist()}
        for point, drawn in zip(points, resample_seeds(points, rng), strict=True)
    ]


# -- fitting --------------------------------------------------------------------------------------
def _starts(form: _Form, data: _Data) -> list[np.ndarray]:
    low = float(data.mean.min())
    starts = []
    for fraction in (0.0, 0.5, 0.9):
        e0 = min(fraction * low, data.e_max)
        if form.name == "multiplicative":
            y = np.log(np.maximum(data.mean - e0, 1e-4))
            design = np.column_stack([np.ones(len(y)), -data.logs])
            coef = np.linalg.lstsq(design, y, rcond=None)[0]
            starts.append(np.array([e0, *coef]))
        else:
            k = max(float(data.mean.max()) - e0, 0.01) / 3
            starts += [np.array([e0, k, x, k, x, k, x]) for x in (0.5, 1.5)]
    return starts


def _fit(form: _Form, data: _Data, starts: Sequence[np.ndarray], keep: np.ndarray | None = None) -> np.ndarray | None:
    """The weighted least-squares fit of ``form`` over the observations of the points in ``keep``
    (all by default); the best of ``starts``; None when no start gives finite parameters."""
    from scipy.optimize import least_squares

    obs = np.arange(len(data.obs_error)) if keep is None else np.flatnonzero(keep[data.obs_point])
    logs, y = data.logs[data.obs_point[obs]], data.obs_error[obs]
    weight = 1.0 / data.sigma[data.obs_point[obs]]
    lower, upper = form.bounds(data.e_max)
    span = upper - lower

    def residual(p: np.ndarray) -> np.ndarray:
        return (y - form.error(p, logs)) * weight

    def jacobian(p: np.ndarray) -> np.ndarray:
        return -form.jacobian(p, logs) * weight[:, None]

    best, best_cost = None, math.inf
    for start in starts:
        x0 = np.clip(np.nan_to_num(start), lower + 1e-6 * span, upper - 1e-6 * span)
        try:
            result = least_squares(residual, x0, jac=jacobian, bounds=(lower, upper), method="trf", max_nfev=400)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.all(np.isfinite(result.x)) and result.cost < best_cost:
            best, best_cost = result.x, result.cost
    return best


def _unidentifiable(form: _Form, data: _Data) -> str | None:
    """Why ``form`` cannot be fitted to these points, or None."""
    n, p = len(data.mean), len(form.names)
    if n < p + 1:
        return f"needs at least {p + 1} distinct points ({p} parameters, one held out), has {n}"
    if form.name == "multiplicative":
        rank = np.linalg.matrix_rank(np.column_stack([np.ones(n), data.logs]), tol=1e-6)
        if rank < 4:
            return (
                f"the points do not vary depth, width and resolution independently (their log-multipliers span "
                f"{rank - 1} of 3 directions), so a, b and c cannot be told apart"
            )
    else:
        for i, name in enumerate(("depth", "width", "resolution")):
            distinct = len(np.unique(np.round(data.logs[:, i], 6)))
            if distinct < 3:
                return f"{name} takes {distinct} distinct value(s); its k and exponent need 3"
    return None


def _falls(form: _Form, params: np.ndarray) -> bool:
    """Whether the fitted error falls as the network grows (else there is no law to extrapolate)."""
    here, larger = form.error(params, np.zeros((1, 3))), form.error(params, np.full((1, 3), math.log(2.0)))
    return bool(here[0] - larger[0] > 1e-4)


def _degenerate(form: _Form, params: np.ndarray | None, data: _Data) -> str | None:
    """Why a fit means nothing: no convergence, error that does not fall, a parameter at the edge of
    what a law can be (an exponent at :data:`MAX_EXPONENT`, e∞ at chance)."""
    if params is None:
        return "the fit did not converge"
    if not _falls(form, params):
        return "its error does not fall as the network grows"
    for name, value in zip(form.names, params, strict=True):
        if name in ("a", "b", "c") and value > MAX_EXPONENT - 1e-3:
            return f"exponent {name} stuck at its bound {MAX_EXPONENT:g}: a step, not a law"
    if params[0] > data.e_max - 1e-4:
        return "e_inf stuck at chance: the law never learns"
    return None


def _points_rmse(form: _Form, params: np.ndarray, data: _Data) -> float:
    return 100 * float(np.sqrt(np.mean((form.error(params, data.logs) - data.mean) ** 2)))


def fit_joint(rows: Sequence[Mapping[str, Any]], *, forms: Sequence[str] = tuple(FORMS)) -> JointFit:
    """Fit every form in ``forms`` to all finished points of ``rows`` (study rows with depth, width,
    resolution_multiplier; or grid rows with alpha, beta, gamma), compare them by leave-one-point-out
    error and keep the lower. A form whose parameters the points cannot identify is dropped with its
    reason; a UserError naming ``rows`` or ``accuracies`` when nothing can be fitted."""
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise UserError(f"forms: {unknown or 'none'} (known: {', '.join(FORMS)})", field="forms")
    points, skipped, not_learned = _usable(rows)
    return _fit_points(points, skipped, not_learned, forms)


def _cost_span(points: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """The ratio of the largest to the smallest ideal cost d·w²·r² among ``points``, and the largest;
    a UserError naming ``rows`` under :data:`MIN_COST_SPAN`."""
    cost = np.array([p["depth"] * p["width"] ** 2 * p["resolution_multiplier"] ** 2 for p in points])
    span = float(cost.max() / cost.min())
    if span < MIN_COST_SPAN:
        raise UserError(
            f"rows: the points span ×{span:.3g} of ideal cost d·w²·r² (all on one constraint surface, as a grid at "
            f"φ = 1 is), under the ×{MIN_COST_SPAN:g} needed: how error falls with cost, hence any prediction at "
            "another φ, is not identifiable; fit a study instead (study-scaling, then fit-scaling --at-phi)",
            field="rows",
        )
    return span, float(cost.max())


def _usable(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """The points a law is fitted to: finished (:func:`prepare_rows`) and learned
    (:func:`effnet.search.laws.learned`, as the per-curve fits); also how many rows were not finished and how
    many points did not learn."""
    points, skipped = prepare_rows(rows)
    if not points:
        raise UserError("rows: no finished point to fit", field="rows")
    _cost_span(points)  # a grid's design refused whatever its points learned
    kept = [p for p in points if learned(p)]
    if not kept:
        classes = next((p["num_classes"] for p in points if p.get("num_classes")), None)
        threshold = learning_threshold(classes) if classes else None
        below = (
            f"{stats.points(threshold)}%, {classes} classes" if threshold is not None else "the CSV's learned column"
        )
        raise UserError(
            f"accuracies: every point is below the learning threshold ({below}): nothing learned, no law to fit; "
            "train longer",
            field="accuracies",
        )
    return kept, skipped, len(points) - len(kept)


def _fit_points(points: list[dict[str, Any]], skipped: int, not_learned: int, forms: Sequence[str]) -> JointFit:
    span, max_cost = _cost_span(points)
    data = _data(points)
    fits: list[FormFit] = []
    fitted: dict[str, tuple[np.ndarray, float]] = {}
    for name in forms:
        form = FORMS[name]
        reason = _unidentifiable(form, data)
        params = None if reason else _fit(form, data, _starts(form, data))
        if reason is None:
            reason = _degenerate(form, params, data)
        if reason is not None:
            fits.append(FormFit(name, form.formula, dropped=reason))
            continue
        assert params is not None
        heldout = []
        for i in range(len(data.mean)):  # leave one point (all its seeds) out, predict its mean
            refit = _fit(form, data, [params], np.arange(len(data.mean)) != i)
            if refit is None:
                break
            heldout.append(float(form.error(refit, data.logs[i : i + 1])[0]))
        if len(heldout) < len(data.mean):
            fits.append(FormFit(name, form.formula, dropped="a leave-one-point-out refit did not converge"))
            continue
        loo = 100 * float(np.sqrt(np.mean((np.array(heldout) - data.mean) ** 2)))
        fits.append(
            FormFit(
                name, form.formula, dict(zip(form.names, map(float, params))), _points_rmse(form, params, data), loo
            )
        )
        fitted[name] = (params, loo)
    if not fitted:
        reasons = "; ".join(f"{f.name}: {f.dropped}" for f in fits)
        raise UserError(
            f"rows: no form of the joint law can be fitted to {len(points)} point(s) ({reasons})", field="rows"
        )
    winner = min(fitted, key=lambda n: fitted[n][1])
    comparison = _comparison(winner, fits)
    params = fitted[winner][0]
    return JointFit(
        form=winner,
        params=dict(zip(FORMS[winner].names, map(float, params))),
        forms=fits,
        comparison=comparison,
        points=len(points),
        observations=len(data.obs_error),
        cost_span=span,
        max_cost=max_cost,
        max_error=data.e_max,
        skipped=skipped,
        not_learned=not_learned,
    )


def _comparison(winner: str, fits: Sequence[FormFit]) -> str:
    best = next(f for f in fits if f.name == winner)
    others = [f for f in fits if f.name != winner]
    text = f"the {winner} law, held-out error {best.heldout_rmse:.2f} points"
    parts = []
    for other in others:
        if other.dropped:
            parts.append(f"{other.name} not fitted: {other.dropped}")
        else:
            assert other.heldout_rmse is not None and best.heldout_rmse is not None
            ratio = other.heldout_rmse / best.heldout_rmse if best.heldout_rmse > 0 else math.inf
            parts.append(f"{other.name} {other.heldout_rmse:.2f} ({ratio:.2g}× higher)")
    return text + (f" (leave one point out; {'; '.join(parts)})" if parts else "")


# -- the choice -----------------------------------------------------------------------------------
def check_phi(phi: Any, field: str = "phi") -> float:
    """φ within scale's bounds and not 0 (at φ = 0 every α, β, γ gives the baseline: nothing to choose)."""
    value = check_number(field, phi, low=MIN_PHI, high=MAX_PHI)
    if value == 0:
        raise UserError(
            f"{field} 0 is the baseline itself: every α, β, γ gives it, there is nothing to choose", field=field
        )
    return value


def surface(target: float, steps: int) -> np.ndarray:
    """Points (log α, log β, log γ) of the surface α·β²·γ² = target with α, β, γ ≥ 1: barycentric
    shares (u, v, t) of log target spent on depth, width and resolution on a grid of ``steps``."""
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    u, v = i[keep] / steps, j[keep] / steps
    return _shares_to_logs(u, v, target)


def _shares_to_logs(u: np.ndarray, v: np.ndarray, target: float) -> np.ndarray:
    total = math.log(target)
    return np.column_stack([u * total, v * total / 2, (1 - u - v) * total / 2])


def best_on_surface(error: Callable[[np.ndarray], np.ndarray], phi: float, target: float) -> tuple[float, float, float]:
    """The (α, β, γ) on α·β²·γ² = target (α, β, γ ≥ 1) minimising ``error(log multipliers at φ)``:
    a grid of 1/120 shares of log target, then a grid of 1/6000 around its best."""
    coarse = 120
    logs = surface(target, coarse)
    k = int(np.argmin(error(phi * logs)))
    total = math.log(target)
    u0, v0 = logs[k, 0] / total, 2 * logs[k, 1] / total
    fine = np.linspace(-2 / coarse, 2 / coarse, 101)
    u, v = (g.ravel() for g in np.meshgrid(u0 + fine, v0 + fine, indexing="ij"))
    keep = (u >= 0) & (v >= 0) & (u + v <= 1)
    near = np.vstack([_shares_to_logs(u[keep], v[keep], target), logs[k : k + 1]])
    best = near[int(np.argmin(error(phi * near)))]
    a, b, g = np.exp(best)
    return float(a), float(b), float(g)


def _verdict(gain: Bounds) -> str:
    """The one rule (:func:`effnet.search.stats.decide`) on a percentile interval."""
    if gain.low is None or gain.high is None:
        return stats.UNKNOWN
    return stats.decide(stats.from_interval(gain.low, gain.high))


def choose_at_phi(
    rows: Sequence[Mapping[str, Any]],
    phi: float,
    *,
    target: float = TARGET,
    grid_choice: tuple[float, float, float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    forms: Sequence[str] = tuple(FORMS),
    progress: bool = False,
) -> CoefficientChoice:
    """The (α, β, γ) with α·β²·γ² = ``target`` (α, β, γ ≥ 1) that the joint law fitted to ``rows``
    (:func:`fit_joint`) predicts most accurate at ``phi``, with 95% bootstrap intervals (``resamples``
    resamples of every point's seeds from a numpy generator seeded with ``seed``; the winning form
    refitted and the choice made again each time). The paper's (1.2, 1.1, 1.15) and ``grid_choice``
    (the grid search's φ = 1 choice) are predicted beside it, with the choice's gain over each."""
    phi = check_phi(phi)
    target = check_number("target", target, low=1, strict_low=True)
    check_whole_number("resamples", resamples, 0)
    if grid_choice is not None:
        if len(grid_choice) != 3:
            raise UserError("grid_choice must be (alpha, beta, gamma)", field="grid_choice")
        grid_choice = tuple(check_number("grid_choice", v, low=0, strict_low=True) for v in grid_choice)  # type: ignore[assignment]
    points, skipped, not_learned = _usable(rows)
    fit = _fit_points(points, skipped, not_learned, forms)
    form = FORMS[fit.form]
    params = np.array([fit.params[n] for n in form.names])
    data = _data(points)
    fixed = {"paper": PAPER, **({"grid": grid_choice} if grid_choice else {})}
    fixed_logs = {name: phi * np.log(np.array([abc])) for name, abc in fixed.items()}

    def choose(p: np.ndarray) -> tuple[float, float, float]:
        return best_on_surface(lambda logs: form.error(p, logs), phi, target)

    chosen = choose(params)
    chosen_logs = phi * np.log(np.array([chosen]))
    draws: dict[str, list[float]] = {k: [] for k in ("alpha", "beta", "gamma", "accuracy")}
    draws.update({f"{name}_accuracy": [] for name in fixed})
    draws.update({f"{name}_gain": [] for name in fixed})
    rng = np.random.default_rng(seed)
    from effnet.progress import progress_bar

    with progress_bar(resamples, desc="bootstrap", unit="fit", enabled=progress) as bar:
        for _ in range(resamples):
            resampled = _data(_resample(points, rng), sigma=data.sigma)
            refit = _fit(form, resampled, [params])
            bar.update(1)
            if refit is None:
                continue
            a, b, g = choose(refit)
            draws["alpha"].append(a)
            draws["beta"].append(b)
            draws["gamma"].append(g)
            draws["accuracy"].append(1.0 - float(form.error(refit, phi * np.log(np.array([[a, b, g]])))[0]))
            at_choice = 1.0 - float(form.error(refit, chosen_logs)[0])
            for name, logs in fixed_logs.items():
                accuracy = 1.0 - float(form.error(refit, logs)[0])
                draws[f"{name}_accuracy"].append(accuracy)
                draws[f"{name}_gain"].append(at_choice - accuracy)
    accuracy = 1.0 - float(form.error(params, chosen_logs)[0])
    candidates = {}
    for name, (a, b, g) in fixed.items():
        value = 1.0 - float(form.error(params, fixed_logs[name])[0])
        gain = Bounds(accuracy - value, *stats.percentile_interval(draws[f"{name}_gain"]))
        label = "the paper's" if name == "paper" else "the grid's φ = 1 choice"
        candidates[name] = Candidate(
            label,
            a,
            b,
            g,
            Predicted(value, *stats.percentile_interval(draws[f"{name}_accuracy"])),
            gain,
            _verdict(gain),
        )
    beyond = target**phi / fit.max_cost
    result = CoefficientChoice(
        phi=phi,
        target=target,
        form=fit.form,
        alpha=Bounds(chosen[0], *stats.percentile_interval(draws["alpha"])),
        beta=Bounds(chosen[1], *stats.percentile_interval(draws["beta"])),
        gamma=Bounds(chosen[2], *stats.percentile_interval(draws["gamma"])),
        multipliers={"depth": chosen[0] ** phi, "width": chosen[1] ** phi, "resolution": chosen[2] ** phi},
        predicted=Predicted(accuracy, *stats.percentile_interval(draws["accuracy"])),
        paper=candidates["paper"],
        grid=candidates.get("grid"),
        beyond=beyond,
        resamples=len(draws["alpha"]),
        fit=fit,
        summary="",
    )
    return _with_summary(result)


def _interval(b: Bounds | Predicted, scale: float = 1.0, digits: int = 3) -> str:
    value = b.value if isinstance(b, Bounds) else b.predicted
    if b.low is None or b.high is None:
        return f"{scale * value:.{digits}g} (interval unknown)"
    return f"{scale * value:.{digits}g} [{scale * b.low:.{digits}g}, {scale * b.high:.{digits}g}]"


def _with_summary(choice: CoefficientChoice) -> CoefficientChoice:
    from dataclasses import replace

    lines = [
        f"at φ = {choice.phi:g} on α·β²·γ² = {choice.target:g}: α = {_interval(choice.alpha)}, "
        f"β = {_interval(choice.beta)}, γ = {_interval(choice.gamma)}, predicted accuracy "
        f"{_interval(choice.predicted, 100)}% (95% bootstrap intervals, {choice.resamples} resamples)",
        f"law: {choice.fit.comparison}",
    ]
    for c in (choice.paper, choice.grid):
        if c is None:
            continue
        words = {
            stats.AHEAD: "the choice is ahead by",
            stats.BEHIND: "the choice is behind by",
            stats.TIE: "no difference detectable:",
        }.get(c.verdict, "difference unknown:")
        lines.append(
            f"{c.label} (α = {c.alpha:g}, β = {c.beta:g}, γ = {c.gamma:g}) at φ = {choice.phi:g}: "
            f"{_interval(c.predicted, 100)}%; {words} {_interval(c.gain, 100, 2)} points"
        )
    if choice.beyond > FAR:
        lines.append(
            f"warning: φ = {choice.phi:g} costs ×{choice.beyond:.3g} the largest measured point (ideal d·w²·r²): "
            f"a far extrapolation"
        )
    return replace(choice, summary="\n".join(lines))
