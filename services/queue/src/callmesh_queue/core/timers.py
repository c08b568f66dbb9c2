"""A heap of deadlines with lazy cancellation.

Items are ordered by (time, kind, key, subkey) only, never by insertion order, so an engine
rebuilt from a snapshot (which re-pushes its deadlines in a different order) fires timers
that fall due together in exactly the same order as the original would have. Cancelling is
lazy: the engine keeps the authoritative deadline on its records and skips an item whose
record no longer carries that deadline.
"""

from __future__ import annotations

import enum
import heapq


class TimerKind(enum.IntEnum):
    # Lower value fires first among timers due at the same instant: agents freed by the end
    # of wrap-up are visible before offers time out, and announcements come last so they
    # describe the state after everything else that happened at that instant.
    WRAP_UP_END = 0
    RING_TIMEOUT = 1
    CASCADE_STEP = 2
    ENTRY_READY = 3
    MAX_WAIT = 4
    GIVE_UP = 5
    ANNOUNCE = 6


TimerItem = tuple[float, TimerKind, str, str]


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[TimerItem] = []

    def push(self, when: float, kind: TimerKind, key: str, subkey: str = "") -> None:
        heapq.heappush(self._heap, (when, kind, key, subkey))

    def peek(self) -> TimerItem | None:
        return self._heap[0] if self._heap else None

    def pop(self) -> TimerItem:
        return heapq.heappop(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def clear(self) -> None:
        self._heap.clear()
