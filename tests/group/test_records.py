"""What a group leaves behind and shows: the stored group record (and a coordinator
rebuilding the group from it), DescribeGroups, commits, unloading and deletion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.group import (
    Group,
    GroupMetadataRecord,
    GroupState,
    JoinGroupResult,
    MemberIdentity,
    SyncGroupResult,
)
from proto.codec import packb, unpackb
from proto.errors import (
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupIdNotFoundError,
    NonEmptyGroupError,
    NotCoordinatorError,
    RebalanceInProgressError,
    RemoteProtocolError,
    UnknownMemberIdError,
)
from tests.group.harness import SESSION_MS, Harness, counter_ids

S = GroupState
UNAVAILABLE = CoordinatorNotAvailableError.code


def test_the_stored_record_rebuilds_the_group_on_a_new_coordinator() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    record = h.records[-1]
    assert (record.generation, record.protocol, record.leader) == (1, "range", ids["a"])
    assert {m.member_id: m.assignment for m in record.members} == {
        mid: mid.encode() for mid in ids.values()
    }
    # through msgpack, as the runtime writes it to __consumer_offsets
    loaded = GroupMetadataRecord.from_dict(unpackb(packb(record.to_dict())))
    assert loaded == record

    new = Harness(group=Group.from_record(loaded, now_ms=100_000, new_member_id=counter_ids()))
    new.now = 100_000
    assert new.state() is S.STABLE and new.group.generation_id == 1
    assert new.group.leader_id == ids["a"] and new.group.protocol_name == "range"
    assert new.heartbeat(ids["a"], 1) == 0
    synced = new.must(new.sync(ids["b"], 1), SyncGroupResult)
    assert synced.assignment == ids["b"].encode()
    assert new.commit(ids["a"], 0) != 0 and new.commit(ids["a"], 1) == 0
    # sessions restart at load time; b, silent after its sync, expires SESSION_MS later
    new.advance(SESSION_MS - 1)
    new.heartbeat(ids["a"], 1)
    new.advance(1)
    assert ids["b"] not in new.group.members and new.state() is S.PREPARING_REBALANCE


def test_an_empty_group_record_keeps_the_generation() -> None:
    h = Harness()
    a, _ = h.join_new("a")
    h.complete_join()
    h.leave(MemberIdentity(a))
    h.complete_stores()
    assert h.state() is S.EMPTY and h.group.generation_id == 2
    record = h.records[-1]
    assert record.members == () and record.generation == 2 and record.leader is None
    group = Group.from_record(GroupMetadataRecord.from_dict(record.to_dict()), now_ms=0)
    assert group.state is S.EMPTY and group.generation_id == 2
    again = Harness(group=group)
    _, rid = again.join_new("b")
    again.complete_join()
    assert again.must(rid, JoinGroupResult).generation_id == 3


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: [d],
        lambda d: {**d, "version": -1},
        lambda d: {**d, "generation": True},
        lambda d: {**d, "members": {}},
        lambda d: {**d, "leader": "nobody"},
        lambda d: {**d, "protocol": None},
        lambda d: {**d, "members": [{**d["members"][0], "assignment": "text"}]},
        lambda d: {k: v for k, v in d.items() if k != "group_id"},
    ],
)
def test_a_malformed_record_is_a_protocol_error(mangle: Callable[[dict[str, Any]], Any]) -> None:
    h = Harness()
    h.stable_group("a")
    good = h.records[-1].to_dict()
    with pytest.raises(RemoteProtocolError):
        GroupMetadataRecord.from_dict(mangle(good))


def test_describe_shows_protocol_and_assignments_only_when_stable() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    d = h.group.describe()
    assert (d.group_id, d.state, d.protocol_type, d.protocol) == (
        "g",
        "Stable",
        "consumer",
        "range",
    )
    assert [
        (m.member_id, m.client_id, m.client_host, m.metadata, m.assignment) for m in d.members
    ] == [(ids[c], c, f"/10.0.0.{c}", b"range-meta", ids[c].encode()) for c in ("a", "b")]
    h.join_new("c")
    d = h.group.describe()
    assert (d.state, d.protocol) == ("PreparingRebalance", "")
    assert len(d.members) == 3 and all(m.metadata == m.assignment == b"" for m in d.members)


def test_commit_checks() -> None:
    h = Harness()
    assert h.commit("", -1) == 0  # a group that only stores offsets
    ids = h.stable_group("a")
    assert h.commit("", -1) == UnknownMemberIdError.code  # not while it has members
    assert h.commit(ids["a"], 1) == 0
    h.join(instance="s1", client="s")
    h.join(ids["a"], client="a")  # rejoin completes the rebalance: CompletingRebalance
    assert h.state() is S.COMPLETING_REBALANCE
    assert h.commit(ids["a"], 2) == RebalanceInProgressError.code
    old = h.group.roster.static["s1"]
    h.join(instance="s1", client="s")  # restarted: the old id is fenced
    assert h.commit(old, 2, "s1") == FencedInstanceIdError.code


def test_unload_answers_held_requests_and_the_group_goes_dead() -> None:
    h = Harness()
    ids = h.stable_group("a", "b")
    _, rc = h.join_new("c")
    ra = h.join(ids["a"], client="a")
    h.collect(h.group.unload(h.now))
    assert h.must(ra, JoinGroupResult).error == NotCoordinatorError.code
    assert h.must(rc, JoinGroupResult).error == NotCoordinatorError.code
    assert not h.outstanding and h.state() is S.DEAD and not h.group.members
    assert h.must(h.join(client="d"), JoinGroupResult).error == UNAVAILABLE
    assert h.heartbeat(ids["a"], 1) == UNAVAILABLE
    assert h.commit(ids["a"], 1) == UNAVAILABLE
    assert h.leave(MemberIdentity(ids["b"])).error == UNAVAILABLE
    assert h.group.delete(h.now) == GroupIdNotFoundError.code
    assert h.group.next_deadline_ms() is None


def test_unload_during_sync_and_a_late_store_completion() -> None:
    h = Harness()
    (a, _), (b, _) = h.join_new("a"), h.join_new("b")
    h.complete_join()
    rb, ra = h.sync(b, 1), h.sync(a, 1, {a: b"A", b: b"B"})
    h.collect(h.group.unload(h.now))
    assert h.must(ra, SyncGroupResult).error == NotCoordinatorError.code
    assert h.must(rb, SyncGroupResult).error == NotCoordinatorError.code
    h.complete_stores()  # the append finishes after the partition moved: ignored
    assert h.state() is S.DEAD and not h.outstanding


def test_only_an_empty_group_can_be_deleted() -> None:
    h = Harness()
    h.stable_group("a")
    assert h.group.delete(h.now) == NonEmptyGroupError.code
    empty = Harness()
    assert empty.group.delete(0) == 0 and empty.state() is S.DEAD


def test_next_deadline_follows_the_earliest_timer() -> None:
    h = Harness()
    assert h.group.next_deadline_ms() is None
    h.join_new("a")
    assert h.group.next_deadline_ms() == 3_000  # the initial delay
    h.complete_join()
    h.sync("a-0", 1, {"a-0": b""})
    h.complete_stores()
    assert h.group.next_deadline_ms() == 3_000 + SESSION_MS  # a's session
