"""Preferred-leader election per partition (ElectLeaders' outcomes) and the automatic
rebalance rule built from it; brokers shutting down are never preferred."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.metadata_cache import PartitionInfo
from broker.replication.election import (
    NO_LEADER,
    ChangeReason,
    PreferredOutcome,
    StateChange,
    imbalance_ratio,
    imbalanced_brokers,
    preferred_leader_election,
    preferred_leader_elections,
)
from broker.zk_layout import PartitionState


def info(
    replicas: list[int], leader: int, epoch: int, isr: list[int], partition: int = 0
) -> PartitionInfo:
    return PartitionInfo("t", partition, replicas, PartitionState(leader, epoch, isr, 1), 3)


def elect(p: PartitionInfo, live: set[int]) -> tuple[PreferredOutcome, StateChange | None]:
    return preferred_leader_election(
        p, live, controller_epoch=9, versions={(p.topic, p.partition): p.version}
    )


def test_the_preferred_replica_takes_over_with_a_new_epoch_and_the_same_isr() -> None:
    outcome, change = elect(info([1, 2, 3], 2, 4, [2, 3, 1]), {1, 2, 3})
    assert outcome is PreferredOutcome.ELECTED
    assert change == StateChange(
        "t", 0, PartitionState(1, 5, [2, 3, 1], 9), 3, ChangeReason.PREFERRED_LEADER
    )


def test_no_election_when_the_preferred_replica_already_leads() -> None:
    assert elect(info([1, 2, 3], 1, 4, [1, 2, 3]), {1, 2, 3}) == (
        PreferredOutcome.NOT_NEEDED,
        None,
    )


def test_preferred_replica_not_live_or_not_in_the_isr_is_not_available() -> None:
    assert elect(info([1, 2, 3], 2, 4, [2, 3, 1]), {2, 3}) == (
        PreferredOutcome.NOT_AVAILABLE,
        None,
    )
    assert elect(info([1, 2, 3], 2, 4, [2, 3]), {1, 2, 3}) == (
        PreferredOutcome.NOT_AVAILABLE,
        None,
    )
    no_state = PartitionInfo("t", 0, [1, 2], None)
    assert elect(no_state, {1, 2}) == (PreferredOutcome.NOT_AVAILABLE, None)


def test_an_offline_partition_whose_preferred_replica_is_in_the_isr_comes_back() -> None:
    outcome, change = elect(info([1, 2], NO_LEADER, 6, [1]), {1, 2})
    assert outcome is PreferredOutcome.ELECTED
    assert change is not None and change.state == PartitionState(1, 7, [1], 9)


def test_rebalance_elects_only_for_brokers_over_the_threshold() -> None:
    # Broker 1 prefers 10 partitions and leads 8 of them (20 % not led: over 10 %);
    # broker 2 prefers 10 and leads 9 (10 %: not strictly over).
    parts = [info([1, 2], 2 if i < 2 else 1, 1, [1, 2], i) for i in range(10)]
    parts += [info([2, 1], 1 if i == 10 else 2, 1, [1, 2], i) for i in range(10, 20)]
    ratios = imbalance_ratio(parts)
    assert ratios == {1: 0.2, 2: 0.1}
    brokers = imbalanced_brokers(ratios, 10)
    assert brokers == [1]
    versions = {(p.topic, p.partition): p.version for p in parts}
    changes = preferred_leader_elections(
        parts, {1, 2}, controller_epoch=9, versions=versions, brokers=brokers
    )
    assert [(c.partition, c.state.leader) for c in changes] == [(0, 1), (1, 1)]


def test_a_broker_shutting_down_is_not_made_preferred_leader_again() -> None:
    # The controller passes live brokers minus those in controlled shutdown.
    parts = [info([1, 2], 2, 3, [1, 2])]
    live_not_leaving = {1, 2} - {1}
    assert (
        preferred_leader_elections(
            parts, live_not_leaving, controller_epoch=9, versions={("t", 0): 3}
        )
        == []
    )


@settings(max_examples=300, deadline=None)
@given(
    replicas=st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_outcomes_are_exclusive_and_elections_are_sound(
    replicas: list[int], data: st.DataObject
) -> None:
    leader = data.draw(st.sampled_from([*replicas, NO_LEADER]))
    isr = data.draw(st.lists(st.sampled_from(replicas), min_size=1, unique=True))
    live = data.draw(st.sets(st.integers(1, 5)))
    p = info(replicas, leader, 4, isr)
    outcome, change = elect(p, live)
    preferred = replicas[0]
    if leader == preferred:
        assert (outcome, change) == (PreferredOutcome.NOT_NEEDED, None)
    elif preferred in live and preferred in isr:
        assert outcome is PreferredOutcome.ELECTED and change is not None
        assert change.state.leader == preferred
        assert change.state.leader_epoch == 5 and change.state.isr == isr
    else:
        assert (outcome, change) == (PreferredOutcome.NOT_AVAILABLE, None)
