"""Long-polling fetches wait here until data arrives on one of their partitions.

Kafka calls this the fetch purgatory. A waiting fetch registers one event under each of its
partitions; an append to a partition sets every event registered under it. The cost of an
append with nobody waiting is one dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

TopicPartitionKey = tuple[str, int]


class FetchPurgatory:
    def __init__(self) -> None:
        self._waiters: dict[TopicPartitionKey, set[trio.Event]] = {}

    def notify(self, key: TopicPartitionKey) -> None:
        waiters = self._waiters.pop(key, None)
        if waiters:
            for event in waiters:
                event.set()

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def wait_any(self, keys: Iterable[TopicPartitionKey], timeout_s: float) -> bool:
        """Wait until one of ``keys`` gets data or ``timeout_s`` passes; True if woken."""
        event = trio.Event()
        keys = list(keys)
        for key in keys:
            self._waiters.setdefault(key, set()).add(event)
        try:
            with trio.move_on_after(timeout_s):
                await event.wait()
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]
        return event.is_set()
