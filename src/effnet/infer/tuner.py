"""First-call tuning: of two ways to compute the same thing, keep the one that ran faster here.

The fast path uses it twice: whole batch or early stages in chunks (:mod:`effnet.infer.chunks`),
and in ONNX Runtime one multi-threaded run or the batch split between one-thread runs
(:class:`effnet.infer.ort.OrtModule`). Which wins depends on the CPU, so it is timed per input shape."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

#: Timed calls per candidate (each after an untimed one) before the faster way is kept for a shape.
TUNING_CALLS = 4


class ShapeTuner:
    """Picks, per input key, the faster of two ways to compute the same thing. The first calls run
    the two ways in turn, two calls at a time, and time the second of each pair (the first absorbs
    what the other way left behind: cold caches, another thread pool still spinning); after
    ``timed`` timed calls of each, the way with the shorter median is kept for that key."""

    def __init__(self, timed: int = TUNING_CALLS) -> None:
        self.timed = timed
        self._timings: dict[Any, tuple[list[float], list[float]]] = {}
        self._calls: dict[Any, int] = {}
        self._chosen: dict[Any, bool] = {}

    @property
    def calls_to_decide(self) -> int:
        """Calls of a key before its way is kept."""
        return 4 * self.timed

    def choice(self, key: Any) -> bool | None:
        """The way kept for ``key`` (False: the first, True: the second); None while undecided."""
        return self._chosen.get(key)

    def kept(self) -> dict[Any, bool]:
        """Every key decided so far and its way (True: the second)."""
        return dict(self._chosen)

    def decide(self, key: Any, second: bool) -> None:
        """Keep a way for ``key`` without timing (when only one is possible there)."""
        self._chosen[key] = second

    def run(self, key: Any, call: Callable[[bool], Any]) -> Any:
        """``call(second)`` with the way kept for ``key``, or, while tuning, with the way whose turn it is."""
        if key in self._chosen:
            return call(self._chosen[key])
        index = self._calls.get(key, 0)
        self._calls[key] = index + 1
        use_second = bool(index // 2 % 2)
        start = time.perf_counter()
        out = call(use_second)
        if index % 2:
            first, second = self._timings.setdefault(key, ([], []))
            (second if use_second else first).append(time.perf_counter() - start)
            if len(second) >= self.timed:
                self._chosen[key] = statistics.median(second) < statistics.median(first)
                del self._timings[key], self._calls[key]
        return out
