"""Scale: compound scaling as pure functions on descriptions."""

from effnet.scale.compound import (
    ALPHA,
    BETA,
    GAMMA,
    Coefficients,
    compound_coefficients,
    round_filters,
    round_repeats,
    scale_compound,
    scale_network,
)

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
