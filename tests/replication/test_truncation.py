"""FollowerState's truncation rule: the scenarios of KIP-101 and KIP-279, written out, and a
property over generated histories."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.replication import (
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_END_OFFSET,
    EpochEndOffset,
    FollowerState,
    Truncation,
)
from tests.replication.simlog import SimLog

SIM = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def become_follower(follower: SimLog, leader: SimLog, state: FollowerState) -> list[Truncation]:
    """The OffsetForLeaderEpoch rounds a new follower runs before fetching."""
    rounds: list[Truncation] = []
    while True:
        reply = leader.end_offset_for(follower.latest_epoch)
        t = state.truncation_offset(
            follower.leo, reply, follower.end_offset_for, follower.high_watermark
        )
        follower.truncate_to(t.offset)
        rounds.append(t)
        if t.completed:
            return rounds
        assert len(rounds) < 100, "truncation must converge"


def catch_up(follower: SimLog, leader: SimLog) -> None:
    for epoch, record in leader.entries[follower.leo :]:
        follower.append(epoch, record)


def test_kip101_scenario1_restart_keeps_what_the_hw_had_not_reached() -> None:
    """A leads epoch 0 with m0 m1 (HW 2); B has both but learned only HW 1. B restarts.
    Truncating to its HW would drop m1, which a consumer may have read: if A then dies, B
    leads without it. Asking A for the end of epoch 0 keeps it."""
    a = SimLog.of([0, 0], high_watermark=2)
    b = SimLog.of([0, 0], high_watermark=1)
    rounds = become_follower(b, a, FollowerState(broker_id=2, leader_id=1, leader_epoch=0))
    assert rounds == [Truncation(2, True)]
    assert b.entries == a.entries


def test_kip101_scenario2_divergent_logs_after_a_double_crash() -> None:
    """A leads epoch 0 with m0 m1 (its HW 2); B has only m0. Both crash; B returns first,
    leads epoch 1 and writes m2 at offset 1. A returns as follower: truncating to its HW
    would keep m1 and the logs would differ at offset 1. B says epoch 0 ends at 1."""
    a = SimLog.of([0, 0], high_watermark=2)
    b = SimLog.of([0], high_watermark=1)
    b.assign(1, b.leo)
    b.append(1, 100)
    rounds = become_follower(a, b, FollowerState(broker_id=1, leader_id=2, leader_epoch=1))
    assert rounds == [Truncation(1, True)]
    catch_up(a, b)
    assert a.entries == b.entries == [(0, 0), (1, 100)]


def _kip279_fast_failover() -> tuple[SimLog, SimLog]:
    """A leads epoch 1: m0 (replicated to B), m1 (not). A fails; B leads epoch 2 and writes
    m2 at offset 1; B fails fast and A leads again in epoch 3, writing m3 at offset 2."""
    a = SimLog.of([1, 1])
    b = SimLog.of([1])
    b.assign(2, b.leo)
    b.append(2, 200)
    a.assign(3, a.leo)
    a.append(3, 300)
    return a, b


def test_kip279_two_failovers_in_a_row_leader_answers_an_older_epoch() -> None:
    """B returns following A (epoch 3) and asks for the end of its epoch 2, which A never
    had. A answers with its largest epoch below (1) ending at 2; B's own epoch 1 ends at 1,
    so B cuts m2 at offset 1 and the logs converge."""
    a, b = _kip279_fast_failover()
    assert a.end_offset_for(2) == EpochEndOffset(1, 2)
    rounds = become_follower(b, a, FollowerState(broker_id=2, leader_id=1, leader_epoch=3))
    assert rounds == [Truncation(1, True)]
    catch_up(b, a)
    assert b.entries == a.entries == [(1, 0), (1, 1), (3, 300)]


def test_kip279_the_kip101_answer_would_have_left_the_logs_diverged() -> None:
    """Before KIP-279 the leader answered only "the next epoch starts at 2": B kept m2 at
    offset 1, where A has m1. The rule still honours such an answer, which is why KIP-279
    added the epoch to it."""
    a, b = _kip279_fast_failover()
    state = FollowerState(broker_id=2, leader_id=1, leader_epoch=3)
    legacy = EpochEndOffset(UNDEFINED_EPOCH, 2)
    t = state.truncation_offset(b.leo, legacy, b.end_offset_for, b.high_watermark)
    assert t == Truncation(2, True)
    b.truncate_to(t.offset)
    catch_up(b, a)
    assert b.entries != a.entries  # diverged at offset 1


def test_kip279_follower_never_saw_the_leaders_epoch_truncates_in_two_rounds() -> None:
    """The leader answers an epoch (2) the follower never had: the follower cuts to the end
    of its largest epoch below it (1, ending at 2) and asks again with epoch 1."""
    leader = SimLog.of([1, 2, 2, 4])
    follower = SimLog.of([1, 1, 3, 3])
    rounds = become_follower(
        follower, leader, FollowerState(broker_id=2, leader_id=1, leader_epoch=4)
    )
    assert rounds == [Truncation(2, False), Truncation(1, True)]
    catch_up(follower, leader)
    assert follower.entries == leader.entries


def test_the_answer_for_our_latest_epoch_caps_at_our_log_end() -> None:
    state = FollowerState(2, 1, 7)
    local = SimLog.of([5, 5, 5])
    assert state.truncation_offset(3, (5, 10), local.end_offset_for, 0) == Truncation(3, True)
    assert state.truncation_offset(3, (5, 2), local.end_offset_for, 0) == Truncation(2, True)


def test_undefined_answer_falls_back_to_the_high_watermark() -> None:
    state = FollowerState(2, 1, 7)
    local = SimLog.of([5] * 10)
    got = state.truncation_offset(10, UNDEFINED_EPOCH_END_OFFSET, local.end_offset_for, 7)
    assert got == Truncation(7, True)
    assert state.truncation_offset(4, (-1, -1), local.end_offset_for, 7) == Truncation(4, True)


def test_a_follower_without_that_epoch_takes_the_leaders_offset() -> None:
    """Our cache knows no epoch at or below the leader's answer (Kafka's ``None`` case)."""
    state = FollowerState(2, 1, 7)
    assert state.truncation_offset(
        9, EpochEndOffset(3, 4), lambda epoch: UNDEFINED_EPOCH_END_OFFSET, 0
    ) == Truncation(4, True)


def test_follower_hw_is_the_leaders_bounded_by_the_local_log() -> None:
    state = FollowerState(2, 1, 7)
    assert state.on_fetch_response(leader_hw=10, local_leo=8) == 8
    assert state.on_fetch_response(leader_hw=5, local_leo=8) == 5
    assert state.on_fetch_response(leader_hw=5, local_leo=8, log_start_offset=6) == 6


@st.composite
def diverged_histories(draw: st.DrawFn) -> tuple[SimLog, SimLog, int]:
    """A leader's and a follower's log with a shared history and then disjoint epochs
    (each epoch has one leader, so equal (offset, epoch) means equal record), the leader's
    current epoch newest of all; returns them and the length of their common prefix."""
    common = draw(st.lists(st.integers(0, 3), max_size=4))  # records per shared epoch
    last_total = draw(st.integers(0, 4))  # the last shared epoch: both hold a prefix
    epochs_after = draw(st.lists(st.integers(0, 3), max_size=6))
    owners = draw(st.lists(st.booleans(), min_size=len(epochs_after), max_size=len(epochs_after)))
    current = draw(st.integers(0, 3))
    follower, leader = SimLog(), SimLog()
    epoch = 0
    for count in common:
        for log in (follower, leader):
            log.assign(epoch, log.leo)
            for i in range(count):
                log.append(epoch, epoch * 100 + i)
        epoch += 1
    f_take, l_take = draw(st.integers(0, last_total)), draw(st.integers(0, last_total))
    for log, take in ((follower, f_take), (leader, l_take)):
        log.assign(epoch, log.leo)
        for i in range(take):
            log.append(epoch, epoch * 100 + i)
    for count, to_leader in zip(epochs_after, owners, strict=True):
        epoch += 1
        log = leader if to_leader else follower
        log.assign(epoch, log.leo)
        for i in range(count):
            log.append(epoch, epoch * 100 + i)
    leader.assign(epoch + 1, leader.leo)
    for i in range(current):
        leader.append(epoch + 1, (epoch + 1) * 100 + i)
    shared = 0
    while (
        shared < min(leader.leo, follower.leo)
        and leader.entries[shared] == follower.entries[shared]
    ):
        shared += 1
    follower.high_watermark = draw(st.integers(0, shared))
    return leader, follower, shared


@given(diverged_histories())
@SIM
def test_truncation_keeps_exactly_the_common_prefix(history: tuple[SimLog, SimLog, int]) -> None:
    leader, follower, shared = history
    become_follower(follower, leader, FollowerState(2, 1, leader.latest_epoch))
    assert follower.leo == shared
    assert follower.entries == leader.entries[:shared]
