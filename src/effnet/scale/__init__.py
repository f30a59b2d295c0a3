"""Scale: compound scaling as pure functions on descriptions and the rounding rules."""

from effnet.scale.compound import (
    ALPHA,
    BETA,
    GAMMA,
    Coefficients,
    compound_coefficients,
    scale_compound,
    scale_network,
)
from effnet.scale.rounding import round_filters, round_repeats

__all__ = [
    "ALPHA",
    "BETA",
    "GAMMA",
    "Coefficients",
    "compound_coefficients",
    "round_filters",
    "round_repeats",
    "scale_compound",
    "scale_network",
]
