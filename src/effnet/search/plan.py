"""Budget planning: the largest real φ whose compound-scaled model fits a budget.

The cost of the scaled model (multiply-adds, parameters, activations, or latency measured on this
machine) is a step function of φ: repeats, channels and resolution are rounded. It is close to
monotone, so a coarse scan brackets the last φ under budget and a bisection narrows the step it sits on.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.factory import check_fits
from effnet.models.efficientnet import MAX_CLASSES
from effnet.models.profile import Profile, measure_latency_ms, profile
from effnet.progress import progress_bar
from effnet.results import Result
from effnet.scale.compound import ALPHA, BETA, GAMMA, MAX_PHI, MIN_PHI, compound_coefficients, scale_compound

#: φ is searched in [PHI_MIN, PHI_MAX] (below 0: a budget under the baseline's cost, as TinyNet scales
#: down); the coarse scan's step; the bisection's final width.
PHI_MIN = MIN_PHI  # the scaler's own bounds
PHI_MAX = MAX_PHI
SCAN_STEP = 0.25
PRECISION = 1e-4
#: The scan stops once the cost exceeds the budget by this factor.
OVERSHOOT = 1.3
METRICS = ("macs", "params", "activations", "latency_ms")
#: The budgets counted by :func:`~effnet.models.profile.profile` rather than timed.
COUNTED = ("macs", "params", "activations")
#: Bounds on a latency search: a budget (a minute per forward pass is no deployment target), timed
#: passes per φ, and the whole search's measuring time (a larger model is estimated from the last one
#: measured, by multiply-adds, before it is run).
MAX_LATENCY_MS = 60_000.0
MAX_REPEATS = 1000
MAX_MEASURE_SECONDS = 300.0
WARMUP = 2


def cost_function(metric: str, *, num_classes: int = 1000, batch_size: int = 1, repeats: int = 10):
    """The cost of a description under ``metric`` (macs, params, activations or latency_ms), counted or
    timed by :mod:`effnet.models.profile`."""
    if metric in COUNTED:
        return lambda spec: float(getattr(profile(spec, num_classes=num_classes), metric))
    if metric == "latency_ms":
        return lambda spec: measure_latency_ms(
            spec, num_classes=num_classes, batch_size=batch_size, repeats=repeats, warmup=WARMUP
        )
    raise UserError(f"budget {metric!r} is unknown (known: {', '.join(METRICS)})")


def largest_phi(
    cost: Callable[[float], float],
    budget: float,
    *,
    phi_max: float = PHI_MAX,
    phi_min: float = PHI_MIN,
    top_first: bool = False,
) -> float:
    """The largest φ in [phi_min, phi_max] with cost(φ) ≤ budget, to within :data:`PRECISION`.

    From the baseline (φ = 0) under the budget, a scan up in steps of 0.25 finds the last φ under it
    (tolerating a cost that dips back under the budget after a step up, until it is 30% over); from the
    baseline over it, a scan down finds the first φ under it. Bisection then narrows the step above.
    ``top_first`` (a cost that is cheap to count): φ = phi_max is tried first, so a budget beyond the
    largest model is answered at once. A cost of ``inf`` is a φ whose model cannot be built.
    """
    if cost(0.0) > budget:
        low = _scan_down(cost, budget, phi_min)
    else:
        if top_first and cost(phi_max) <= budget:
            return phi_max
        low, phi = 0.0, 0.0
        while phi < phi_max:
            phi = min(phi_max, phi + SCAN_STEP)
            value = cost(phi)
            if value <= budget:
                low = phi
            elif value > OVERSHOOT * budget:
                break  # far over: the cost will not come back under the budget
        if low >= phi_max:
            return phi_max
    high = min(phi_max, low + SCAN_STEP)
    while high - low > PRECISION:
        mid = (low + high) / 2
        if cost(mid) <= budget:
            low = mid
        else:
            high = mid
    return low


def _scan_down(cost: Callable[[float], float], budget: float, phi_min: float) -> float:
    """The first φ below 0, in steps of :data:`SCAN_STEP` down to ``phi_min``, whose cost is within the
    budget; a UserError naming the smallest model tried where none is."""
    phi, value = 0.0, cost(0.0)
    while phi > phi_min:
        step = max(phi_min, phi - SCAN_STEP)
        at = cost(step)
        if at == math.inf:  # beyond the descriptions effnet builds: every smaller φ is too
            break
        phi, value = step, at
        if value <= budget:
            return phi
    raise UserError(
        f"even the smallest scale-down of the baseline, φ = {phi:.4g} at {value:,.6g}, is over the budget "
        f"{budget:,.6g} ({f'φ goes down to {phi_min:g}' if phi <= phi_min else 'a smaller φ cannot be built'})"
    )


@dataclass(frozen=True)
class Plan(Result):
    """The compound-scaled model with the largest φ under a budget. ``capped``: φ reached
    :data:`PHI_MAX` still under budget (the search stops there). ``next``: φ just above and its cost."""

    phi: float
    depth: float
    width: float
    resolution: int
    resolution_multiplier: float
    params: int
    macs: int
    activations: int
    budget: dict[str, Any]
    base: str
    alpha: float
    beta: float
    gamma: float
    blocks: list[str]
    evaluations: int
    capped: bool
    latency_ms: float | None = None
    latency_batch_size: int | None = None
    next: dict[str, float] | None = None


def plan(
    base: NetworkSpec,
    *,
    macs: float | None = None,
    params: float | None = None,
    latency_ms: float | None = None,
    activations: float | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    num_classes: int = 1000,
    batch_size: int = 1,
    repeats: int = 10,
    progress: bool | None = None,
) -> Plan:
    """The compound-scaled model with the largest φ under the one budget given (φ < 0, the baseline
    scaled down, where the budget is below the baseline's cost).

    MACs, parameters and activations (elements written by convolutions and linear layers) are counted
    (a budget beyond the largest φ is answered from it at once); latency is timed here, within :data:`MAX_LATENCY_MS`, :data:`MAX_REPEATS` and
    :data:`MAX_MEASURE_SECONDS`, each model checked against the memory first. ``progress`` (default: a
    latency search on a terminal) shows a bar of the models measured."""
    budgets = (("macs", macs), ("params", params), ("activations", activations), ("latency_ms", latency_ms))
    given = {k: v for k, v in budgets if v is not None}
    if len(given) != 1:
        raise UserError("give exactly one budget: macs, params, activations or latency_ms")
    ((metric, budget),) = given.items()
    check_number(metric, budget, low=0, strict_low=True, high=MAX_LATENCY_MS if metric == "latency_ms" else None)
    if not isinstance(base, NetworkSpec):
        raise UserError(f"base must be a NetworkSpec, got {type(base).__name__}", field="base")
    compound_coefficients(0.0, alpha, beta, gamma)  # validates α, β, γ
    check_whole_number("num_classes", num_classes, 1, high=MAX_CLASSES)
    check_whole_number("batch_size", batch_size, 1)
    check_whole_number("repeats", repeats, 1, high=MAX_REPEATS)
    latency = metric == "latency_ms"
    if latency:  # a batch that cannot fit is refused before anything is allocated
        check_fits(base, num_classes=num_classes, batch_size=batch_size, field="batch_size")
    measure = cost_function(metric, num_classes=num_classes, batch_size=batch_size, repeats=repeats)
    cache: dict[float, float] = {}
    counted: dict[float, Profile] = {}
    timed: list[tuple[float, float]] = []  # (multiply-adds, ms) of the models measured
    start = time.monotonic()
    bar = progress_bar(
        desc="plan", unit="model", enabled=latency and sys.stderr.isatty() if progress is None else progress
    )

    def counts_of(phi: float, spec: NetworkSpec) -> Profile:
        if phi not in counted:
            counted[phi] = profile(spec, num_classes=num_classes)
        return counted[phi]

    def timed_cost(phi: float, spec: NetworkSpec) -> float:
        try:
            macs = check_fits(spec, num_classes=num_classes, batch_size=batch_size, field="batch_size")
        except UserError:
            if phi == 0:
                raise
            return math.inf  # cannot run here: over any latency budget
        if timed:  # the last model measured, scaled by multiply-adds: what this one would take
            last_macs, last_ms = timed[-1]
            guess = last_ms * macs / max(last_macs, 1) * (WARMUP + repeats) / 1000
            if time.monotonic() - start + guess > MAX_MEASURE_SECONDS:
                raise UserError(
                    f"latency_ms {budget:g}: measuring φ = {phi:.4g} would take the search past "
                    f"{MAX_MEASURE_SECONDS:g} s ({len(timed)} models measured, the last at {last_ms:.1f} ms); "
                    "give a smaller budget or fewer repeats, or plan by macs",
                    field="latency_ms",
                )
        value = measure(spec)
        timed.append((macs, value))
        return value

    def cost(phi: float) -> float:
        if phi not in cache:
            try:
                scaled = scale_compound(base, phi, alpha, beta, gamma)
            except UserError:  # beyond the descriptions effnet builds (e.g. α^φ > 64): over any budget
                if phi == 0:
                    raise
                cache[phi] = math.inf
            else:
                if latency:
                    cache[phi] = timed_cost(phi, scaled)
                else:
                    counts = counts_of(phi, scaled)
                    cache[phi] = float(getattr(counts, metric))
            bar.update(1)
            bar.set_postfix_str(f"φ={phi:.4g}")
        return cache[phi]

    with bar:
        phi = largest_phi(cost, budget, top_first=not latency)
        spec = scale_compound(base, phi, alpha, beta, gamma, name=f"{base.name}-phi{phi:.4f}")
        counts = counts_of(phi, spec)
        capped = phi >= PHI_MAX
        after = None if capped else {"phi": phi + 2 * PRECISION, metric: cost(phi + 2 * PRECISION)}
    coeffs = compound_coefficients(phi, alpha, beta, gamma)
    timing = {}
    if latency:
        timing = {"latency_ms": cache.get(phi) or measure(spec), "latency_batch_size": batch_size}
    return Plan(
        phi=phi,
        depth=coeffs.depth,
        width=coeffs.width,
        resolution=spec.resolution,
        resolution_multiplier=coeffs.resolution,
        params=counts.params,
        macs=counts.macs,
        activations=counts.activations,
        budget={"metric": metric, "value": budget},
        base=base.name,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        blocks=spec.block_strings,
        evaluations=len(cache),
        capped=capped,
        **timing,
        next=after,
    )
