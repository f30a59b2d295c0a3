"""Search: the paper's α/β/γ grid search, scaling studies, budget planning and the end-to-end pipeline.

Studies live in Optuna storage (:mod:`effnet.search.storage`): a SQLite file by default, a
PostgreSQL URL for many workers. :class:`effnet.search.queue.PointQueue` trains each point of a
fixed list exactly once, across workers and interruptions.
"""

from effnet.search.queue import Point, PointQueue
from effnet.search.storage import DEFAULT_HEARTBEAT, open_storage, open_study, storage_url

__all__ = ["DEFAULT_HEARTBEAT", "Point", "PointQueue", "open_storage", "open_study", "storage_url"]
