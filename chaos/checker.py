"""A Jepsen-style checker for the queue workload: ``check(history) -> QueueReport``.

Looks for the anomalies of REFERENCE.md section 8 in a history recorded with
``chaos.history.QueueHistory``, plus the consumer-group one (records a group skipped).
Pure and synchronous like ``tests.checkers.register``: no trio, no I/O; ``minibroker
chaos`` and the fault tests call it on what their clients recorded.

A violation of the workload's assumptions (a value sent twice, a value read that was never
sent) is a workload error, not an anomaly. Lost and unseen writes are only meaningful if
the history ends with final reads of every partition from the beginning; without them,
acknowledged values that nobody polled are reported too.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from chaos.checker_report import (
    MAX_EXAMPLES,
    AbortedRead,
    Anomaly,
    AnomalyKind,
    Duplicate,
    GroupSkip,
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
from chaos.group_check import group_skips
from chaos.history import (
    FAILED,
    TP,
    UNKNOWN,
    Acked,
    Assign,
    Commit,
    Event,
    FinalRead,
    MalformedHistoryError,
    Poll,
    QueueHistory,
    Rebalance,
    Seek,
    Send,
    SendOutcome,
    Unacked,
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
    "Commit",
    "Duplicate",
    "Event",
    "FinalRead",
    "GroupSkip",
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
        elif isinstance(event, Commit):
            times = (event.invoked_at, event.completed_at)
            if any(p < 0 or o < 0 for (_, p), o in event.offsets.items()):
                raise MalformedHistoryError(f"negative offset in a commit: {event}")
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
    known = {tp: sorted(offsets) for tp, offsets in existing.items()}
    _check_consumers(events, known, found)
    for skip in group_skips(events, known):
        found.add(skip)
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
        if isinstance(event, Send | Commit):
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
        commits=sum(isinstance(e, Commit) for e in events),
    )
