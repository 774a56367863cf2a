"""The group timers of one broker: one task sleeping until the earliest group deadline.

Every call into a group may move its ``next_deadline_ms`` (a heartbeat pushes a session
deadline back, a join starts a rebalance timer), so the runtime ``schedule``s the group
after each one. Deadlines go into a heap and are checked lazily: an entry whose group has
since moved its deadline, been deleted or unloaded is dropped when it reaches the top,
so a call costs one push and a wake-up costs only the groups that are due.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

import trio

from broker.group_coordinator.partition import LoadedGroup, OffsetsPartition

__all__ = ["GroupTimers"]

_Entry = tuple[int, int, OffsetsPartition, LoadedGroup]


class GroupTimers:
    def __init__(self, is_current: Callable[[OffsetsPartition, LoadedGroup], bool]) -> None:
        self._is_current = is_current  # still loaded and still this group object
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._changed = trio.Event()
        self._wake_at: float = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, part: OffsetsPartition, entry: LoadedGroup) -> None:
        deadline = entry.group.next_deadline_ms()
        if deadline is None:
            return
        heapq.heappush(self._heap, (deadline, next(self._seq), part, entry))
        if deadline < self._wake_at:
            self._changed.set()

    def _valid(self, item: _Entry) -> bool:
        deadline, _, part, entry = item
        return self._is_current(part, entry) and entry.group.next_deadline_ms() == deadline

    async def run(
        self,
        now_ms: Callable[[], int],
        fire: Callable[[OffsetsPartition, LoadedGroup, int], None],
    ) -> None:
        """Forever: sleep until the earliest deadline, then ``fire`` each due group (the
        runtime ticks it and schedules it again)."""
        while True:
            while self._heap and not self._valid(self._heap[0]):
                heapq.heappop(self._heap)
            deadline = self._heap[0][0] if self._heap else None
            self._changed = trio.Event()
            self._wake_at = math.inf if deadline is None else deadline
            with trio.move_on_at(self._wake_at / 1000) as scope:
                await self._changed.wait()
            now = now_ms()
            if scope.cancelled_caught and deadline is not None:
                now = max(now, deadline)  # float rounding: trio woke us at the deadline
            while self._heap and self._heap[0][0] <= now:
                item = heapq.heappop(self._heap)
                if self._valid(item):
                    fire(item[2], item[3], now)
