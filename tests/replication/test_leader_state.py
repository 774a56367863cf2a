"""LeaderState: HW, ISR shrink/expand, acks=all, fencing. Time is always an input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.replication import UNKNOWN_OFFSET, AcksAllStatus, LeaderState
from proto.errors import (
    FencedLeaderEpochError,
    NotLeaderForPartitionError,
    OffsetOutOfRangeError,
    UnknownLeaderEpochError,
)

LAG = 30_000
SIM = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def leader(
    isr: list[int] | None = None,
    leo: int = 0,
    hw: int = 0,
    now: int = 0,
    lag: int = LAG,
    min_isr: int = 1,
) -> LeaderState:
    return LeaderState(
        1, 5, [1, 2, 3], [1, 2, 3] if isr is None else isr, leo, hw, now, lag, min_isr
    )


def test_hw_is_the_smallest_leo_in_the_isr() -> None:
    s = leader(leo=10, hw=10)
    assert s.on_append(15) is False  # followers' LEOs are unknown to a new leader
    assert s.follower_log_end_offset(2) == UNKNOWN_OFFSET
    assert s.on_follower_fetch(2, 15, 1).hw_changed is False
    update = s.on_follower_fetch(3, 12, 2)
    assert update.hw_changed is True and update.expand_isr_to is None
    assert s.high_watermark == 12
    assert s.on_follower_fetch(3, 15, 3).hw_changed is True
    assert s.high_watermark == 15
    assert (s.consumer_fetch_limit, s.follower_fetch_limit) == (15, 15)
    s.on_append(20)
    assert (s.consumer_fetch_limit, s.follower_fetch_limit) == (15, 20)


def test_a_leader_alone_in_the_isr_commits_on_append() -> None:
    s = leader(isr=[1])
    assert s.on_append(3) is True
    assert s.high_watermark == 3


def test_a_checkpointed_hw_past_the_log_end_is_clamped() -> None:
    assert leader(leo=4, hw=9).high_watermark == 4


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        LeaderState(1, 0, [1, 2], [2], 0, 0, 0)  # leader not in ISR
    with pytest.raises(ValueError):
        LeaderState(1, 0, [1, 2], [1, 4], 0, 0, 0)  # ISR member not a replica
    with pytest.raises(ValueError):
        LeaderState(9, 0, [1, 2], [9], 0, 0, 0)  # leader not a replica
    s = leader(leo=5)
    with pytest.raises(ValueError):
        s.on_append(4)
    with pytest.raises(NotLeaderForPartitionError):
        s.on_follower_fetch(7, 0, 0)
    with pytest.raises(NotLeaderForPartitionError):
        s.on_follower_fetch(1, 0, 0)  # the leader does not follow itself
    with pytest.raises(OffsetOutOfRangeError):
        s.on_follower_fetch(2, 6, 0)
    with pytest.raises(ValueError):
        s.isr_updated([2, 3])
    with pytest.raises(ValueError):
        s.isr_observed([1, 4])


def test_expansion_waits_for_the_hw_and_the_epoch_start() -> None:
    # New leader at LEO 10 with a checkpointed HW of 5; 3 is out of the ISR.
    s = leader(isr=[1, 2], leo=10, hw=5)
    assert s.leader_epoch_start_offset == 10
    assert s.on_follower_fetch(3, 7, 1).expand_isr_to is None  # >= HW, < epoch start
    assert s.on_follower_fetch(2, 10, 2).hw_changed is True
    assert s.high_watermark == 10
    update = s.on_follower_fetch(3, 10, 3)
    assert update.expand_isr_to == [1, 2, 3]
    assert s.pending_isr == [1, 2, 3] and s.isr == [1, 2]
    assert s.maybe_shrink_isr(10**9) is None  # one ISR change in flight at a time
    assert s.isr_updated([1, 2, 3]) is False
    assert s.isr == [1, 2, 3] and s.pending_isr is None


def test_a_pending_expansion_holds_the_hw_back() -> None:
    """KIP-497's maximal ISR: the coordinator may already list 3, so the HW must not pass
    3's LEO before we know whether the CAS landed."""
    s = leader(isr=[1, 2], leo=10, hw=0)
    s.on_follower_fetch(2, 10, 1)
    assert s.high_watermark == 10
    assert s.on_follower_fetch(3, 10, 2).expand_isr_to == [1, 2, 3]
    s.on_append(20)
    s.on_follower_fetch(2, 20, 3)
    assert s.high_watermark == 10  # 3 is still at 10
    # With the CAS lost, 3 is not in sync: it stops holding the HW back...
    assert s.isr_update_failed() is True
    assert s.pending_isr is None and s.high_watermark == 20
    # ...and is proposed again once it reaches the HW.
    assert s.on_follower_fetch(3, 15, 4).expand_isr_to is None
    assert s.on_follower_fetch(3, 20, 5).expand_isr_to == [1, 2, 3]


