"""Controller decisions: elections from the ISR, the changes broker deaths and returns cause,
preferred-leader election and the imbalance rule."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.metadata_cache import PartitionInfo
from broker.replication import (
    NO_LEADER,
    ChangeReason,
    StateChange,
    elect_leader,
    imbalance_ratio,
    imbalanced_brokers,
    on_brokers_changed,
    preferred_leader_elections,
)
from broker.zk_layout import PartitionState

SIM = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def info(replicas: list[int], leader: int, epoch: int, isr: list[int]) -> PartitionInfo:
    return PartitionInfo("t", 0, replicas, PartitionState(leader, epoch, isr, 1))


def never(topic: str) -> bool:
    return False


def always(topic: str) -> bool:
    return True


V = {("t", 0): 7}


def test_elect_leader_takes_the_first_live_isr_member_in_replica_order() -> None:
    assert elect_leader([3, 1, 2], [1, 2, 3], {1, 2, 3}) == 3
    assert elect_leader([3, 1, 2], [2, 1], {1, 2}) == 1
    assert elect_leader([3, 1, 2], [3], {1, 2}) is None
    assert elect_leader([3, 1, 2], [3], {1, 2}, unclean=True) == 1
    assert elect_leader([3, 1, 2], [2, 3], {1, 2}, unclean=True) == 2  # ISR first
    assert elect_leader([3, 1, 2], [3], set(), unclean=True) is None


@given(
    replicas=st.lists(st.integers(0, 6), min_size=1, max_size=5, unique=True),
    data=st.data(),
    unclean=st.booleans(),
)
def test_elect_leader_never_leaves_the_isr_unless_unclean(
    replicas: list[int], data: st.DataObject, unclean: bool
) -> None:
    isr = data.draw(st.sets(st.sampled_from(replicas)))
    live = data.draw(st.sets(st.integers(0, 6)))
    got = elect_leader(replicas, isr, live, unclean=unclean)
    clean = [r for r in replicas if r in isr and r in live]
    if clean:
        assert got == clean[0]
    elif unclean:
        assert got == next((r for r in replicas if r in live), None)
    else:
        assert got is None


def test_leader_death_elects_the_next_isr_member_and_bumps_the_epoch() -> None:
    changes = on_brokers_changed([info([1, 2, 3], 1, 4, [1, 2, 3])], {2, 3}, 9, never, versions=V)
    assert changes == [
        StateChange("t", 0, PartitionState(2, 5, [2, 3], 9), 7, ChangeReason.LEADER_ELECTED)
    ]


def test_follower_death_shrinks_the_isr_keeping_leader_and_epoch() -> None:
    changes = on_brokers_changed([info([1, 2, 3], 1, 4, [1, 2, 3])], {1, 3}, 9, never, versions=V)
    assert changes == [
        StateChange("t", 0, PartitionState(1, 4, [1, 3], 9), 7, ChangeReason.ISR_SHRUNK)
    ]


def test_nothing_changes_when_every_isr_member_lives() -> None:
    assert on_brokers_changed([info([1, 2, 3], 1, 4, [1, 2])], {1, 2}, 9, never, versions=V) == []


def test_no_live_isr_member_takes_the_partition_offline_keeping_one_member() -> None:
    changes = on_brokers_changed([info([1, 2, 3], 1, 4, [1])], {2, 3}, 9, never, versions=V)
    assert [c.state for c in changes] == [PartitionState(NO_LEADER, 5, [1], 9)]
    assert changes[0].reason is ChangeReason.PARTITION_OFFLINE
    # Both ISR members die at once: the old leader is the one kept.
    changes = on_brokers_changed([info([1, 2, 3], 2, 4, [1, 2])], {3}, 9, never, versions=V)
    assert [c.state for c in changes] == [PartitionState(NO_LEADER, 5, [2], 9)]
    # Already offline and still nobody: no write.
    offline = info([1, 2, 3], NO_LEADER, 5, [1])
    assert on_brokers_changed([offline], {2, 3}, 9, never, versions=V) == []


def test_the_last_isr_member_returning_brings_the_partition_back() -> None:
    offline = info([1, 2, 3], NO_LEADER, 5, [1])
    changes = on_brokers_changed([offline], {1, 2, 3}, 9, never, versions=V)
    assert [c.state for c in changes] == [PartitionState(1, 6, [1], 9)]
    assert changes[0].reason is ChangeReason.LEADER_ELECTED


def test_unclean_election_picks_a_live_replica_with_a_fresh_isr() -> None:
    changes = on_brokers_changed(
        [info([1, 2, 3], 1, 4, [1])], {2, 3}, 9, lambda t: t == "t", versions=V
    )
    assert [c.state for c in changes] == [PartitionState(2, 5, [2], 9)]


def test_partitions_without_state_are_skipped_and_versions_are_required() -> None:
    assert (
        on_brokers_changed([PartitionInfo("t", 0, [1], None)], set(), 1, never, versions={}) == []
    )
    with pytest.raises(KeyError):
        on_brokers_changed([info([1, 2], 1, 0, [1, 2])], {1}, 1, never, versions={})


def test_preferred_leader_election() -> None:
    parts = [
        PartitionInfo("t", 0, [1, 2], PartitionState(2, 3, [1, 2], 1)),  # moves back to 1
        PartitionInfo("t", 1, [1, 2], PartitionState(2, 3, [2], 1)),  # 1 not in ISR
        PartitionInfo("t", 2, [3, 2], PartitionState(2, 3, [2, 3], 1)),  # 3 is dead
        PartitionInfo("t", 3, [2, 1], PartitionState(2, 3, [1, 2], 1)),  # already there
        PartitionInfo("t", 4, [2, 1], None),
    ]
    versions = {("t", p): p for p in range(5)}
    changes = preferred_leader_elections(parts, {1, 2}, controller_epoch=8, versions=versions)
    assert changes == [
        StateChange("t", 0, PartitionState(1, 4, [1, 2], 8), 0, ChangeReason.PREFERRED_LEADER)
    ]
    assert (
        preferred_leader_elections(
            parts, {1, 2}, controller_epoch=8, versions=versions, brokers={2}
        )
        == []
    )


def test_imbalance_ratio_and_the_ten_percent_rule() -> None:
    parts = [PartitionInfo("t", p, [1, 2], PartitionState(1, 0, [1, 2], 1)) for p in range(9)]
    parts.append(PartitionInfo("t", 9, [1, 2], PartitionState(2, 1, [1, 2], 1)))
    parts.append(PartitionInfo("t", 10, [2, 1], PartitionState(1, 1, [1, 2], 1)))
    parts.append(PartitionInfo("t", 11, [3, 1], None))
    ratios = imbalance_ratio(parts)
    assert ratios == {1: 0.1, 2: 1.0}
    assert imbalanced_brokers(ratios) == [2]  # 10% is not over 10%
    assert imbalanced_brokers(ratios, 5) == [1, 2]


BROKERS = [1, 2, 3, 4]
ASSIGNMENT = {
    ("clean", 0): [1, 2, 3],
    ("clean", 1): [2, 3, 4],
    ("clean", 2): [4, 1],
    ("clean", 3): [3],
    ("dirty", 0): [1, 2, 3],
    ("dirty", 1): [3, 4, 1],
}

EVENTS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["die", "return"]), st.sampled_from(BROKERS)),
        st.tuples(st.sampled_from(["leader_shrinks", "leader_expands"]), st.integers(0, 5)),
        st.tuples(st.just("preferred"), st.just(0)),
    ),
    max_size=60,
)


@given(EVENTS)
@SIM
def test_random_deaths_and_returns_keep_elections_sound(events: list[tuple[str, int]]) -> None:
    """One leader per partition and epoch; a leader change always bumps the epoch; the
    epoch never goes back; the ISR is never empty and holds the leader; a leader is live;
    without unclean election it comes from the previous ISR."""
    keys = sorted(ASSIGNMENT)
    states = {k: PartitionState(r[0], 0, list(r), 0) for k, r in ASSIGNMENT.items()}
    versions = dict.fromkeys(keys, 0)
    leader_of_epoch = {k: {0: ASSIGNMENT[k][0]} for k in keys}
    live = set(BROKERS)
    controller_epoch = 1

    def apply(changes: list[StateChange], by_controller: bool = True) -> None:
        seen = set()
        for c in changes:
            key = (c.topic, c.partition)
            assert key not in seen  # one decision per partition per event
            seen.add(key)
            old, new = states[key], c.state
            assert c.expected_version == versions[key]
            if by_controller:
                assert new.controller_epoch == controller_epoch
            assert new.isr and set(new.isr) <= set(ASSIGNMENT[key])
            if new.leader != NO_LEADER:
                assert new.leader in live and new.leader in new.isr
            if new.leader != old.leader:
                assert new.leader_epoch > old.leader_epoch
                if new.leader != NO_LEADER and c.topic == "clean":
                    assert new.leader in old.isr
            else:
                assert new.leader_epoch == old.leader_epoch
            assert leader_of_epoch[key].setdefault(new.leader_epoch, new.leader) == new.leader
            states[key] = new
            versions[key] += 1

    def view() -> list[PartitionInfo]:
        return [PartitionInfo(t, p, ASSIGNMENT[(t, p)], states[(t, p)]) for t, p in keys]

    for event, arg in events:
        if event == "die":
            live.discard(arg)
        elif event == "return":
            live.add(arg)
        elif event == "preferred":
            apply(
                preferred_leader_elections(
                    view(), live, controller_epoch=controller_epoch, versions=versions
                )
            )
            continue
        else:
            # The partition leader's own ISR writes (same epoch), as LeaderState would.
            key = keys[arg]
            st_ = states[key]
            if st_.leader == NO_LEADER or st_.leader not in live:
                continue
            if event == "leader_shrinks":
                isr = [st_.leader]
            else:
                isr = [r for r in ASSIGNMENT[key] if r in live]
            new = PartitionState(st_.leader, st_.leader_epoch, isr, st_.controller_epoch)
            if new.isr != st_.isr:
                change = StateChange(*key, new, versions[key], ChangeReason.ISR_SHRUNK)
                apply([change], by_controller=False)
            continue
        controller_epoch += 1
        changes = on_brokers_changed(
            view(), live, controller_epoch, lambda t: t == "dirty", versions=versions
        )
        apply(changes)
        # After the changes nothing more is due, and every partition that can have a
        # leader has a live one.
        assert (
            on_brokers_changed(
                view(), live, controller_epoch, lambda t: t == "dirty", versions=versions
            )
            == []
        )
        for key in keys:
            st_ = states[key]
            assert all(b in live for b in st_.isr) or st_.leader == NO_LEADER
            if st_.leader == NO_LEADER:
                assert not (set(st_.isr) & live)
                if key[0] == "dirty":
                    assert not (set(ASSIGNMENT[key]) & live)
