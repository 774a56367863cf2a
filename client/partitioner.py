"""Kafka's default partitioner: murmur2 for keyed records, sticky for keyless ones.

``murmur2`` is a bit-exact port of Kafka's ``Utils.murmur2`` (seed 0x9747b28c), so a key
lands in the same partition as with Kafka's Java client. Pure functions and a small
state object; no I/O, no locking (the producer calls it under its own lock).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["StickyPartitioner", "keyed_partition", "murmur2"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as a signed 32-bit int (what Java returns)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    length4 = length & ~3
    for i in range(0, length4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    extra = length & 3
    if extra == 3:
        h ^= data[length4 + 2] << 16
    if extra >= 2:
        h ^= data[length4 + 1] << 8
    if extra >= 1:
        h ^= data[length4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def keyed_partition(key: bytes, num_partitions: int) -> int:
    """``(murmur2(key) & 0x7fffffff) % num_partitions``, as Kafka's BuiltInPartitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


class StickyPartitioner:
    """Keyless records stay on one partition per topic until its batch is sealed.

    ``current(topic, ...)`` returns the sticky partition, choosing one at random among the
    available partitions (those with a known leader) the first time; ``batch_sealed``
    makes the next keyless record pick a new one, different from the last when possible.
    """

    __slots__ = ("_previous", "_rng", "_sticky")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._sticky: dict[str, int] = {}
        self._previous: dict[str, int] = {}
        self._rng = rng or random.Random()

    def current(self, topic: str, num_partitions: int, available: Sequence[int]) -> int:
        p = self._sticky.get(topic)
        if p is None or p >= num_partitions:
            p = self._choose(num_partitions, available, self._previous.get(topic))
            self._sticky[topic] = p
        return p

    def batch_sealed(self, topic: str, partition: int) -> None:
        """The batch of ``partition`` was sealed: switch if it was the sticky one."""
        if self._sticky.get(topic) == partition:
            del self._sticky[topic]
            self._previous[topic] = partition

    def _choose(self, num_partitions: int, available: Sequence[int], avoid: int | None) -> int:
        pool: Sequence[int] = available if available else range(num_partitions)
        if len(pool) == 1:
            return pool[0]
        while True:
            p = pool[self._rng.randrange(len(pool))]
            if p != avoid:
                return p