def test_updates_by_others_do_not_resolve_our_proposal() -> None:
    """Found by the model: a watch re-delivering the state, or the controller writing the
    ISR our shrink proposed, must not end the proposal; only its own CAS outcome does."""
    s = leader(leo=4, hw=4, lag=100)
    s.on_append(5)
    assert s.maybe_shrink_isr(101) == [1]
    assert s.isr_observed([1, 2]) is False  # the controller drops 3 (3 held the HW)
    assert s.isr_observed([1]) is True  # ...and 2: the leader alone commits everything
    assert s.pending_isr == [1]  # equal to our proposal, yet still pending
    assert s.on_follower_fetch(2, 4, 102).expand_isr_to is None  # one change at a time
    assert s.isr_update_failed() is False  # our CAS lost (the version moved)
    assert s.high_watermark == 5
    assert s.on_follower_fetch(2, 5, 103).expand_isr_to == [1, 2]
    assert s.isr_observed([1]) is False  # re-delivered: the expansion stays pending
    assert s.maximal_isr == [1, 2]
    s.on_append(6)
    assert s.high_watermark == 5  # 2 may already be in the znode's ISR


def test_a_stopped_follower_is_shrunk_after_exactly_the_lag_time() -> None:
    s = leader(lag=100)
    s.on_append(10)
    s.on_follower_fetch(2, 10, 1_000)
    s.on_follower_fetch(3, 10, 1_000)
    s.on_append(11)
    s.on_follower_fetch(2, 11, 1_050)  # 2 keeps up; 3 has stopped
    assert s.maybe_shrink_isr(1_100) is None
    assert s.maybe_shrink_isr(1_101) == [1, 2]
    assert s.pending_isr == [1, 2]
    assert s.isr_updated([1, 2]) is True  # 3 no longer holds the HW at 10
    assert s.high_watermark == 11


def test_a_follower_with_the_whole_log_is_never_lagging() -> None:
    s = leader(lag=100)
    s.on_append(10)
    s.on_follower_fetch(2, 10, 0)
    s.on_follower_fetch(3, 10, 0)
    assert s.maybe_shrink_isr(10**9) is None  # no writes, no lag (as Kafka)


def test_a_follower_that_never_fetched_gets_the_lag_time_from_the_election() -> None:
    s = leader(leo=10, hw=10, now=5_000, lag=100)
    s.on_append(11)
    assert s.maybe_shrink_isr(5_100) is None
    assert s.maybe_shrink_isr(5_101) == [1]


