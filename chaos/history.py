"""The queue workload's history: events, and the thread-safe recorder clients write to.

Owns: the history events (``Send``, ``Poll``, ``Commit``, the consumer markers
``Seek``/``Rebalance``/``Assign``, and ``FinalRead``) and ``QueueHistory``. Pure and
synchronous: no trio, no I/O, so any test or tool records a history however it likes and
``chaos.checker.check`` reads it afterwards.

Values must be unique per send (the workload makes them so); that is what lets a read be
traced back to its send.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "FAILED",
    "TP",
    "UNKNOWN",
    "Acked",
    "Assign",
    "Commit",
    "Event",
    "FinalRead",
    "MalformedHistoryError",
    "Poll",
    "QueueHistory",
    "Rebalance",
    "Records",
    "Seek",
    "Send",
    "SendOutcome",
    "Unacked",
]

TP = tuple[str, int]
Records = Mapping[TP, Sequence[tuple[int, Hashable]]]


class MalformedHistoryError(ValueError):
    """The history itself is wrong (completion before invocation, a negative offset, ...)."""


@dataclass(frozen=True, slots=True)
class Acked:
    """The broker acknowledged the send: the record is at ``offset`` of ``partition``."""

    offset: int
    partition: int


class Unacked(enum.Enum):
    FAILED = "failed"
    """Definitely not written (refused before it was sent, or a non-retriable error)."""
    UNKNOWN = "unknown"
    """Timeout, lost connection, still in flight when the history was taken: maybe written."""


FAILED = Unacked.FAILED
UNKNOWN = Unacked.UNKNOWN
SendOutcome = Acked | Unacked


@dataclass(frozen=True, slots=True)
class Send:
    process: int
    topic: str
    key: Hashable
    value: Hashable
    invoked_at: float
    completed_at: float | None
    outcome: SendOutcome


@dataclass(frozen=True, slots=True)
class Poll:
    """One successful ``poll()`` of one consumer: per partition, records in offset order."""

    process: int
    invoked_at: float
    completed_at: float
    records: Records


@dataclass(frozen=True, slots=True)
class Seek:
    """``seek(tp, offset)``; ``offset=None`` for seek_to_beginning/end (target unknown)."""

    process: int
    at: float
    topic: str
    partition: int
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Rebalance:
    """The group moved partitions; ``partitions=None`` means any of this consumer's.

    ``group``: the consumer group of the member (None for a marker without one); a process
    with a group marker or commit is a member of that group for the group-skip check."""

    process: int
    at: float
    partitions: frozenset[TP] | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """A consumer-group member's acknowledged commit: ``offsets`` are the next offsets to
    read (Kafka's committed position), per partition. Failed commits are not recorded."""

    process: int
    group: str
    invoked_at: float
    completed_at: float
    offsets: Mapping[TP, int]


@dataclass(frozen=True, slots=True)
class Assign:
    """A manual ``assign()``: every position of this consumer may restart anywhere."""

    process: int
    at: float
    partitions: frozenset[TP] = frozenset()


@dataclass(frozen=True, slots=True)
class FinalRead:
    """One client read every partition in ``records`` from offset 0 to the end."""

    process: int
    invoked_at: float
    completed_at: float
    records: Records


Event = Send | Poll | Seek | Rebalance | Assign | FinalRead | Commit


@runtime_checkable
class _RecordLike(Protocol):
    """What ``client.types.ConsumerRecord`` offers."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> Any: ...


def _normalized(records: Mapping[Any, Iterable[Any]]) -> dict[TP, tuple[tuple[int, Hashable], ...]]:
    """(topic, partition) -> ((offset, value), ...) from pairs or ConsumerRecord-likes."""
    out: dict[TP, tuple[tuple[int, Hashable], ...]] = {}
    for tp, recs in records.items():
        topic, partition = tp
        pairs: list[tuple[int, Hashable]] = []
        for record in recs:
            if isinstance(record, _RecordLike):
                pairs.append((record.offset, record.value))
            else:
                offset, value = record
                pairs.append((offset, value))
        out[(topic, partition)] = tuple(pairs)
    return out


@dataclass(slots=True)
class QueueHistory:
    """Records a queue history as clients run. Safe to call from any thread.

    ``clock`` is one clock for every client (e.g. ``time.monotonic``). Sends: ``send`` returns
    a handle, then exactly one of ``send_ok`` / ``send_failed`` / ``send_unknown`` (sends still
    open when ``history()`` is taken count as unknown). Call ``send_failed`` only when the
    record certainly was not written; a timeout is ``send_unknown``. Polls: ``poll`` after it
    returned, with the time it was called. Record ``seek``/``rebalance``/``assign`` before the
    next poll they affect, and end with ``final_read`` from every partition's beginning.
    """

    clock: Callable[[], float]
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _events: list[tuple[int, Event]] = field(default_factory=list, init=False)
    _open: dict[int, tuple[int, str, Hashable, Hashable, float]] = field(
        default_factory=dict, init=False
    )
    _next: int = field(default=0, init=False)

    def _append(self, event: Event, handle: int | None = None) -> None:
        # Callers hold the lock. Order of appends is the per-consumer order the check uses.
        if handle is None:
            handle, self._next = self._next, self._next + 1
        self._events.append((handle, event))

    def send(self, process: int, topic: str, key: Hashable, value: Hashable) -> int:
        with self._lock:
            handle, self._next = self._next, self._next + 1
            self._open[handle] = (process, topic, key, value, self.clock())
            return handle

    def _finish(self, handle: int, outcome: SendOutcome) -> None:
        with self._lock:
            process, topic, key, value, invoked_at = self._open.pop(handle)
            done = None if outcome is UNKNOWN else self.clock()
            send = Send(process, topic, key, value, invoked_at, done, outcome)
            self._append(send, handle)

    def send_ok(self, handle: int, *, partition: int, offset: int) -> None:
        self._finish(handle, Acked(offset, partition))

    def send_failed(self, handle: int) -> None:
        self._finish(handle, FAILED)

    def send_unknown(self, handle: int) -> None:
        self._finish(handle, UNKNOWN)

    def poll(self, process: int, invoked_at: float, records: Mapping[Any, Iterable[Any]]) -> None:
        """``records``: what ``poll()`` returned ({TopicPartition: [ConsumerRecord]} works)."""
        normalized = _normalized(records)
        with self._lock:
            self._append(Poll(process, invoked_at, self.clock(), normalized))

    def seek(self, process: int, topic: str, partition: int, offset: int | None = None) -> None:
        with self._lock:
            self._append(Seek(process, self.clock(), topic, partition, offset))

    def rebalance(
        self, process: int, partitions: Iterable[TP] | None = None, group: str | None = None
    ) -> None:
        parts = None if partitions is None else frozenset((t, p) for t, p in partitions)
        with self._lock:
            self._append(Rebalance(process, self.clock(), parts, group))

    def commit(
        self, process: int, group: str, invoked_at: float, offsets: Mapping[Any, int]
    ) -> None:
        """An acknowledged commit; ``offsets``: {(topic, partition) or TopicPartition: next}."""
        normalized = {(t, p): int(o) for (t, p), o in offsets.items()}
        with self._lock:
            self._append(Commit(process, group, invoked_at, self.clock(), normalized))

    def assign(self, process: int, partitions: Iterable[TP]) -> None:
        parts = frozenset((t, p) for t, p in partitions)
        with self._lock:
            self._append(Assign(process, self.clock(), parts))

    def final_read(
        self, process: int, invoked_at: float, records: Mapping[Any, Iterable[Any]]
    ) -> None:
        """``records`` must hold every partition read, with an empty list for empty ones."""
        normalized = _normalized(records)
        with self._lock:
            self._append(FinalRead(process, invoked_at, self.clock(), normalized))

    def history(self) -> list[Event]:
        with self._lock:
            unfinished: list[tuple[int, Event]] = [
                (h, Send(p, topic, key, value, at, None, UNKNOWN))
                for h, (p, topic, key, value, at) in self._open.items()
            ]
            return [e for _, e in sorted([*self._events, *unfinished], key=lambda he: he[0])]
