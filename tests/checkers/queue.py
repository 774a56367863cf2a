"""A Jepsen-style checker for the queue workload: history model, recorder, anomaly search.

Owns: the history events (``Send``, ``Poll``, the consumer markers ``Seek``/``Rebalance``/
``Assign``, and ``FinalRead``), the thread-safe ``QueueHistory`` recorder, and
``check(history) -> QueueReport``, which looks for the anomalies of REFERENCE.md section 8.
Pure and synchronous like ``register``: no trio, no I/O, so any test or tool records a
history however it likes and checks it afterwards.

Values must be unique per send (the workload makes them so); that is what lets a read be
traced back to its send. A violation is a workload error, not an anomaly. Lost and unseen
writes are only meaningful if the history ends with final reads of every partition from the
beginning; without them, acknowledged values that nobody polled are reported too.
"""

from __future__ import annotations

import enum
import math
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tests.checkers.queue_report import (
    MAX_EXAMPLES,
    AbortedRead,
    Anomaly,
    AnomalyKind,
    Duplicate,
    InconsistentOffset,
    LostWrite,
    NonmonotonicPoll,
    OffsetMismatch,
    QueueReport,
    QueueStats,
    SkippedOffsets,
    Unseen,
    WorkloadError,
)

__all__ = [
    "FAILED",
    "MAX_EXAMPLES",
    "UNKNOWN",
    "AbortedRead",
    "Acked",
    "Anomaly",
    "AnomalyKind",
    "Assign",
    "Duplicate",
    "Event",
    "FinalRead",
    "InconsistentOffset",
    "LostWrite",
    "MalformedHistoryError",
    "NonmonotonicPoll",
    "OffsetMismatch",
    "Poll",
    "QueueHistory",
    "QueueReport",
    "QueueStats",
    "Rebalance",
    "Seek",
    "Send",
    "SendOutcome",
    "SkippedOffsets",
    "Unacked",
    "Unseen",
    "WorkloadError",
    "check",
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
    """The group moved partitions; ``partitions=None`` means any of this consumer's."""

    process: int
    at: float
    partitions: frozenset[TP] | None = None


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


Event = Send | Poll | Seek | Rebalance | Assign | FinalRead


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

    def rebalance(self, process: int, partitions: Iterable[TP] | None = None) -> None:
        parts = None if partitions is None else frozenset((t, p) for t, p in partitions)
        with self._lock:
            self._append(Rebalance(process, self.clock(), parts))

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


# --- the check -----------------------------------------------------------------------------

Where = tuple[str, int, int]  # (topic, partition, offset)


@dataclass(slots=True)
class _Findings:
    """Anomalies and workload errors as found, kept in history order."""

    anomalies: dict[AnomalyKind, list[Anomaly]] = field(
        default_factory=lambda: {kind: [] for kind in AnomalyKind}
    )
    workload: list[WorkloadError] = field(default_factory=list)

    def add(self, anomaly: Anomaly) -> None:
        self.anomalies[anomaly.kind].append(anomaly)


def _validated(history: Iterable[Event]) -> list[Event]:
    events = list(history)
    for event in events:
        if isinstance(event, Send):
            times = (event.invoked_at, event.completed_at)
            if (
                isinstance(event.outcome, Acked)
                and min(event.outcome.offset, event.outcome.partition) < 0
            ):
                raise MalformedHistoryError(
                    f"acknowledged without an offset (acks=0? record it as unknown): {event}"
                )
        elif isinstance(event, Poll | FinalRead):
            times = (event.invoked_at, event.completed_at)
            for (topic, partition), recs in event.records.items():
                if partition < 0 or any(offset < 0 for offset, _ in recs):
                    raise MalformedHistoryError(f"negative offset in {topic}-{partition}: {event}")
        else:
            times = (event.at, None)
        if not math.isfinite(times[0]):
            raise MalformedHistoryError(f"time must be finite: {event}")
        if times[1] is not None and times[1] < times[0]:
            raise MalformedHistoryError(f"completed before it was invoked: {event}")
    return events


def check(history: Iterable[Event]) -> QueueReport:
    """Look for every anomaly kind of REFERENCE.md section 8 in ``history``.

    Each consumer's events are taken in history order (the recorder's call order); times are
    only reported, never used to order anything.
    """
    events = _validated(history)
    found = _Findings()
    sends: dict[Hashable, Send] = {}
    seen_at: dict[Where, dict[Hashable, list[str]]] = {}  # offset -> value -> who saw it
    read_at: dict[Hashable, list[Where]] = {}  # value -> offsets it was read at
    highest_read: dict[TP, int] = {}
    existing: dict[TP, set[int]] = {}
    for event in events:
        if isinstance(event, Send):
            if event.value in sends:
                found.workload.append(WorkloadError("value sent twice", event.value))
                continue
            sends[event.value] = event
            if isinstance(event.outcome, Acked):
                where = (event.topic, event.outcome.partition, event.outcome.offset)
                _saw(seen_at, where, event.value, f"ack p{event.process}")
                existing.setdefault(where[:2], set()).add(where[2])
        elif isinstance(event, Poll | FinalRead):
            who = f"{'poll' if isinstance(event, Poll) else 'final'} p{event.process}"
            for (topic, partition), recs in event.records.items():
                for offset, value in recs:
                    where = (topic, partition, offset)
                    _saw(seen_at, where, value, who)
                    places = read_at.setdefault(value, [])
                    if where not in places:
                        places.append(where)
                    existing.setdefault((topic, partition), set()).add(offset)
                    highest_read[(topic, partition)] = max(
                        offset, highest_read.get((topic, partition), -1)
                    )
    for value in read_at:
        if value not in sends:
            found.workload.append(WorkloadError("value never sent", value))
    _check_offsets(seen_at, read_at, found)
    _check_sends(sends, read_at, seen_at, highest_read, found)
    _check_consumers(events, {tp: sorted(offsets) for tp, offsets in existing.items()}, found)
    return QueueReport.build(found.anomalies, found.workload, _stats(events, sends, read_at))


def _saw(
    seen_at: dict[Where, dict[Hashable, list[str]]], where: Where, value: Hashable, who: str
) -> None:
    sources = seen_at.setdefault(where, {}).setdefault(value, [])
    if who not in sources:
        sources.append(who)


def _check_offsets(
    seen_at: dict[Where, dict[Hashable, list[str]]],
    read_at: dict[Hashable, list[Where]],
    found: _Findings,
) -> None:
    for (topic, partition, offset), values in seen_at.items():
        if len(values) > 1:
            shown = tuple((value, tuple(who)) for value, who in values.items())
            found.add(InconsistentOffset(topic, partition, offset, shown))
    for value, places in read_at.items():
        if len(places) > 1:
            found.add(Duplicate(value, tuple(places)))


def _check_sends(
    sends: dict[Hashable, Send],
    read_at: dict[Hashable, list[Where]],
    seen_at: dict[Where, dict[Hashable, list[str]]],
    highest_read: dict[TP, int],
    found: _Findings,
) -> None:
    for value, send in sends.items():
        places = read_at.get(value)
        if send.outcome is FAILED and places:
            topic, partition, offset = places[0]
            readers = tuple(seen_at[places[0]][value])
            found.add(AbortedRead(value, topic, partition, offset, readers))
        if not isinstance(send.outcome, Acked):
            continue
        acked = (send.topic, send.outcome.partition, send.outcome.offset)
        if places is None:
            highest = highest_read.get(acked[:2])
            if highest is not None and highest > acked[2]:
                found.add(LostWrite(value, *acked, highest))
            else:
                found.add(Unseen(value, *acked, highest))
        elif acked not in places:
            found.add(OffsetMismatch(value, acked, tuple(places)))


def _check_consumers(
    events: Sequence[Event], existing: Mapping[TP, Sequence[int]], found: _Findings
) -> None:
    """Replay each consumer's position per partition; a final read starts before offset 0.

    ``position[tp]`` is the last offset the consumer read (or seeked to, minus one); a
    partition missing from it may legitimately continue anywhere.
    """
    positions: dict[int, dict[TP, int]] = {}
    for event in events:
        if isinstance(event, Send):
            continue
        if isinstance(event, FinalRead):
            position: dict[TP, int] = dict.fromkeys(event.records, -1)
        else:
            position = positions.setdefault(event.process, {})
        if isinstance(event, Seek):
            tp = (event.topic, event.partition)
            if event.offset is None:
                position.pop(tp, None)
            else:
                position[tp] = event.offset - 1
        elif isinstance(event, Rebalance) and event.partitions is not None:
            for tp in event.partitions:
                position.pop(tp, None)
        elif isinstance(event, Rebalance | Assign):
            position.clear()
        else:
            for tp, recs in event.records.items():
                for offset, _ in recs:
                    _step(event, tp, position.get(tp), offset, existing.get(tp, ()), found)
                    position[tp] = offset


def _step(
    event: Poll | FinalRead,
    tp: TP,
    previous: int | None,
    offset: int,
    existing: Sequence[int],
    found: _Findings,
) -> None:
    if previous is None:
        return
    if offset <= previous:
        found.add(NonmonotonicPoll(event.process, *tp, previous, offset, event.invoked_at))
    elif offset > previous + 1:
        skipped = _between(existing, previous, offset)
        if skipped:
            found.add(
                SkippedOffsets(
                    event.process,
                    *tp,
                    previous,
                    offset,
                    tuple(skipped[:10]),
                    len(skipped),
                    event.invoked_at,
                )
            )


def _between(offsets: Sequence[int], low: int, high: int) -> Sequence[int]:
    """The sorted ``offsets`` strictly between ``low`` and ``high``."""
    return offsets[bisect_right(offsets, low) : bisect_left(offsets, high)]


def _stats(
    events: Sequence[Event], sends: Mapping[Hashable, Send], read_at: Mapping[Hashable, object]
) -> QueueStats:
    polls = [e for e in events if isinstance(e, Poll)]
    finals = [e for e in events if isinstance(e, FinalRead)]
    outcomes = [s.outcome for s in sends.values()]
    partitions = {
        (s.topic, s.outcome.partition) for s in sends.values() if isinstance(s.outcome, Acked)
    }
    reads: list[Poll | FinalRead] = [*polls, *finals]
    for read in reads:
        partitions.update(read.records)
    return QueueStats(
        sends=len(outcomes),
        acked=sum(isinstance(o, Acked) for o in outcomes),
        failed=outcomes.count(FAILED),
        unknown=outcomes.count(UNKNOWN),
        unknown_read=sum(s.outcome is UNKNOWN and v in read_at for v, s in sends.items()),
        polls=len(polls),
        records_polled=sum(len(r) for e in polls for r in e.records.values()),
        final_reads=len(finals),
        records_final=sum(len(r) for e in finals for r in e.records.values()),
        partitions=len(partitions),
    )