@given(
    lag=st.integers(0, 10_000),
    start=st.integers(0, 10**6),
    steps=st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 5)), max_size=40),
)
@SIM
def test_fetching_keeps_a_follower_in_and_stopping_drops_it_on_time(
    lag: int, start: int, steps: list[tuple[int, int]]
) -> None:
    """A follower fetching at its LEO at least every lag/2 ms is never shrunk, even when
    writes land between all its fetches so that it never has the leader's whole log when
    it asks (it had, at its previous fetch, all the leader had then). Once it stops it is
    shrunk exactly lag ms after the last moment it was caught up."""
    s = LeaderState(1, 0, [1, 2], [1, 2], 0, 0, start, lag, 1)
    now = caught_up_at = start
    follower_leo, prev_leader_leo, prev_fetch = 0, 0, start
    for dt, appends in steps:
        now += dt % (lag // 2 + 1)
        s.on_append(s.log_end_offset + appends)
        assert s.maybe_shrink_isr(now) is None
        if follower_leo == s.log_end_offset:
            caught_up_at = now
        elif follower_leo >= prev_leader_leo:
            caught_up_at = prev_fetch
        s.on_follower_fetch(2, follower_leo, now)
        prev_leader_leo, prev_fetch = s.log_end_offset, now
        follower_leo = s.log_end_offset  # the response carries the rest of the log
        assert s.maybe_shrink_isr(now) is None
    s.on_append(s.log_end_offset + 1)  # it stops; a write comes
    assert s.maybe_shrink_isr(caught_up_at + lag) is None
    assert s.maybe_shrink_isr(caught_up_at + lag + 1) == [1]


def test_acks_all() -> None:
    s = leader(isr=[1, 2], min_isr=2)
    assert s.enough_replicas_for_acks_all()
    s.on_append(5)  # a batch at offsets 0..4
    assert not s.acks_all_satisfied(4)
    assert s.acks_all_status(4) is AcksAllStatus.WAITING
    s.on_follower_fetch(2, 4, 1)
    assert not s.acks_all_satisfied(4) and s.acks_all_satisfied(3)
    s.on_follower_fetch(2, 5, 2)
    assert s.acks_all_satisfied(4)
    assert s.acks_all_status(4) is AcksAllStatus.DONE
    s.on_append(6)
    assert s.maybe_shrink_isr(LAG + 3) == [1]
    s.isr_updated([1])
    assert not s.enough_replicas_for_acks_all()  # the next acks=all produce is refused
    assert s.acks_all_status(5) is AcksAllStatus.NOT_ENOUGH_REPLICAS_AFTER_APPEND


def test_leader_epoch_fencing() -> None:
    s = leader()
    s.check_current_leader_epoch(5)
    s.check_current_leader_epoch(-1)
    with pytest.raises(FencedLeaderEpochError):
        s.check_current_leader_epoch(4)
    with pytest.raises(UnknownLeaderEpochError):
        s.check_current_leader_epoch(6)


OPS = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 4), st.integers(0, 0)),
    st.tuples(st.just("fetch"), st.sampled_from([2, 3]), st.integers(0, 4)),
    st.tuples(st.just("tick"), st.integers(0, 0), st.integers(0, 150)),
    st.tuples(st.just("cas_ok"), st.integers(0, 0), st.integers(0, 0)),
    st.tuples(st.just("cas_lost"), st.integers(0, 0), st.integers(0, 0)),
    st.tuples(st.just("controller_drops"), st.sampled_from([2, 3]), st.integers(0, 0)),
)


@given(
    ops=st.lists(OPS, max_size=80),
    isr=st.sampled_from([[1], [1, 2], [1, 3], [1, 2, 3]]),
    leo=st.integers(0, 5),
    hw=st.integers(0, 5),
)
@SIM
def test_hw_and_isr_invariants(
    ops: list[tuple[str, int, int]], isr: list[int], leo: int, hw: int
) -> None:
    """Under any interleaving: the HW never decreases, never passes the LEO of a maximal
    ISR member, and equals the smallest such LEO once that has moved past it; the ISR is
    never empty and always holds the leader."""
    s = LeaderState(1, 3, [1, 2, 3], isr, leo, hw, 0, 100, 2)
    first_hw = s.high_watermark
    now = 0
    follower_leo = {2: UNKNOWN_OFFSET, 3: UNKNOWN_OFFSET}
    for op, who, amount in ops:
        before = s.high_watermark
        if op == "append":
            s.on_append(s.log_end_offset + who)
        elif op == "fetch":
            # A follower's LEO only grows while it follows one leader epoch.
            start = max(follower_leo[who], first_hw)
            offset = min(start + amount, s.log_end_offset)
            follower_leo[who] = offset
            update = s.on_follower_fetch(who, offset, now)
            if update.expand_isr_to is not None:
                assert who in update.expand_isr_to and 1 in update.expand_isr_to
                assert offset >= s.high_watermark
        elif op == "tick":
            now += amount
            proposal = s.maybe_shrink_isr(now)
            assert proposal is None or (1 in proposal and len(proposal) < len(s.isr))
        elif op == "cas_ok" and s.pending_isr is not None:
            s.isr_updated(s.pending_isr)
        elif op == "cas_lost":
            s.isr_update_failed()
        elif op == "controller_drops" and who in s.isr:
            s.isr_observed([r for r in s.isr if r != who])
        assert s.high_watermark >= before
        assert s.high_watermark <= s.log_end_offset
        assert s.isr and s.isr[0] == 1
        pending = s.pending_isr
        assert pending is None or 1 in pending
        followers = [r for r in s.maximal_isr if r != 1]
        floor = min([s.log_end_offset] + [follower_leo[r] for r in followers])
        assert s.high_watermark == max(before, floor)
        for r in followers:
            if follower_leo[r] != UNKNOWN_OFFSET:
                assert s.high_watermark <= follower_leo[r]
