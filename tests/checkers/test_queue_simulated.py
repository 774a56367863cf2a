"""The queue checker against simulated correct logs, with one anomaly injected at a time."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.checkers.queue import (
    FAILED,
    UNKNOWN,
    AbortedRead,
    Acked,
    Anomaly,
    AnomalyKind,
    Assign,
    Duplicate,
    Event,
    FinalRead,
    GroupSkip,
    InconsistentOffset,
    LostWrite,
    NonmonotonicPoll,
    OffsetMismatch,
    Poll,
    Rebalance,
    Seek,
    Send,
    SendOutcome,
    SkippedOffsets,
    Unseen,
    check,
)

T0, T1 = ("t", 0), ("t", 1)


# --- simulated correct logs -------------------------------------------------------------


@dataclass
class SimulatedLog:
    """A correct log with consumers; ``events`` is the history it would record."""

    rng: random.Random
    tps: list[tuple[str, int]]
    logs: dict[tuple[str, int], list[Hashable]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    positions: dict[int, dict[tuple[str, int], int]] = field(default_factory=dict)
    now: float = 0.0
    next_value: int = 0

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def send(self, outcome: str | None = None, tp: tuple[str, int] | None = None) -> None:
        tp = tp or self.rng.choice(self.tps)
        log = self.logs.setdefault(tp, [])
        value, self.next_value = self.next_value, self.next_value + 1
        outcome = outcome or self.rng.choices(["ok", "failed", "unknown"], [7, 1, 2])[0]
        written = outcome == "ok" or (outcome == "unknown" and self.rng.random() < 0.5)
        if written:
            log.append(value)
        result: SendOutcome = UNKNOWN
        if outcome != "unknown":
            result = Acked(len(log) - 1, tp[1]) if outcome == "ok" else FAILED
        at = self.tick()
        done = None if result is UNKNOWN else self.tick()
        self.events.append(Send(self.rng.randrange(3), tp[0], None, value, at, done, result))

    def poll(self, consumer: int) -> None:
        position = self.positions.setdefault(consumer, {})
        records: dict[tuple[str, int], list[tuple[int, Hashable]]] = {}
        for tp in self.rng.sample(self.tps, self.rng.randint(1, len(self.tps))):
            start = position.setdefault(tp, 0)
            log = self.logs.get(tp, [])
            taken = log[start : start + self.rng.randint(1, 4)]
            if taken:
                records[tp] = [(start + i, v) for i, v in enumerate(taken)]
                position[tp] = start + len(taken)
        self.events.append(Poll(consumer, self.tick(), self.tick(), records))

    def seek(self, consumer: int) -> None:
        position = self.positions.setdefault(consumer, {})
        tp = self.rng.choice(self.tps)
        end = len(self.logs.get(tp, []))
        offset = self.rng.randint(0, end)
        known = self.rng.random() < 0.7
        position[tp] = offset if known else self.rng.choice([0, end])
        self.events.append(Seek(consumer, self.tick(), *tp, offset if known else None))

    def rebalance(self, consumer: int) -> None:
        position = self.positions.setdefault(consumer, {})
        moved = self.rng.sample(self.tps, self.rng.randint(1, len(self.tps)))
        for tp in moved:  # resume from some committed offset, earlier or later
            position[tp] = self.rng.randint(0, len(self.logs.get(tp, [])))
        if self.rng.random() < 0.5:
            self.events.append(Rebalance(consumer, self.tick(), frozenset(moved)))
        else:
            self.events.append(Assign(consumer, self.tick(), frozenset(moved)))

    def final_reads(self, readers: Sequence[int]) -> None:
        for reader in readers:
            records = {tp: list(enumerate(self.logs.get(tp, []))) for tp in self.tps}
            self.events.append(FinalRead(reader, self.tick(), self.tick(), records))


def simulate(rng: random.Random) -> SimulatedLog:
    tps = [(topic, p) for topic in rng.sample(["a", "b"], rng.randint(1, 2)) for p in range(3)]
    sim = SimulatedLog(rng, tps[: rng.randint(1, len(tps))])
    for tp in sim.tps:  # every partition gets a few records up front
        for _ in range(3):
            sim.send("ok", tp)
    for _ in range(rng.randint(10, 80)):
        action = rng.choices(["send", "poll", "seek", "rebalance"], [5, 5, 1, 1])[0]
        consumer = rng.choice([10, 11, 12])
        if action == "send":
            sim.send()
        elif action == "poll":
            sim.poll(consumer)
        elif action == "seek":
            sim.seek(consumer)
        else:
            sim.rebalance(consumer)
    sim.final_reads([20, 21])
    return sim


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False))
def test_simulated_correct_logs_are_clean(rng: random.Random) -> None:
    sim = simulate(rng)
    report = check(sim.events)
    assert report.ok, report.summary()
    assert report.stats.records_final == 2 * sum(len(log) for log in sim.logs.values())


def _reads(events: Sequence[Event]) -> list[tuple[int, tuple[str, int], int]]:
    """(event index, tp, record index) of every read record."""
    return [
        (i, tp, j)
        for i, e in enumerate(events)
        if isinstance(e, Poll | FinalRead)
        for tp, recs in e.records.items()
        for j in range(len(recs))
    ]


def _with_records(event: Poll | FinalRead, tp: tuple[str, int], recs: list[Any]) -> Event:
    return replace(event, records={**event.records, tp: recs})


Injector = Callable[[SimulatedLog, random.Random], Callable[[Anomaly], bool]]


def inject_lost(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    tp = rng.choice(sim.tps)
    offset = rng.randrange(len(sim.logs[tp]) - 1)  # not the last: a later one is read
    value = sim.logs[tp][offset]
    for i, e in enumerate(sim.events):
        if isinstance(e, Send) and e.value == value:
            sim.events[i] = replace(e, outcome=Acked(offset, tp[1]))
        if isinstance(e, Poll | FinalRead) and tp in e.records:
            kept = [r for r in e.records[tp] if r[1] != value]
            sim.events[i] = _with_records(e, tp, kept)
    return lambda a: isinstance(a, LostWrite) and a.value == value


def inject_duplicate(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    value = rng.choice(sim.logs[rng.choice(sim.tps)])
    _append_to_final_reads(sim, rng.choice(sim.tps), value)
    return lambda a: isinstance(a, Duplicate) and a.value == value


def inject_inconsistent(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    i, tp, j = rng.choice(_reads(sim.events))
    event = sim.events[i]
    assert isinstance(event, Poll | FinalRead)
    offset = event.records[tp][j][0]
    intruder = "intruder"
    sim.events.insert(0, Send(0, tp[0], None, intruder, 0.0, None, UNKNOWN))
    recs = list(event.records[tp])
    recs[j] = (offset, intruder)
    sim.events[i + 1] = _with_records(event, tp, recs)
    return lambda a: (
        isinstance(a, InconsistentOffset)
        and (a.topic, a.partition, a.offset)
        == (
            *tp,
            offset,
        )
    )


def _fresh_consumer(
    sim: SimulatedLog, records: list[list[tuple[int, Hashable]]], tp: tuple[str, int]
) -> None:
    for recs in records:
        sim.events.append(Poll(99, sim.tick(), sim.tick(), {tp: recs}))


def inject_nonmonotonic(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    tp = rng.choice(sim.tps)
    log = list(enumerate(sim.logs[tp]))
    cut = rng.randrange(1, len(log))
    _fresh_consumer(sim, [log[cut:], log[: rng.randint(1, cut)]], tp)
    return lambda a: isinstance(a, NonmonotonicPoll) and a.process == 99


def inject_skip(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    tp = rng.choice(sim.tps)
    log = list(enumerate(sim.logs[tp]))
    first = rng.randrange(len(log) - 2)
    _fresh_consumer(sim, [log[: first + 1], log[rng.randrange(first + 2, len(log)) :]], tp)
    return lambda a: isinstance(a, SkippedOffsets) and a.process == 99


def inject_unseen(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    tp = rng.choice(sim.tps)
    end = len(sim.logs[tp])
    sim.events.append(Send(1, tp[0], None, "unread", sim.tick(), sim.tick(), Acked(end, tp[1])))
    return lambda a: isinstance(a, Unseen) and a.value == "unread"


def inject_aborted(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    read = {
        v for e in sim.events if isinstance(e, FinalRead) for r in e.records.values() for _, v in r
    }
    unknown_read = [
        e for e in sim.events if isinstance(e, Send) and e.outcome is UNKNOWN and e.value in read
    ]
    if unknown_read and rng.random() < 0.5:
        victim = rng.choice(unknown_read)
        sim.events[sim.events.index(victim)] = replace(victim, outcome=FAILED)
        value = victim.value
    else:
        tp = rng.choice(sim.tps)
        value = "aborted"
        sim.events.insert(0, Send(1, tp[0], None, value, 0.0, 0.0, FAILED))
        _append_to_final_reads(sim, tp, value)
    return lambda a: isinstance(a, AbortedRead) and a.value == value


def _append_to_final_reads(sim: SimulatedLog, tp: tuple[str, int], value: Hashable) -> None:
    end = len(sim.logs[tp])
    for i, e in enumerate(sim.events):
        if isinstance(e, FinalRead):
            sim.events[i] = _with_records(e, tp, [*e.records[tp], (end, value)])


def inject_mismatch(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    acked = [e for e in sim.events if isinstance(e, Send) and isinstance(e.outcome, Acked)]
    victim = rng.choice(acked)
    assert isinstance(victim.outcome, Acked)
    offset = victim.outcome.offset + rng.choice([-1, 1]) * rng.randint(1, 5)
    partition = victim.outcome.partition
    if offset < 0:
        offset, partition = victim.outcome.offset, partition + 7
    sim.events[sim.events.index(victim)] = replace(victim, outcome=Acked(offset, partition))
    return lambda a: isinstance(a, OffsetMismatch) and a.value == victim.value


def inject_group_skip(sim: SimulatedLog, rng: random.Random) -> Callable[[Anomaly], bool]:
    """A group "g": member 98 reads a prefix, member 97 takes over past a gap."""
    tp = rng.choice(sim.tps)
    log = list(enumerate(sim.logs[tp]))
    first = rng.randrange(len(log) - 2)
    resume = rng.randrange(first + 2, len(log))
    for member, recs in ((98, log[: first + 1]), (97, log[resume:])):
        sim.events.append(Rebalance(member, sim.tick(), frozenset({tp}), group="g"))
        sim.events.append(Poll(member, sim.tick(), sim.tick(), {tp: recs}))
    return lambda a: isinstance(a, GroupSkip) and (a.first, a.last) == (first + 1, resume - 1)


INJECTORS: dict[AnomalyKind, Injector] = {
    AnomalyKind.LOST_WRITE: inject_lost,
    AnomalyKind.DUPLICATE: inject_duplicate,
    AnomalyKind.INCONSISTENT_OFFSET: inject_inconsistent,
    AnomalyKind.NONMONOTONIC_POLL: inject_nonmonotonic,
    AnomalyKind.SKIPPED_OFFSETS: inject_skip,
    AnomalyKind.UNSEEN: inject_unseen,
    AnomalyKind.ABORTED_READ: inject_aborted,
    AnomalyKind.OFFSET_MISMATCH: inject_mismatch,
    AnomalyKind.GROUP_SKIP: inject_group_skip,
}


def test_every_kind_has_an_injector() -> None:
    assert set(INJECTORS) == set(AnomalyKind)


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(list(AnomalyKind)))
def test_one_injected_anomaly_is_detected_as_its_kind(
    rng: random.Random, kind: AnomalyKind
) -> None:
    sim = simulate(rng)
    is_injected = INJECTORS[kind](sim, rng)
    report = check(sim.events)
    assert kind in report.kinds, report.summary()
    assert any(is_injected(a) for a in report.examples[kind]), report.summary()
    assert not report.workload_error_count, report.summary()
