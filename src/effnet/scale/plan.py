"""Budget planning: the largest real φ whose compound-scaled model fits a budget.

The cost of the scaled model (multiply-adds, parameters, or latency measured on this machine) is a
step function of φ: repeats, channels and resolution are rounded. It is close to monotone, so a
coarse scan brackets the last φ under budget and a bisection narrows the step it sits on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number
from effnet.results import Result
from effnet.scale.compound import ALPHA, BETA, GAMMA, MAX_PHI, compound_coefficients, scale_compound

#: φ is searched in [0, PHI_MAX]; the coarse scan's step; the bisection's final width.
PHI_MAX = MAX_PHI  # the scaler's own bound
SCAN_STEP = 0.25
PRECISION = 1e-4
#: The scan stops once the cost exceeds the budget by this factor.
OVERSHOOT = 1.3
METRICS = ("macs", "params", "latency_ms")


def cost_function(metric: str, *, num_classes: int = 1000, batch_size: int = 1, repeats: int = 10):
    """The cost of a description under ``metric`` (macs, params or latency_ms), counted or timed by
    :mod:`effnet.models.profile` (imported here, when a cost is asked for: the planner itself is
    arithmetic on descriptions)."""
    from effnet.models.profile import measure_latency_ms, profile

    if metric == "macs":
        return lambda spec: float(profile(spec, num_classes=num_classes).macs)
    if metric == "params":
        return lambda spec: float(profile(spec, num_classes=num_classes).params)
    if metric == "latency_ms":
        return lambda spec: measure_latency_ms(spec, num_classes=num_classes, batch_size=batch_size, repeats=repeats)
    raise UserError(f"budget {metric!r} is unknown (known: {', '.join(METRICS)})")


def largest_phi(cost: Callable[[float], float], budget: float, *, phi_max: float = PHI_MAX) -> float:
    """The largest φ in [0, phi_max] with cost(φ) ≤ budget, to within :data:`PRECISION`.

    A scan in steps of 0.25 finds the last φ under budget (tolerating a cost that dips back under
    the budget after a step up, until it is 30% over); bisection then narrows the step above it.
    """
    if cost(0.0) > budget:
        raise UserError("the baseline itself (φ = 0) is over the budget")
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
    high = low + SCAN_STEP
    while high - low > PRECISION:
        mid = (low + high) / 2
        if cost(mid) <= budget:
            low = mid
        else:
            high = mid
    return low


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
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    num_classes: int = 1000,
    batch_size: int = 1,
    repeats: int = 10,
) -> Plan:
    """The compound-scaled model with the largest φ under the one budget given."""
    given = {k: v for k, v in (("macs", macs), ("params", params), ("latency_ms", latency_ms)) if v is not None}
    if len(given) != 1:
        raise UserError("give exactly one budget: macs, params or latency_ms")
    ((metric, budget),) = given.items()
    check_number(metric, budget, low=0, strict_low=True)
    compound_coefficients(0.0, alpha, beta, gamma)  # validates α, β, γ
    measure = cost_function(metric, num_classes=num_classes, batch_size=batch_size, repeats=repeats)
    cache: dict[float, float] = {}

    def cost(phi: float) -> float:
        if phi not in cache:
            try:
                scaled = scale_compound(base, phi, alpha, beta, gamma)
            except UserError:  # beyond the descriptions effnet builds (e.g. α^φ > 64): over any budget
                if phi == 0:
                    raise
                cache[phi] = math.inf
            else:
                cache[phi] = measure(scaled)
        return cache[phi]

    phi = largest_phi(cost, budget)
    spec = scale_compound(base, phi, alpha, beta, gamma, name=f"{base.name}-phi{phi:.4f}")
    from effnet.models.profile import profile

    counts = profile(spec, num_classes=num_classes)
    coeffs = compound_coefficients(phi, alpha, beta, gamma)
    capped = phi >= PHI_MAX
    latency = {}
    if metric == "latency_ms":
        latency = {"latency_ms": cache.get(phi) or measure(spec), "latency_batch_size": batch_size}
    return Plan(
        phi=phi,
        depth=coeffs.depth,
        width=coeffs.width,
        resolution=spec.resolution,
        resolution_multiplier=coeffs.resolution,
        params=counts.params,
        macs=counts.macs,
        budget={"metric": metric, "value": budget},
        base=base.name,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        blocks=spec.block_strings,
        evaluations=len(cache),
        capped=capped,
        **latency,
        next=None if capped else {"phi": phi + 2 * PRECISION, metric: cost(phi + 2 * PRECISION)},
    )
