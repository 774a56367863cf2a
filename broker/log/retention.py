"""Which leading segments retention deletes: a pure policy, no files touched.

Kafka's rules: a segment expires by time when its largest timestamp is older than
``retention.ms``; by size, leading segments go while the log stays at or above
``retention.bytes`` without them. The active (last) segment is never a candidate, and
nothing is deleted unless ``cleanup.policy`` contains ``delete``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from broker.log.config import LogConfig

__all__ = ["count_expired_segments"]


class _Sized(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def largest_timestamp(self) -> int: ...


def count_expired_segments(segments: Sequence[_Sized], config: LogConfig, now_ms: int) -> int:
    """How many segments, from the oldest, retention deletes at ``now_ms``."""
    if not config.delete_enabled:
        return 0
    candidates = segments[:-1]
    count = 0
    if config.retention_ms >= 0:
        for seg in candidates:
            if now_ms - seg.largest_timestamp <= config.retention_ms:
                break
            count += 1
    if config.retention_bytes >= 0:
        excess = sum(s.size for s in segments[count:]) - config.retention_bytes
        for seg in candidates[count:]:
            if excess - seg.size < 0:
                break
            excess -= seg.size
            count += 1
    return count
