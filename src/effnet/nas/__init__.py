"""Architecture search for a new baseline (MnasNet / EfficientNet §4): space, objective, strategies."""

from effnet.models.profile import measure_latency_ms
from effnet.nas.objective import Objective
from effnet.nas.runner import NAS_PROXY, SearchResult, TrainEvaluator, pareto_front, search_architectures
from effnet.nas.space import CONV_OPS, DECISIONS, SearchSpace
from effnet.nas.strategies import STRATEGIES, Controller, Reinforce, make_sampler

__all__ = [
    "CONV_OPS",
    "DECISIONS",
    "NAS_PROXY",
    "STRATEGIES",
    "Controller",
    "Objective",
    "Reinforce",
    "SearchResult",
    "SearchSpace",
    "TrainEvaluator",
    "make_sampler",
    "measure_latency_ms",
    "pareto_front",
    "search_architectures",
]
