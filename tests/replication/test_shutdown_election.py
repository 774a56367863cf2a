"""Controlled shutdown's decisions (Kafka's ControlledShutdownPartitionLeaderElection):
leadership moves to a live ISR member not shutting down, the broker leaves every ISR, and
the broker is told which partitions it must keep leading."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.metadata_cache import PartitionInfo
from broker.replication.election import (
    NO_LEADER,
    ChangeReason,
    ControlledShutdownPlan,
    StateChange,
    controlled_shutdown,
    controlled_shutdown_leader,
    on_brokers_changed,
)
from broker.zk_layout import PartitionState


def info(
    replicas: list[int], leader: int, epoch: int, isr: list[int], partition: int = 0
) -> PartitionInfo:
    return PartitionInfo("t", partition, replicas, PartitionState(leader, epoch, isr, 1), 7)


def plan(
    parts: list[PartitionInfo], broker: int, live: set[int], shutting_down: set[int]
) -> ControlledShutdownPlan:
    versions = {(p.topic, p.partition): p.version for p in parts}
    return controlled_shutdown(
        parts, broker, live, shutting_down, controller_epoch=9, versions=versions
    )


def test_the_rule_skips_brokers_shutting_down_dead_ones_and_non_isr_members() -> None:
    assert controlled_shutdown_leader([1, 2, 3], [1, 2, 3], {1, 2, 3}, {1}) == 2
    assert controlled_shutdown_leader([1, 2, 3], [1, 3], {1, 2, 3}, {1}) == 3
    assert controlled_shutdown_leader([1, 2, 3], [1, 2, 3], {1, 3}, {1}) == 3
    assert controlled_shutdown_leader([1, 2, 3], [1, 2, 3], {1, 2, 3}, {1, 2, 3}) is None


def test_leadership_moves_with_a_new_epoch_and_the_isr_drops_the_broker() -> None:
    got = plan([info([1, 2, 3], 1, 4, [1, 2, 3])], 1, {1, 2, 3}, {1})
    assert got == ControlledShutdownPlan(
        [StateChange("t", 0, PartitionState(2, 5, [2, 3], 9), 7, ChangeReason.CONTROLLED_SHUTDOWN)],
        [],
    )


def test_every_broker_shutting_down_leaves_the_new_isr() -> None:
    got = plan([info([1, 2, 3], 1, 4, [1, 2, 3])], 1, {1, 2, 3}, {1, 2})
    assert [c.state for c in got.changes] == [PartitionState(3, 5, [3], 9)]


def test_a_follower_leaves_the_isr_keeping_leader_and_epoch() -> None:
    got = plan([info([1, 2, 3], 2, 4, [2, 1, 3])], 1, {1, 2, 3}, {1})
    assert got.changes == [
        StateChange("t", 0, PartitionState(2, 4, [2, 3], 9), 7, ChangeReason.ISR_SHRUNK)
    ]
    assert got.remaining == []


def test_rf1_partitions_keep_their_leader_and_are_not_reported() -> None:
    assert plan([info([1], 1, 0, [1])], 1, {1, 2}, {1}) == ControlledShutdownPlan([], [])


def test_an_isr_of_one_with_a_live_follower_remains_for_a_retry() -> None:
    got = plan([info([1, 2], 1, 3, [1])], 1, {1, 2}, {1})
    assert got == ControlledShutdownPlan([], [("t", 0)])


def test_nobody_left_to_take_over_is_not_worth_a_retry() -> None:
    # The other replica is dead or shutting down too: waiting cannot move leadership.
    assert plan([info([1, 2], 1, 3, [1])], 1, {1}, {1}) == ControlledShutdownPlan([], [])
    assert plan([info([1, 2], 1, 3, [1, 2])], 1, {1, 2}, {1, 2}).remaining == []


def test_partitions_elsewhere_and_offline_ones_are_left_alone() -> None:
    parts = [
        info([2, 3], 2, 1, [2, 3], 0),
        info([1, 2], NO_LEADER, 5, [1], 1),
    ]
    assert plan(parts, 1, {1, 2, 3}, {1}) == ControlledShutdownPlan([], [])


def test_death_elections_skip_brokers_shutting_down() -> None:
    # Broker 1 died; 2 is shutting down, so 3 is elected although 2 comes first.
    changes = on_brokers_changed(
        [info([1, 2, 3], 1, 4, [1, 2, 3])],
        {2, 3},
        9,
        lambda _t: False,
        versions={("t", 0): 7},
        shutting_down={2},
    )
    assert [c.state for c in changes] == [PartitionState(3, 5, [2, 3], 9)]
    # A leader in controlled shutdown still counts as live: its partition is not offline.
    assert (
        on_brokers_changed(
            [info([1, 2], 1, 4, [1])],
            {1, 2},
            9,
            lambda _t: False,
            versions={("t", 0): 7},
            shutting_down={1},
        )
        == []
    )


@settings(max_examples=400, deadline=None)
@given(
    replicas=st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_controlled_shutdown_is_sound_and_idempotent(
    replicas: list[int], data: st.DataObject
) -> None:
    """No change elects a broker shutting down or outside the ISR; the ISR is never empty
    and holds the leader; a leader change bumps the epoch; applied once, a second run
    changes nothing, and whatever the broker still leads is either reported or has no
    other replica that could ever take it."""
    broker = data.draw(st.sampled_from(replicas))
    leader = data.draw(st.sampled_from([*replicas, NO_LEADER]))
    isr = data.draw(st.lists(st.sampled_from(replicas), min_size=1, unique=True))
    if leader != NO_LEADER and leader not in isr:
        isr = [leader, *isr]
    live = data.draw(st.sets(st.integers(1, 5))) | {broker}
    others_leaving = data.draw(st.sets(st.integers(1, 5)))
    shutting_down = (others_leaving & live) | {broker}
    p = info(replicas, leader, 4, isr)

    first = plan([p], broker, live, shutting_down)
    state = p.state
    assert state is not None
    for c in first.changes:
        new = c.state
        assert new.isr and broker not in new.isr and new.leader in new.isr
        if new.leader != state.leader:
            assert c.reason is ChangeReason.CONTROLLED_SHUTDOWN
            assert new.leader in state.isr and new.leader in live
            assert new.leader not in shutting_down
            assert new.leader_epoch == state.leader_epoch + 1
        else:
            assert c.reason is ChangeReason.ISR_SHRUNK
            assert new.leader_epoch == state.leader_epoch
        state = new
    after = PartitionInfo("t", 0, replicas, state, 8)
    second = plan([after], broker, live, shutting_down)
    assert second.changes == []
    assert second.remaining == first.remaining
    if state.leader == broker and len(replicas) > 1:
        can_take_over = [r for r in replicas if r in live and r not in shutting_down]
        assert (first.remaining == [("t", 0)]) == bool(can_take_over)
    else:
        assert first.remaining == []
