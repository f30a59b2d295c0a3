"""How sure a search or study is: means over seeds, 95% t-intervals, differences, interpolation.

Every point trained with several seeds is an :class:`Estimate` (mean, sample standard deviation,
count). Its 95% interval is Student's t-interval over the seeds; with one seed the interval is
unknown (None), never zero. A linear combination of independent estimates (a difference of two
points, a curve interpolated between two points, a mean over several cost positions) has the
variance Σ wᵢ² sᵢ²/nᵢ and Welch–Satterthwaite's degrees of freedom.

Every verdict effnet prints comes from one rule, :func:`decide`: a difference whose 95% interval
contains 0 is a tie; otherwise the side it lies on wins, by its margin (never two intervals compared
for overlap, which calls ties that the difference's own interval excludes).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from effnet.results import Result

#: The confidence level of every interval effnet reports.
LEVEL = 0.95


def t_quantile(df: float, level: float = LEVEL) -> float:
    """Student's t quantile of the two-sided ``level`` interval with ``df`` degrees of freedom (SciPy,
    which scikit-learn brings)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class Estimate(Result):
    """A mean over ``n`` seeds, its sample standard deviation (None below two seeds) and the half-width
    of its 95% interval (None when unknown: one seed)."""

    mean: float
    n: int
    std: float | None = None
    ci95: float | None = None

    @property
    def low(self) -> float | None:
        return None if self.ci95 is None else self.mean - self.ci95

    @property
    def high(self) -> float | None:
        return None if self.ci95 is None else self.mean + self.ci95


def estimate(values: Iterable[float]) -> Estimate | None:
    """The mean of ``values`` with its t-interval; None for no values."""
    xs = [float(v) for v in values]
    if not xs:
        return None
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Estimate(mean=mean, n=1)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Estimate(mean=mean, n=n, std=std, ci95=t_quantile(n - 1) * std / math.sqrt(n))


def combine(terms: Mapping[Hashable, tuple[float, Estimate]]) -> Estimate:
    """Σ wᵢ·xᵢ over independent estimates, keyed by point (``{key: (weight, estimate)}``; a point
    weighted twice must be merged by the caller). The interval is unknown where a weighted term has
    one seed; the degrees of freedom are Welch–Satterthwaite's."""
    mean = sum(w * e.mean for w, e in terms.values())
    weighted = [(w, e) for w, e in terms.values() if w != 0]
    n = min((e.n for _, e in weighted), default=1)
    if any(e.std is None for _, e in weighted) or not weighted:
        return Estimate(mean=mean, n=n)
    parts = [(w * w * e.std**2 / e.n, e.n) for w, e in weighted]  # type: ignore[operator]
    variance = sum(v for v, _ in parts)
    if variance == 0:
        return Estimate(mean=mean, n=n, std=0.0, ci95=0.0)
    df = variance**2 / sum(v * v / (k - 1) for v, k in parts)
    return Estimate(mean=mean, n=n, std=math.sqrt(variance), ci95=t_quantile(df) * math.sqrt(variance))


def difference(a: Estimate, b: Estimate) -> Estimate:
    """a − b with Welch's interval (``std`` is the standard error of the difference)."""
    return combine({"a": (1.0, a), "b": (-1.0, b)})


#: The verdicts :func:`decide` gives, the one rule every command uses.
AHEAD, BEHIND, TIE, UNKNOWN = "ahead", "behind", "tie", "unknown"


def percentile_interval(draws: Iterable[float]) -> tuple[float | None, float | None]:
    """The 95% percentile interval of the finite ``draws`` (a bootstrap's); (None, None) when there are none."""
    import numpy as np

    finite = np.asarray(list(draws), dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return None, None
    low, high = np.percentile(finite, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(low), float(high)


def from_interval(low: float, high: float, *, n: int = 2, std: float | None = None) -> Estimate:
    """An interval (a bootstrap's percentiles) as an Estimate centred on it, so that :func:`decide`'s rule is
    exactly whether the interval contains 0."""
    return Estimate(mean=(low + high) / 2, n=n, std=std, ci95=(high - low) / 2)


def decide(difference: Estimate) -> str:
    """The verdict on a difference a − b: ``"ahead"`` when its 95% interval lies entirely above 0,
    ``"behind"`` entirely below, ``"tie"`` when it contains 0, ``"unknown"`` without an interval (one
    seed). Every verdict effnet prints (grid, study, pipeline, fitted predictions) comes from here."""
    if difference.ci95 is None or math.isnan(difference.mean) or math.isnan(difference.ci95):
        return UNKNOWN
    if difference.mean - difference.ci95 > 0:
        return AHEAD
    if difference.mean + difference.ci95 < 0:
        return BEHIND
    return TIE


def judge(difference: Estimate, a: str, b: str, where: str = "") -> str:
    """The verdict of :func:`decide` on a − b in words, the margin always shown: ``"a ahead of b by 4.0 ±
    1.2 points"``, ``"b ahead of a by …"``, ``"a and b tied (difference -0.5 ± 1.2 points, interval contains
    0)"`` or, with one seed, the difference and "no interval, no verdict". ``where`` follows the margin
    (e.g. ``"at 2× the baseline's multiply-adds"``)."""
    at = f" {where}" if where else ""
    verdict = decide(difference)
    if verdict == AHEAD:
        return f"{a} ahead of {b} by {show(difference, ' points')}{at}"
    if verdict == BEHIND:
        flipped = Estimate(mean=-difference.mean, n=difference.n, std=difference.std, ci95=difference.ci95)
        return f"{b} ahead of {a} by {show(flipped, ' points')}{at}"
    if verdict == TIE:
        return f"{a} and {b} tied{at} (difference {show(difference, ' points')}, interval contains 0)"
    return f"{a} − {b} = {points(difference.mean)} points{at} (one seed per point: no interval, no verdict)"


def interpolation_weights(xs: Sequence[float], x: float) -> dict[int, float] | None:
    """Weights of the points ``xs`` (sorted ascending) that interpolate linearly in log(x) at ``x``;
    None outside ``[xs[0], xs[-1]]`` (never extrapolated)."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    logs = [math.log(v) for v in xs]
    target = math.log(x)
    for i in range(len(xs) - 1):
        if logs[i] <= target <= logs[i + 1]:
            if logs[i + 1] == logs[i]:
                return {i: 1.0}
            t = (target - logs[i]) / (logs[i + 1] - logs[i])
            return {i: 1.0 - t, i + 1: t} if t > 0 else {i: 1.0}
    return {len(xs) - 1: 1.0}  # x equals the single point


def learning_threshold(num_classes: int) -> float:
    """The accuracy below which a point is said not to have learned: 3× chance, or halfway from chance
    to perfect where 3× chance is out of reach (fewer than four classes)."""
    chance = 1.0 / num_classes
    return min(3.0 * chance, (1.0 + chance) / 2.0)


def points(value: float) -> str:
    """A fraction as percentage points: ``2.1``."""
    return f"{100 * value:.1f}"


def show(e: Estimate | None, unit: str = "%") -> str:
    """``61.2 ± 1.4%``, ``61.2% (one seed: interval unknown)`` or ``—`` (``unit=" points"`` for a
    difference)."""
    if e is None:
        return "—"
    if e.ci95 is None:
        return f"{points(e.mean)}{unit} (one seed: interval unknown)"
    return f"{points(e.mean)} ± {points(e.ci95)}{unit}"
