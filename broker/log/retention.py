"""Which leading segments retention deletes (a pure policy), and their deferred unlink.

Kafka's rules: a segment expires by time when its largest timestamp is older than
``retention.ms``; by size, leading segments go while the log stays at or above
``retention.bytes`` without them. The active (last) segment is never a candidate, and
nothing is deleted unless ``cleanup.policy`` contains ``delete``.

``PendingDeletes`` holds segments renamed to ``*.deleted`` (by retention or truncation)
until ``file.delete.delay.ms`` passed: their fds stay open for in-flight ``sendfile``s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from broker.log.config import LogConfig
from broker.log.segment import LogSegment

__all__ = ["PendingDeletes", "count_expired_segments"]


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


class PendingDeletes:
    """Segments renamed for deletion, each with the time its files may go."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[tuple[int, LogSegment]] = []

    def __len__(self) -> int:
        return len(self._items)

    def schedule(self, doomed: Sequence[LogSegment], due_ms: int) -> None:
        """Rename ``doomed``'s files to ``*.deleted`` (OSError propagates)."""
        for seg in doomed:
            seg.rename_for_delete()
            self._items.append((due_ms, seg))

    def delete_expired(self, now_ms: int) -> int:
        """Close and unlink the segments that are due; returns how many."""
        keep: list[tuple[int, LogSegment]] = []
        done = 0
        for due, seg in self._items:
            if due <= now_ms:
                seg.close()
                seg.unlink(deleted=True)
                done += 1
            else:
                keep.append((due, seg))
        self._items = keep
        return done

    def close_all(self, *, unlink: bool) -> None:
        for _due, seg in self._items:
            seg.close()
            if unlink:
                seg.unlink(deleted=True)
        self._items = []
