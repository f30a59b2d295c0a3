"""First-call tuning: of a few ways to compute the same thing, keep the one that ran fastest here.

The fast path uses it twice: early stages in chunks or not and large outputs in kept memory or not
(:mod:`effnet.infer.chunks`, :mod:`effnet.infer.pool`), and in ONNX Runtime one multi-threaded run or
the batch split between one-thread runs (:class:`effnet.infer.ort.OrtModule`). Which wins depends on
the CPU and the allocator, so it is timed per input shape."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: Timed calls per candidate (each after an untimed one) before the fastest way is kept for a shape.
TUNING_CALLS = 4
#: Ways whose best times lie within this share of the fastest's are a tie, and the lowest-numbered of
#: them is kept (owners number their ways in their order of preference): on a 2-core Zen 3 VM fresh
#: tuners kept either of two ways 2% apart about half the time, for 4 or 8 timed calls each; a tie
#: rule makes the choice repeatable.
TIE = 0.03


class ShapeTuner:
    """Picks, per input key, the fastest of ``ways`` ways (numbered from 0) to compute the same thing.
    The first calls run the ways in turn, two calls at a time, and time the second of each pair
    (the first absorbs what the other way left behind: cold caches, another thread pool still
    spinning); after ``timed`` timed calls of each, the way with the shortest best time is kept for
    that key (on a shared machine interference only ever adds time, so the best of a few calls is
    steadier than their median); of ways within ``tie`` (a share) of the fastest, the first is kept.
    With two ways, way 1 is also ``True`` and way 0 ``False``."""

    def __init__(self, timed: int = TUNING_CALLS, ways: int = 2, tie: float = TIE) -> None:
        if ways < 1:
            raise ValueError(f"ways must be at least 1, got {ways}")
        if not 0 <= tie < 1:
            raise ValueError(f"tie must be in [0, 1), got {tie}")
        self.timed = timed
        self.ways = ways
        self.tie = tie
        self._best: dict[Any, list[float]] = {}
        self._timings: dict[Any, list[list[float]]] = {}
        self._calls: dict[Any, int] = {}
        self._chosen: dict[Any, int] = {}

    @property
    def calls_to_decide(self) -> int:
        """Calls of a key with the default number of ways before its way is kept."""
        return self.calls_for(self.ways)

    def calls_for(self, ways: int) -> int:
        """Calls of a key with ``ways`` ways before its way is kept."""
        return 2 * ways * self.timed if ways > 1 else 0

    def choice(self, key: Any) -> int | None:
        """The way kept for ``key``; None while undecided."""
        return self._chosen.get(key)

    def kept(self) -> dict[Any, int]:
        """Every key decided so far and its way."""
        return dict(self._chosen)

    def best_times(self) -> dict[Any, list[float]]:
        """Per key decided by timing: each way's best time, in seconds."""
        return {key: list(times) for key, times in self._best.items()}

    def decide(self, key: Any, way: int) -> None:
        """Keep a way for ``key`` without timing (when only one is possible there)."""
        self._chosen[key] = int(way)

    def run(self, key: Any, call: Callable[[int], Any], ways: int | None = None) -> Any:
        """``call(way)`` with the way kept for ``key``, or, while tuning, with the way whose turn it is;
        ``ways``: how many there are for this key (the tuner's own number by default; one is kept at once)."""
        ways = self.ways if ways is None else ways
        if key not in self._chosen and ways <= 1:
            self._chosen[key] = 0
        if key in self._chosen:
            return call(self._chosen[key])
        index = self._calls.get(key, 0)
        self._calls[key] = index + 1
        way = index // 2 % ways
        start = time.perf_counter()
        out = call(way)
        if index % 2:
            timings = self._timings.setdefault(key, [[] for _ in range(ways)])
            timings[way].append(time.perf_counter() - start)
            if len(timings[-1]) >= self.timed:
                best = self._best[key] = [min(t) for t in timings]
                self._chosen[key] = next(i for i, b in enumerate(best) if b <= min(best) * (1 + self.tie))
                del self._timings[key], self._calls[key]
        return out
