"""The queue checker: hand-written histories per anomaly, the recorder, simulated logs.

The property tests drive a simulated correct log (sends with every outcome, consumers that
poll, seek and get rebalanced, final reads) whose histories must check clean, then inject
one anomaly and require the checker to name it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable
from typing import TypeVar

import pytest

from client.types import ConsumerRecord, TopicPartition
from tests.checkers.queue import (
    FAILED,
    MAX_EXAMPLES,
    UNKNOWN,
    AbortedRead,
    Acked,
    Anomaly,
    AnomalyKind,
    Assign,
    Commit,
    Duplicate,
    Event,
    FinalRead,
    GroupSkip,
    InconsistentOffset,
    LostWrite,
    MalformedHistoryError,
    NonmonotonicPoll,
    OffsetMismatch,
    Poll,
    QueueHistory,
    QueueReport,
    Rebalance,
    Seek,
    Send,
    SendOutcome,
    SkippedOffsets,
    Unseen,
    WorkloadError,
    check,
)

T0, T1 = ("t", 0), ("t", 1)


def send(process: int, value: Hashable, outcome: SendOutcome, topic: str = "t") -> Send:
    done = None if outcome is UNKNOWN else 1.0
    return Send(process, topic, None, value, 0.0, done, outcome)


def poll(process: int, records: dict[tuple[str, int], list[tuple[int, Hashable]]]) -> Poll:
    return Poll(process, 2.0, 3.0, records)


def final(process: int, records: dict[tuple[str, int], list[tuple[int, Hashable]]]) -> FinalRead:
    return FinalRead(process, 8.0, 9.0, records)


A = TypeVar("A", bound=Anomaly)


def examples(report: QueueReport, cls: type[A]) -> list[A]:
    return [a for a in report.examples[cls.kind] if isinstance(a, cls)]


def log_of(*values: Hashable) -> list[tuple[int, Hashable]]:
    return list(enumerate(values))


# --- hand-written histories -------------------------------------------------------------


def test_clean_history_with_retries_seeks_and_rebalances() -> None:
    history: list[Event] = [
        # two producers, two partitions; p1's "c" timed out and was retried as "c2"
        send(0, "a", Acked(0, 0)),
        send(1, "c", UNKNOWN),
        send(0, "b", Acked(1, 0)),
        send(1, "c2", Acked(0, 1)),
        send(0, "d", FAILED),
        send(1, "e", UNKNOWN),  # never written: unknown may mean either
        poll(10, {T0: log_of("a", "b"), T1: [(0, "c2")]}),
        poll(11, {T1: [(0, "c2"), (1, "c")]}),  # the timed-out send did land
        Seek(10, 3.0, "t", 0, 0),
        poll(10, {T0: log_of("a")}),
        Rebalance(11, 4.0, frozenset({T1})),
        poll(11, {T1: [(1, "c")]}),
        Assign(10, 5.0, frozenset({T0, T1})),
        poll(10, {T0: [(1, "b")], T1: [(1, "c")]}),
        Seek(11, 6.0, "t", 0),  # seek_to_end: the target is unknown
        poll(11, {T0: [(1, "b")]}),
        poll(11, {}),
        final(20, {T0: log_of("a", "b"), T1: log_of("c2", "c")}),
        final(21, {T0: log_of("a", "b"), T1: log_of("c2", "c")}),
    ]
    report = check(history)
    assert report.ok, report.summary()
    assert report.stats.unknown == 2 and report.stats.unknown_read == 1
    assert (report.stats.polls, report.stats.final_reads, report.stats.partitions) == (7, 2, 2)


def test_empty_history_is_ok() -> None:
    report = check([])
    assert report.ok and "queue check: OK" in report.summary()


BAD: dict[AnomalyKind, tuple[list[Event], Anomaly]] = {
    AnomalyKind.LOST_WRITE: (
        [
            send(0, "a", Acked(0, 0)),
            send(0, "b", Acked(1, 0)),
            send(0, "c", Acked(2, 0)),
            poll(10, {T0: [(2, "c")]}),  # a consumer's first poll may start anywhere
            final(9, {T0: [(0, "a")]}),
        ],
        LostWrite("b", "t", 0, 1, highest_read_offset=2),
    ),
    AnomalyKind.UNSEEN: (
        [send(0, "a", Acked(0, 0)), send(0, "b", Acked(1, 0)), final(9, {T0: [(0, "a")]})],
        Unseen("b", "t", 0, 1, highest_read_offset=0),
    ),
    AnomalyKind.DUPLICATE: (
        [send(0, "a", UNKNOWN), final(9, {T0: log_of("a", "a")})],
        Duplicate("a", (("t", 0, 0), ("t", 0, 1))),
    ),
    AnomalyKind.INCONSISTENT_OFFSET: (
        [
            send(0, "a", UNKNOWN),
            send(1, "b", UNKNOWN),
            poll(10, {T0: [(0, "a")]}),
            final(9, {T0: [(0, "b")]}),
        ],
        InconsistentOffset("t", 0, 0, (("a", ("poll p10",)), ("b", ("final p9",)))),
    ),
    AnomalyKind.NONMONOTONIC_POLL: (
        [
            send(0, "a", Acked(0, 0)),
            send(0, "b", Acked(1, 0)),
            poll(10, {T0: log_of("a", "b")}),
            poll(10, {T0: [(1, "b")]}),
            final(9, {T0: log_of("a", "b")}),
        ],
        NonmonotonicPoll(10, "t", 0, previous_offset=1, offset=1, at=2.0),
    ),
    AnomalyKind.SKIPPED_OFFSETS: (
        [
            *(send(0, v, Acked(i, 0)) for i, v in enumerate("abcd")),
            poll(10, {T0: [(0, "a")]}),
            poll(10, {T0: [(3, "d")]}),
            final(9, {T0: log_of(*"abcd")}),
        ],
        SkippedOffsets(10, "t", 0, 0, 3, skipped=(1, 2), skipped_count=2, at=2.0),
    ),
    AnomalyKind.ABORTED_READ: (
        [send(0, "a", FAILED), poll(10, {T0: [(0, "a")]}), final(9, {T0: [(0, "a")]})],
        AbortedRead("a", "t", 0, 0, read_by=("poll p10", "final p9")),
    ),
    AnomalyKind.OFFSET_MISMATCH: (
        [send(0, "a", Acked(5, 0)), final(9, {T0: [(0, "a")], T1: []})],
        OffsetMismatch("a", acked_at=("t", 0, 5), read_at=(("t", 0, 0),)),
    ),
    AnomalyKind.GROUP_SKIP: (  # member 10 reads "a" and commits 1; member 11 starts at 2
        [
            *(send(0, v, Acked(i, 0)) for i, v in enumerate("abc")),
            Rebalance(10, 1.0, frozenset({T0}), group="g"),
            poll(10, {T0: log_of("a")}),
            Commit(10, "g", 3.0, 4.0, {T0: 1}),
            Rebalance(11, 5.0, frozenset({T0}), group="g"),
            poll(11, {T0: [(2, "c")]}),
            final(9, {T0: log_of(*"abc")}),
        ],
        GroupSkip("g", "t", 0, first=1, last=1, count=1, reached=3),
    ),
}


@pytest.mark.parametrize("kind", list(AnomalyKind))
def test_minimal_bad_history_reports_exactly_its_kind(kind: AnomalyKind) -> None:
    history, expected = BAD[kind]
    report = check(history)
    assert report.kinds == {kind}, report.summary()
    assert report.counts[kind] == 1
    assert report.examples[kind] == (expected,)
    assert not report.ok and not report.workload_error_count
    assert str(expected) in report.summary()


def test_a_lost_write_the_final_read_passes_over_is_also_a_skip() -> None:
    history: list[Event] = [
        send(0, "a", Acked(0, 0)),
        send(0, "b", Acked(1, 0)),
        send(0, "c", Acked(2, 0)),
        final(9, {T0: [(0, "a"), (2, "c")]}),
    ]
    report = check(history)
    assert report.kinds == {AnomalyKind.LOST_WRITE, AnomalyKind.SKIPPED_OFFSETS}
    assert [a.value for a in examples(report, LostWrite)] == ["b"]
    assert [a.skipped for a in examples(report, SkippedOffsets)] == [(1,)]


def test_an_acked_offset_read_with_another_value_is_unseen_not_lost() -> None:
    # Lost needs a read *above* the acknowledged offset; here the offset itself was reused.
    history: list[Event] = [
        send(0, "a", Acked(0, 0)),
        send(0, "b", Acked(1, 0)),
        send(1, "c", UNKNOWN),
        final(9, {T0: log_of("a", "c")}),
    ]
    report = check(history)
    assert report.kinds == {AnomalyKind.UNSEEN, AnomalyKind.INCONSISTENT_OFFSET}
    assert examples(report, Unseen) == [Unseen("b", "t", 0, 1, highest_read_offset=1)]
    assert examples(report, InconsistentOffset) == [
        InconsistentOffset("t", 0, 1, (("b", ("ack p0",)), ("c", ("final p9",))))
    ]


def test_the_final_read_must_start_at_the_beginning() -> None:
    history: list[Event] = [
        send(0, "a", Acked(0, 0)),
        send(0, "b", Acked(1, 0)),
        final(9, {T0: log_of("a", "b")}),
        final(8, {T0: [(1, "b")]}),
    ]
    report = check(history)
    assert report.kinds == {AnomalyKind.SKIPPED_OFFSETS}
    assert [a.process for a in examples(report, SkippedOffsets)] == [8]


def test_a_seek_to_a_known_offset_sets_where_the_next_poll_must_start() -> None:
    history: list[Event] = [
        *(send(0, v, Acked(i, 0)) for i, v in enumerate("abcd")),
        poll(10, {T0: log_of(*"abcd")}),
        Seek(10, 3.0, "t", 0, 1),
        poll(10, {T0: [(2, "c")]}),  # skips offset 1, the seek target
        Seek(10, 4.0, "t", 0, 3),
        poll(10, {T0: [(2, "c")]}),  # before the seek target
        final(9, {T0: log_of(*"abcd")}),
    ]
    report = check(history)
    assert report.kinds == {AnomalyKind.SKIPPED_OFFSETS, AnomalyKind.NONMONOTONIC_POLL}
    assert [a.skipped for a in examples(report, SkippedOffsets)] == [(1,)]
    assert [a.previous_offset for a in examples(report, NonmonotonicPoll)] == [2]


def test_gaps_nobody_saw_are_not_skips() -> None:
    # Offsets 1-2 may be transaction markers or compacted away: nothing says they exist.
    history: list[Event] = [
        send(0, "a", Acked(0, 0)),
        send(0, "b", Acked(3, 0)),
        poll(10, {T0: [(0, "a"), (3, "b")]}),
        final(9, {T0: [(0, "a"), (3, "b")]}),
    ]
    assert check(history).ok


def test_rebalance_of_other_partitions_does_not_excuse_a_jump() -> None:
    history: list[Event] = [
        *(send(0, v, Acked(i, 0)) for i, v in enumerate("abc")),
        poll(10, {T0: [(2, "c")]}),
        Rebalance(10, 3.0, frozenset({T1})),
        poll(10, {T0: [(0, "a")]}),
        final(9, {T0: log_of(*"abc")}),
    ]
    assert check(history).kinds == {AnomalyKind.NONMONOTONIC_POLL}


def test_counts_are_exact_and_examples_capped() -> None:
    history: list[Event] = [send(0, i, Acked(i, 0)) for i in range(25)]
    history.append(final(9, {T0: [(25, "x")]}))
    history.append(send(1, "x", UNKNOWN))
    report = check(history)
    assert report.counts[AnomalyKind.LOST_WRITE] == 25
    assert [a.value for a in examples(report, LostWrite)] == list(range(MAX_EXAMPLES))


def test_workload_errors_are_not_anomalies() -> None:
    history: list[Event] = [
        send(0, "a", Acked(0, 0)),
        send(1, "a", Acked(1, 0)),
        final(9, {T0: [(0, "a"), (1, "zzz")]}),
    ]
    report = check(history)
    assert report.workload_errors == (
        WorkloadError("value sent twice", "a"),
        WorkloadError("value never sent", "zzz"),
    )
    assert not report.kinds and not report.ok
    assert "value sent twice: 'a'" in report.summary()


@pytest.mark.parametrize(
    "event",
    [
        Send(0, "t", None, "a", 2.0, 1.0, Acked(0, 0)),
        send(0, "a", Acked(-1, 0)),
        Poll(0, 0.0, 1.0, {T0: [(-1, "a")]}),
        Seek(0, float("nan"), "t", 0, 0),
        FinalRead(0, 3.0, 2.0, {}),
    ],
)
def test_malformed_histories_are_refused(event: Event) -> None:
    with pytest.raises(MalformedHistoryError):
        check([event])


def test_report_as_json_and_text() -> None:
    history: list[Event] = [
        send(0, b"\xff", Acked(0, 0)),
        send(0, b"v1", Acked(1, 0)),
        send(0, ("tuple", 1), UNKNOWN),
        final(9, {T0: [(0, b"\xff"), (2, ("tuple", 1))]}),
    ]
    report = check(history)
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] is False
    lost = as_dict["anomalies"]["lost-write"]
    assert lost["count"] == 1
    assert lost["examples"][0]["value"] == "v1"
    assert lost["examples"][0]["text"] == str(report.examples[AnomalyKind.LOST_WRITE][0])
    assert as_dict["anomalies"]["duplicate"] == {"count": 0, "examples": []}
    assert as_dict["stats"]["records_final"] == 2
    text = report.summary()
    assert text.startswith("queue check: NOT OK") and len(text.splitlines()) < 40


# --- the recorder -----------------------------------------------------------------------


def test_recorder_builds_events_from_client_values() -> None:
    ticks = iter(range(100))
    recorder = QueueHistory(clock=lambda: float(next(ticks)))
    h_ok = recorder.send(0, "t", b"k", "a")
    h_failed = recorder.send(1, "t", None, "b")
    h_open = recorder.send(1, "t", None, "c")
    recorder.send_failed(h_failed)
    recorder.send_ok(h_ok, partition=1, offset=0)
    recorder.assign(5, [TopicPartition("t", 1)])
    tp = TopicPartition("t", 1)
    record = ConsumerRecord("t", 1, 0, 0, b"k", "a", [])
    recorder.poll(5, 5.5, {tp: [record]})
    recorder.seek(5, "t", 1, 0)
    recorder.rebalance(5)
    recorder.final_read(6, 8.5, {tp: [(0, "a")], ("t", 0): []})
    history = recorder.history()
    assert history[:3] == [
        Send(0, "t", b"k", "a", 0.0, 4.0, Acked(0, 1)),
        Send(1, "t", None, "b", 1.0, 3.0, FAILED),
        Send(1, "t", None, "c", 2.0, None, UNKNOWN),  # still open: unknown
    ]
    assert history[3] == Assign(5, 5.0, frozenset({T1}))
    assert history[4] == Poll(5, 5.5, 6.0, {T1: ((0, "a"),)})
    assert history[5:7] == [Seek(5, 7.0, "t", 1, 0), Rebalance(5, 8.0, None)]
    assert history[7] == FinalRead(6, 8.5, 9.0, {T1: ((0, "a"),), T0: ()})
    assert check(history).ok
    recorder.send_unknown(h_open)
    assert recorder.history()[2] == Send(1, "t", None, "c", 2.0, None, UNKNOWN)


def test_recorder_is_thread_safe() -> None:
    recorder = QueueHistory(clock=lambda: 0.0)
    per_thread = 300

    def producer(process: int) -> None:
        for i in range(per_thread):
            handle = recorder.send(process, "t", None, (process, i))
            recorder.send_unknown(handle)

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = recorder.history()
    assert len(history) == 4 * per_thread
    assert {e.value for e in history if isinstance(e, Send)} == {
        (p, i) for p in range(4) for i in range(per_thread)
    }
    assert check(history).stats.unknown == 4 * per_thread
