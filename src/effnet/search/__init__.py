"""Search: the paper's α/β/γ grid search, scaling studies, budget planning and the end-to-end pipeline.

Studies live in Optuna storage (:mod:`effnet.search.storage`): a SQLite file by default, a
PostgreSQL URL for many workers; :mod:`effnet.search.worker` is the one worker loop (claims,
heartbeats, recovery of dead workers' trials) for the grid, the study and NAS.
:class:`effnet.search.queue.PointQueue` trains each point of a fixed list exactly once, across
workers and interruptions; a trial is one point trained with one seed, and
:class:`effnet.search.record.TrialRecord` is how every trial is reported. Reports give each point's
mean over its seeds with a 95% interval (:mod:`effnet.search.stats`).
"""

from effnet.search.grid import Choice, GridConfig, GridSearchResult, scaling_grid, search_scaling
from effnet.search.pipeline import FinalConfig, PipelineResult, run_pipeline
from effnet.search.plan import Plan, plan
from effnet.search.proxy import Proxy
from effnet.search.queue import Point, PointQueue
from effnet.search.record import TrialRecord
from effnet.search.stats import Estimate, estimate
from effnet.search.storage import DEFAULT_HEARTBEAT, open_rdb, open_study, storage_url
from effnet.search.study import StudyResult, Sweeps, compare_curves, study_scaling
from effnet.search.worker import check_settings, work

__all__ = [
    "DEFAULT_HEARTBEAT",
    "Choice",
    "Estimate",
    "FinalConfig",
    "GridConfig",
    "GridSearchResult",
    "PipelineResult",
    "Plan",
    "Point",
    "PointQueue",
    "Proxy",
    "StudyResult",
    "Sweeps",
    "TrialRecord",
    "check_settings",
    "compare_curves",
    "estimate",
    "open_rdb",
    "open_study",
    "plan",
    "run_pipeline",
    "scaling_grid",
    "search_scaling",
    "storage_url",
    "study_scaling",
    "work",
]
