"""The multi-objective reward of MnasNet and EfficientNet: ACC(m) × [cost(m) / T]^w."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from effnet.errors import UserError, check_whole_number

#: The paper's target: 400M multiply-adds at 224 px.
TARGET_MACS = 400e6
#: The paper's exponent.
W = -0.07
#: The resolution the target refers to.
TARGET_RESOLUTION = 224
OBJECTIVES = ("soft", "hard")
#: The largest target per metric: ~25,000× EfficientNet-B7's 37B multiply-adds, and 1,000 s.
MAX_TARGET = {"macs": 1e15, "latency": 1e6}
#: The steepest exponent (the hard objective's is −1).
MIN_W = -10.0
METRICS = ("macs", "latency")


@dataclass(frozen=True)
class Objective:
    """ACC × (cost/T)^w, where cost is multiply-adds (default) or measured latency in milliseconds.

    ``soft`` (MnasNet's α = β = w): the same exponent below and above T, so cheaper models gain.
    ``hard`` (α = 0, β = w, w = −1 unless given): no penalty at or below T, ACC × (cost/T)^w above.
    With multiply-adds, a proxy resolution below 224 scales T by (resolution / 224)², so the target
    means the same network as at full size. ``target`` is T before that scaling.
    """

    kind: str = "soft"
    target: float = TARGET_MACS
    w: float | None = None
    metric: str = "macs"
    resolution: int = TARGET_RESOLUTION

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise UserError(f"objective {self.kind!r} is unknown (known: {', '.join(OBJECTIVES)})", field="objective")
        if self.metric not in METRICS:
            raise UserError(f"metric {self.metric!r} is unknown (known: {', '.join(METRICS)})", field="metric")
        if not math.isfinite(self.target) or self.target <= 0:
            raise UserError(f"target must be > 0, got {self.target}", field="target")
        if self.target > MAX_TARGET[self.metric]:
            unit = "multiply-adds" if self.metric == "macs" else "ms"
            raise UserError(f"target must be ≤ {MAX_TARGET[self.metric]:g} {unit}, got {self.target:g}", field="target")
        if self.w is not None and (not math.isfinite(self.w) or self.w > 0):
            raise UserError(f"w must be ≤ 0 (a penalty), got {self.w}", field="w")
        if self.w is not None and self.w < MIN_W:
            raise UserError(f"w must be ≥ {MIN_W:g}: steeper, every reward but the target's is 0 or inf", field="w")
        check_whole_number("resolution", self.resolution, 1)

    @property
    def exponent(self) -> float:
        """w: −0.07 for soft, −1 for hard unless given."""
        if self.w is not None:
            return float(self.w)
        return W if self.kind == "soft" else -1.0

    @property
    def effective_target(self) -> float:
        """T at the proxy resolution (multiply-adds shrink with the square of the resolution)."""
        if self.metric == "macs" and self.resolution < TARGET_RESOLUTION:
            return self.target * (self.resolution / TARGET_RESOLUTION) ** 2
        return float(self.target)

    def reward(self, accuracy: float, cost: float) -> float:
        """The reward of a model with this accuracy (a fraction) and cost."""
        if cost <= 0:
            raise UserError(f"cost must be > 0, got {cost}", field="cost")
        ratio = cost / self.effective_target
        if self.kind == "hard" and ratio <= 1:
            return float(accuracy)
        return float(accuracy) * ratio**self.exponent

    def describe(self) -> dict[str, Any]:
        """The objective as JSON-friendly data (``target_macs`` is T at the proxy resolution)."""
        macs = self.metric == "macs"
        return {
            "objective": self.kind,
            "metric": self.metric,
            "target_macs": self.effective_target if macs else None,
            "target_macs_at_224": self.target if macs else None,
            "target_latency_ms": None if macs else self.target,
            "w": self.exponent,
            "resolution": self.resolution,
        }
