"""Rolling average handle time and the estimated-wait formula.

The history is plain data (a list of `[completed_at, seconds]` pairs) so the adapter can
persist it and a replica that takes a queue over starts with the same estimate instead of
resetting to a default, which is what the open-source anchors do.
"""

from __future__ import annotations

import math
from collections import deque


class HandleTimeHistory:
    """Handle times (talk + wrap-up) of calls completed within the last `window` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def add(self, completed_at: float, seconds: float) -> None:
        self._samples.append((completed_at, max(seconds, 0.0)))
        self._total += max(seconds, 0.0)

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        samples = self._samples
        while samples and samples[0][0] <= horizon:
            _, seconds = samples.popleft()
            self._total -= seconds
        if not samples:
            # Reset so float error from many add/subtract cycles cannot accumulate.
            self._total = 0.0

    def average(self, now: float) -> float | None:
        self._prune(now)
        if not self._samples:
            return None
        return self._total / len(self._samples)

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._samples)

    def snapshot(self) -> list[list[float]]:
        return [[completed_at, seconds] for completed_at, seconds in self._samples]

    @classmethod
    def restore(cls, window: float, samples: list[list[float]]) -> HandleTimeHistory:
        history = cls(window)
        for completed_at, seconds in samples:
            history.add(float(completed_at), float(seconds))
        return history


def estimate_wait(
    position: int, serving_agents: int, available_agents: int, average_handle_time: float
) -> float | None:
    """Expected seconds until the caller at 1-based `position` reaches an agent.

    Callers within the first `available_agents` places are being offered to an idle agent
    and wait ~0. Everyone else needs `position - available_agents` calls to finish; with
    `serving_agents` agents each finishing a call every `average_handle_time` seconds on
    average, calls finish at a rate of serving/AHT, so the expected wait is
    (position - available) * AHT / serving (exact for exponential handle times, where the
    time left on a call in progress has the same mean as a whole call). None when nobody
    serves the queue: there is no honest number to announce.
    """
    if serving_agents <= 0:
        return None
    ahead = position - available_agents
    if ahead <= 0:
        return 0.0
    return ahead * average_handle_time / serving_agents


def whole_seconds(wait: float | None) -> int | None:
    return None if wait is None else math.ceil(wait)
