"""The group state machine, scenario by scenario: every transition of the table, KIP-394
member ids, the leader and the protocol vote, generation fencing, the initial delay, the
rebalance and session timeouts with a fake clock, and static membership (KIP-345)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.group import (
    NEW_MEMBER_JOIN_TIMEOUT_MS,
    TRANSITIONS,
    Group,
    GroupConfig,
    GroupState,
    IllegalGroupTransition,
    JoinGroupResult,
    MemberIdentity,
    SyncGroupResult,
)
from proto.errors import (
    FencedInstanceIdError,
    GroupMaxSizeReachedError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidSessionTimeoutError,
    MemberIdRequiredError,
    NotCoordinatorError,
    NotLeaderForPartitionError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from tests.group.harness import REBALANCE_MS, SESSION_MS, Harness, counter_ids

S = GroupState
DELAY = 3_000  # group.initial.rebalance.delay.ms
FENCED = FencedInstanceIdError.code
ILLEGAL_GENERATION = IllegalGenerationError.code
REBALANCING = RebalanceInProgressError.code
UNKNOWN = UnknownMemberIdError.code


class RecordingGroup(Group):
    def __init__(self) -> None:
        super().__init__("g", new_member_id=counter_ids())
        self.edges: list[tuple[GroupState, GroupState]] = []

    def _transition(self, new: GroupState) -> None:
        old = self.state
        super()._transition(new)
        self.edges.append((old, new))


# -- the transition table ----------------------------------------------------------------


def _to_completing(h: Harness) -> None:
    h.join_new("a")
    h.join_new("b")
    h.complete_join()


def _to_stable_then_join(h: Harness) -> None:
    h.stable_group("a")
    h.join_new("b")


def _completing_then_leave(h: Harness) -> None:
    _to_completing(h)
    h.leave(MemberIdentity("b-1"))  # before syncing: the generation is void


def _preparing_then_leave(h: Harness) -> None:
    h.join_new("a")
    h.leave(MemberIdentity("a-0"))
    h.advance(DELAY)


def _unload_after(setup: Callable[[Harness], object]) -> Callable[[Harness], object]:
    def drive(h: Harness) -> None:
        setup(h)
        h.collect(h.group.unload(h.now))

    return drive


EDGE_DRIVERS: dict[tuple[GroupState, GroupState], Callable[[Harness], object]] = {
    (S.EMPTY, S.PREPARING_REBALANCE): lambda h: h.join_new("a"),
    (S.PREPARING_REBALANCE, S.COMPLETING_REBALANCE): _to_completing,
    (S.COMPLETING_REBALANCE, S.STABLE): lambda h: h.stable_group("a"),
    (S.STABLE, S.PREPARING_REBALANCE): _to_stable_then_join,
    (S.COMPLETING_REBALANCE, S.PREPARING_REBALANCE): _completing_then_leave,
    (S.PREPARING_REBALANCE, S.EMPTY): _preparing_then_leave,
    (S.EMPTY, S.DEAD): lambda h: h.group.delete(h.now),
    (S.PREPARING_REBALANCE, S.DEAD): _unload_after(lambda h: h.join_new("a")),
    (S.COMPLETING_REBALANCE, S.DEAD): _unload_after(_to_completing),
    (S.STABLE, S.DEAD): _unload_after(lambda h: h.stable_group("a")),
    (S.DEAD, S.DEAD): _unload_after(lambda h: h.group.unload(h.now)),
}


def test_transition_table_is_kafkas() -> None:
    edges = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert edges == set(EDGE_DRIVERS)
    assert set(TRANSITIONS) == set(GroupState)


@pytest.mark.parametrize("edge", list(EDGE_DRIVERS), ids=lambda e: f"{e[0].value}->{e[1].value}")
def test_each_transition_happens(edge: tuple[GroupState, GroupState]) -> None:
    group = RecordingGroup()
    EDGE_DRIVERS[edge](Harness(group=group))
    assert edge in group.edges


def test_a_transition_outside_the_table_raises() -> None:
    group = Group("g")
    with pytest.raises(IllegalGroupTransition):
        group._transition(S.STABLE)
    assert group.state is S.EMPTY


# -- joining -----------------------------------------------------------------------------


def test_first_join_gets_member_id_required_then_joins_with_it() -> None:
    h = Harness()
    first = h.must(h.join(client="a"), JoinGroupResult)
    assert (first.error, first.member_id) == (MemberIdRequiredError.code, "a-0")
    assert h.state() is S.EMPTY and "a-0" in h.group.roster.pending
    rid = h.join("a-0", client="a")
    assert h.reply(rid, JoinGroupResult) is None  # held: the delayed join
    assert h.state() is S.PREPARING_REBALANCE
    h.advance(DELAY)
    r = h.must(rid, JoinGroupResult)
    assert (r.error, r.generation_id, r.leader_id, r.protocol_name) == (0, 1, "a-0", "range")
    assert [(m.member_id, m.metadata) for m in r.members] == [("a-0", b"range-meta")]


def test_an_unused_member_id_expires_after_the_session_timeout() -> None:
    h = Harness()
    member_id = h.must(h.join(client="a"), JoinGroupResult).member_id
    assert h.group.next_deadline_ms() == SESSION_MS
    h.advance(SESSION_MS)
    assert not h.group.roster.pending
    assert h.must(h.join(member_id, client="a"), JoinGroupResult).error == UNKNOWN


def test_leader_is_the_first_member_and_alone_gets_everyones_metadata() -> None:
    h = Harness()
    a, ra = h.join_new("a", protocols=[("range", b"A")])
    b, rb = h.join_new("b", protocols=[("range", b"B")])
    h.complete_join()
    leader, follower = h.must(ra, JoinGroupResult), h.must(rb, JoinGroupResult)
    assert leader.is_leader and leader.leader_id == follower.leader_id == a
    assert [(m.member_id, m.metadata) for m in leader.members] == [(a, b"A"), (b, b"B")]
    assert follower.members == () and not follower.is_leader


@pytest.mark.parametrize(
    ("preferences", "chosen"),
    [
        ([["roundrobin", "range"], ["roundrobin", "range"], ["range", "roundrobin"]], "roundrobin"),
        ([["range", "roundrobin"], ["roundrobin", "range"]], "range"),  # tie: leader's choice
        ([["roundrobin", "range"], ["range"]], "range"),  # only what all support
    ],
)
def test_protocol_is_chosen_by_vote(preferences: list[list[str]], chosen: str) -> None:
    h = Harness()
    rids = [
        h.join_new(f"m{i}", protocols=[(n, f"{n}-{i}".encode()) for n in names])[1]
        for i, names in enumerate(preferences)
    ]
    h.complete_join()
    results = [h.must(rid, JoinGroupResult) for rid in rids]
    assert {r.protocol_name for r in results} == {chosen}
    assert results[0].members[0].metadata == f"{chosen}-0".encode()


def test_a_member_sharing_no_protocol_or_type_is_refused() -> None:
    h = Harness()
    h.stable_group("a")
    bad = h.join(client="b", protocols=[("roundrobin", b"")])
    assert h.must(bad, JoinGroupResult).error == InconsistentGroupProtocolError.code
    other = h.join(client="b", protocol_type="connect")
    assert h.must(other, JoinGroupResult).error == InconsistentGroupProtocolError.code
    assert h.state() is S.STABLE


def test_session_timeout_outside_the_broker_bounds_is_refused() -> None:
    h = Harness()
    rid = h.join(client="a", session_ms=1_000)
    assert h.must(rid, JoinGroupResult).error == InvalidSessionTimeoutError.code


def test_group_max_size_refuses_new_members_but_not_a_static_restart() -> None:
    h = Harness(GroupConfig(group_max_size=1))
    h.join(instance="s1", client="s")
    refused = h.must(h.join(client="b"), JoinGroupResult)
    assert refused.error == GroupMaxSizeReachedError.code
    h.join(instance="s1", client="s")  # the same instance again is no new member
    assert len(h.group.members) == 1


def test_a_newer_join_from_the_same_member_supersedes_the_held_one() -> None:
    h = Harness()
    a, first = h.join_new("a")
    second = h.join(a, client="a")
    assert h.must(first, JoinGroupResult).error == REBALANCING
    h.advance(DELAY)
    assert h.must(second, JoinGroupResult).error == 0


def test_rejoining_unchanged_repeats_the_generation_except_for_the_leader() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    follower = h.must(h.join(ids["b"], client="b"), JoinGroupResult)
    assert (follower.error, follower.generation_id, follower.members) == (0, 1, ())
    assert h.state() is S.STABLE
    h.join(ids["a"], client="a")  # the leader may have seen topic metadata change
    assert h.state() is S.PREPARING_REBALANCE


# -- generations -------------------------------------------------------------------------


def test_generation_fences_stale_members_and_heartbeats_report_the_rebalance() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    a, b = ids["a"], ids["b"]
    assert h.group.generation_id == 1 and h.heartbeat(a, 1) == 0
    _, rc = h.join_new("c")
    assert h.state() is S.PREPARING_REBALANCE
    assert h.heartbeat(a, 1) == REBALANCING
    assert h.commit(a, 1) == 0  # commits still go through while joins are collected
    ra, rb = h.join(a, client="a"), h.join(b, client="b")  # all joined: done at once
    assert h.state() is S.COMPLETING_REBALANCE and h.group.generation_id == 2
    assert {h.must(r, JoinGroupResult).generation_id for r in (ra, rb, rc)} == {2}
    assert h.heartbeat(a, 1) == ILLEGAL_GENERATION
    assert h.must(h.sync(a, 1), SyncGroupResult).error == ILLEGAL_GENERATION
    assert h.commit(a, 1) == ILLEGAL_GENERATION
    assert h.commit(a, 2) == REBALANCING  # new generation, assignment not yet known
    assert h.heartbeat(a, 2) == 0  # Kafka 2.5+: a joined member may heartbeat


def test_unknown_members_are_told_so() -> None:
    h = Harness()
    h.stable_group("a")
    assert h.heartbeat("ghost", 1) == UNKNOWN
    assert h.must(h.sync("ghost", 1), SyncGroupResult).error == UNKNOWN
    assert h.commit("ghost", 1) == UNKNOWN
    assert h.must(h.join("ghost", client="x"), JoinGroupResult).error == UNKNOWN
    assert h.leave(MemberIdentity("ghost")).members[0].error == UNKNOWN


def test_sync_is_held_until_the_leaders_assignment_is_stored() -> None:
    h = Harness()
    (a, _), (b, _) = h.join_new("a"), h.join_new("b")
    h.complete_join()
    follower = h.sync(b, 1)
    assert h.reply(follower, SyncGroupResult) is None
    leader = h.sync(a, 1, {a: b"A"})  # b left out: it gets an empty assignment
    assert h.reply(leader, SyncGroupResult) is None and len(h.stores) == 1
    stored = {m.member_id: m.assignment for m in h.stores[0].record.members}
    assert stored == {a: b"A", b: b""}
    h.complete_stores()
    assert h.must(leader, SyncGroupResult).assignment == b"A"
    assert h.must(follower, SyncGroupResult).assignment == b""
    assert h.state() is S.STABLE


def test_a_failed_store_fails_the_sync_and_restarts_the_rebalance() -> None:
    h = Harness()
    a, _ = h.join_new("a")
    h.advance(DELAY)
    rid = h.sync(a, 1, {a: b"A"})
    h.complete_stores(error=NotLeaderForPartitionError.code)
    assert h.must(rid, SyncGroupResult).error == NotCoordinatorError.code
    assert h.state() is S.PREPARING_REBALANCE


# -- time --------------------------------------------------------------------------------


def test_initial_delay_waits_for_more_members_and_each_one_extends_it() -> None:
    h = Harness()
    _, ra = h.join_new("a")
    h.advance(2_000)
    _, rb = h.join_new("b")
    h.advance(999)
    h.advance(1)  # t=3000: b arrived during the delay, wait once more
    h.advance(2_999)
    assert h.reply(ra, JoinGroupResult) is None and h.reply(rb, JoinGroupResult) is None
    h.advance(1)  # t=6000
    assert h.must(ra, JoinGroupResult).generation_id == 1
    assert h.must(rb, JoinGroupResult).generation_id == 1


def test_initial_delay_never_exceeds_the_rebalance_timeout() -> None:
    h = Harness()
    rid = h.join_new("a", rebalance_ms=7_000)[1]
    for at in (1_000, 4_000, 6_500):  # a new member inside every window
        h.advance(at - h.now)
        h.join_new(f"m{at}", rebalance_ms=7_000)
    h.advance(7_000 - 1 - h.now)
    assert h.reply(rid, JoinGroupResult) is None
    h.advance(1)
    assert h.must(rid, JoinGroupResult).generation_id == 1


def test_rebalance_timeout_removes_a_member_that_heartbeats_but_never_rejoins() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    a, b = ids["a"], ids["b"]
    start = h.now
    c, rc = h.join_new("c")
    ra = h.join(a, client="a")
    while h.now < start + REBALANCE_MS - 5_000:  # b's heartbeat thread lives on; its
        h.advance(5_000)  # poll loop (max.poll.interval.ms) does not
        assert h.heartbeat(b, 1) == REBALANCING
    h.advance(4_999)
    assert h.reply(ra, JoinGroupResult) is None
    h.advance(1)
    assert set(h.group.members) == {a, c} and h.group.generation_id == 2
    assert h.must(ra, JoinGroupResult).members and h.must(rc, JoinGroupResult).error == 0
    assert h.heartbeat(b, 1) == UNKNOWN
    assert h.commit(b, 1) == UNKNOWN  # what the client turns into CommitFailedError


def test_session_expiry_removes_a_silent_member_and_rebalances() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    synced_at = h.now
    for _ in range(3):
        h.advance(3_000)
        assert h.heartbeat(ids["a"], 1) == 0
    h.advance(synced_at + SESSION_MS - 1 - h.now)
    assert ids["b"] in h.group.members
    h.advance(1)
    assert ids["b"] not in h.group.members
    assert h.state() is S.PREPARING_REBALANCE
    assert h.heartbeat(ids["a"], 1) == REBALANCING


def test_a_member_that_never_syncs_is_removed_after_the_rebalance_timeout() -> None:
    h = Harness()
    (a, _), (b, _) = h.join_new("a"), h.join_new("b")
    h.complete_join()
    held = h.sync(b, 1)
    for _ in range(3):  # the leader a heartbeats but never sends its SyncGroup
        h.advance(5_000)
        assert h.heartbeat(a, 1) == 0
    h.advance(REBALANCE_MS - 15_000 - 1)
    assert a in h.group.members
    h.advance(1)
    assert a not in h.group.members
    assert h.must(held, SyncGroupResult).error == REBALANCING
    rb = h.join(b, client="b")
    r = h.must(rb, JoinGroupResult)
    assert (r.generation_id, r.leader_id) == (2, b)


def test_a_new_member_stuck_in_a_long_join_is_dropped_after_five_minutes() -> None:
    h = Harness()
    ids = h.stable_group("a")
    long_ms = 2 * NEW_MEMBER_JOIN_TIMEOUT_MS
    _, rb = h.join_new("b", rebalance_ms=long_ms)
    while h.now < NEW_MEMBER_JOIN_TIMEOUT_MS:
        h.advance(5_000)
        h.heartbeat(ids["a"], 1)
    assert h.must(rb, JoinGroupResult).error == UNKNOWN
    assert set(h.group.members) == {ids["a"]}


# -- leaving -----------------------------------------------------------------------------


def test_leave_completes_a_rebalance_waiting_for_the_leaver() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    _, rc = h.join_new("c")
    ra = h.join(ids["a"], client="a")
    result = h.leave(MemberIdentity(ids["b"]))
    assert [m.error for m in result.members] == [0]
    assert h.must(ra, JoinGroupResult).generation_id == 2
    assert h.must(rc, JoinGroupResult).generation_id == 2


def test_leave_of_a_handed_out_id_and_of_a_fenced_instance() -> None:
    h = Harness()
    pending = h.must(h.join(client="p"), JoinGroupResult).member_id
    h.join(instance="s1", client="s")
    old = h.group.roster.static["s1"]
    h.join(instance="s1", client="s")  # a restart during the rebalance
    result = h.leave(MemberIdentity(pending), MemberIdentity(old, "s1"))
    assert [m.error for m in result.members] == [0, FENCED]
    assert not h.group.roster.pending and "s1" in h.group.roster.static


# -- static membership (KIP-345) ---------------------------------------------------------


def _static_group(h: Harness, session_ms: int = SESSION_MS) -> tuple[str, str]:
    a, ra = h.join_new("a")
    rs = h.join(instance="s1", client="s", session_ms=session_ms)
    h.complete_join()
    h.sync_all({ra, rs})
    return a, h.group.roster.static["s1"]


def test_static_member_restart_takes_its_place_without_a_rebalance() -> None:
    h = Harness()
    a, old = _static_group(h)
    rid = h.join(instance="s1", client="s")
    assert h.reply(rid, JoinGroupResult) is None and len(h.stores) == 1  # stored first
    h.complete_stores()
    r = h.must(rid, JoinGroupResult)
    new = r.member_id
    assert new != old and (r.error, r.generation_id) == (0, 1)
    assert r.leader_id == a and not r.members
    assert h.state() is S.STABLE and h.group.generation_id == 1
    assert h.must(h.sync(new, 1, instance="s1"), SyncGroupResult).assignment == old.encode()
    assert h.heartbeat(new, 1, "s1") == 0 and h.heartbeat(a, 1) == 0
    assert h.heartbeat(old, 1, "s1") == FENCED
    assert h.commit(old, 1, "s1") == FENCED
    assert h.must(h.join(old, instance="s1", client="s"), JoinGroupResult).error == FENCED


def test_static_member_restart_with_new_metadata_rebalances() -> None:
    h = Harness()
    a, _ = _static_group(h)
    rid = h.join(instance="s1", client="s", protocols=[("range", b"new topics")])
    assert h.state() is S.PREPARING_REBALANCE and not h.stores
    h.join(a, client="a")
    assert h.must(rid, JoinGroupResult).generation_id == 2


def test_a_failed_store_undoes_a_static_restart() -> None:
    h = Harness()
    _, old = _static_group(h)
    rid = h.join(instance="s1", client="s")
    h.complete_stores(error=NotLeaderForPartitionError.code)
    assert h.must(rid, JoinGroupResult).error == NotCoordinatorError.code
    assert h.group.roster.static["s1"] == old and h.heartbeat(old, 1, "s1") == 0


def test_absent_static_member_keeps_its_place_through_a_rebalance() -> None:
    h = Harness()
    a, old = _static_group(h, session_ms=60_000)
    ra = h.join(a, client="a")  # the leader forces a rebalance; s1 is restarting
    h.advance(REBALANCE_MS)
    leader = h.must(ra, JoinGroupResult)
    assert leader.generation_id == 2 and old in {m.member_id for m in leader.members}
    h.sync(a, 2, {a: b"A", old: b"S"})
    h.complete_stores()
    rid = h.join(instance="s1", client="s")  # back within its session: no rebalance
    h.complete_stores()
    new = h.must(rid, JoinGroupResult).member_id
    assert h.must(h.sync(new, 2, instance="s1"), SyncGroupResult).assignment == b"S"
    assert h.group.generation_id == 2 and h.state() is S.STABLE


def test_a_leaving_member_gets_its_held_sync_answered() -> None:
    h = Harness()
    h.join_new("a")
    b, _ = h.join_new("b")
    h.complete_join()
    held = h.sync(b, 1)
    h.leave(MemberIdentity(b))  # e.g. a consumer closing while its SyncGroup is held
    assert h.must(held, SyncGroupResult).error == UNKNOWN
    assert h.state() is S.PREPARING_REBALANCE and not h.outstanding
