"""The consumer-group half of the check: records a group skipped, and what is not a skip."""

from __future__ import annotations

from collections.abc import Hashable

from chaos.checker import AnomalyKind, Commit, Event, FinalRead, GroupSkip, Poll, Rebalance, check
from chaos.group_check import group_members, group_skips
from chaos.history import Acked, Send

T0 = ("t", 0)


def sends(n: int) -> list[Event]:
    return [Send(0, "t", None, f"v{i}", 0.0, 1.0, Acked(i, 0)) for i in range(n)]


def read(process: int, first: int, last: int) -> Poll:
    recs: list[tuple[int, Hashable]] = [(o, f"v{o}") for o in range(first, last + 1)]
    return Poll(process, 2.0, 3.0, {T0: recs})


def assigned(process: int, group: str = "g") -> Rebalance:
    return Rebalance(process, 1.0, frozenset({T0}), group)


def commit(process: int, offset: int, group: str = "g") -> Commit:
    return Commit(process, group, 4.0, 5.0, {T0: offset})


def final(n: int) -> FinalRead:
    return FinalRead(9, 8.0, 9.0, {T0: [(o, f"v{o}") for o in range(n)]})


def test_rereads_after_a_lost_commit_are_at_least_once_not_a_skip() -> None:
    history = [
        *sends(6),
        assigned(1),
        read(1, 0, 4),
        commit(1, 3),  # member 1 read up to 4 but only 3 was committed
        assigned(2),
        read(2, 3, 5),  # member 2 restarts at the commit: re-reads 3 and 4
        commit(2, 6),
        final(6),
    ]
    report = check(history)
    assert report.ok, report.summary()
    assert report.stats.commits == 2
    assert group_members(history) == {"g": {1, 2}}


def test_a_commit_past_what_was_read_is_a_skip() -> None:
    history = [*sends(6), assigned(1), read(1, 0, 1), commit(1, 4), assigned(2), read(2, 4, 5)]
    history.append(final(6))
    report = check(history)
    assert report.kinds == {AnomalyKind.GROUP_SKIP}, report.summary()
    [skip] = report.examples[AnomalyKind.GROUP_SKIP]
    assert skip == GroupSkip("g", "t", 0, first=2, last=3, count=2, reached=6)
    assert str(skip) == "group 'g' never polled t-0@2..3 (2 records) though it reached offset 6"


def test_a_group_that_never_started_at_zero_skipped_the_head() -> None:
    history = [*sends(4), assigned(1), read(1, 2, 3), commit(1, 4), final(4)]
    [skip] = group_skips(history, {T0: [0, 1, 2, 3]})
    assert (skip.first, skip.last) == (0, 1)


def test_only_members_reads_count_and_groups_are_separate() -> None:
    history = [
        *sends(4),
        read(7, 0, 3),  # an outsider's poll does not cover for the group
        assigned(1, "g"),
        read(1, 3, 3),
        assigned(2, "h"),
        read(2, 0, 3),
        commit(2, 4, "h"),
        final(4),
    ]
    skips = group_skips(history, {T0: [0, 1, 2, 3]})
    assert [(s.group, s.first, s.last) for s in skips] == [("g", 0, 2)]


def test_offsets_nobody_knows_of_are_not_skips() -> None:
    # Offsets 2 and 3 exist in no ack and no read (e.g. compacted or never written).
    history: list[Event] = [
        Send(0, "t", None, "a", 0.0, 1.0, Acked(0, 0)),
        Send(0, "t", None, "b", 0.0, 1.0, Acked(1, 0)),
        Send(0, "t", None, "e", 0.0, 1.0, Acked(4, 0)),
        assigned(1),
        Poll(1, 2.0, 3.0, {T0: [(0, "a"), (1, "b")]}),
        commit(1, 2),
        assigned(2),
        Poll(2, 2.0, 3.0, {T0: [(4, "e")]}),
        FinalRead(9, 8.0, 9.0, {T0: [(0, "a"), (1, "b"), (4, "e")]}),
    ]
    assert check(history).ok
