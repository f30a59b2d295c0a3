"""Search: the paper's α/β/γ grid search, scaling studies, budget planning and the end-to-end pipeline.

Studies live in Optuna storage (:mod:`effnet.search.storage`): a SQLite file by default, a
PostgreSQL URL for many workers. :class:`effnet.search.queue.PointQueue` trains each point of a
fixed list exactly once, across workers and interruptions.
"""

from effnet.scale.plan import plan
from effnet.search.grid import GridConfig, scaling_grid, search_scaling
from effnet.search.pipeline import FinalConfig, run_pipeline
from effnet.search.proxy import Proxy
from effnet.search.queue import Point, PointQueue
from effnet.search.storage import DEFAULT_HEARTBEAT, open_storage, open_study, storage_url
from effnet.search.study import Sweeps, study_scaling

__all__ = [
    "DEFAULT_HEARTBEAT",
    "FinalConfig",
    "GridConfig",
    "Point",
    "PointQueue",
    "Proxy",
    "Sweeps",
    "open_storage",
    "open_study",
    "plan",
    "run_pipeline",
    "scaling_grid",
    "search_scaling",
    "storage_url",
    "study_scaling",
]
