"""A static consumer's restart (KIP-345) when its metadata carries what it owns: the
coordinator compares what it asks for (topics, user data), not what it holds, so a
cooperative member restarting with nothing owned does not rebalance; anything else
compares bytes, and a known member's rejoin keeps Kafka's byte rule (KIP-429's follow-up
rebalance depends on it)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.group import Group, GroupState, JoinGroupResult, SyncGroupResult
from broker.group.subscriptions import owes_follow_up_rejoin, same_subscriptions
from proto.consumer_protocol import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
    Partitions,
    encode_assignment,
    encode_subscription,
)
from proto.errors import NotLeaderForPartitionError
from tests.group.harness import Harness, counter_ids

S = GroupState
COOP = "cooperative-sticky"
A_PARTS: Partitions = (("t0", 0), ("t0", 1))
S_PARTS: Partitions = (("t0", 2), ("t0", 3))


def meta(
    topics: Sequence[str] = ("t0",),
    owned: Partitions = (),
    generation: int = -1,
    user_data: bytes = b"",
) -> bytes:
    return encode_subscription(
        ConsumerProtocolSubscription(tuple(topics), owned, user_data, generation)
    )


def coop(metadata: bytes) -> list[tuple[str, bytes]]:
    return [(COOP, metadata)]


def assignment(parts: Partitions) -> bytes:
    return encode_assignment(ConsumerProtocolAssignment(parts))


def _cooperative_group(
    h: Harness, *, protocol_type: str = "consumer", s_assigned: Partitions = S_PARTS
) -> tuple[str, str]:
    """Dynamic leader ``a`` and static ``s1`` in a Stable group at generation 2, each
    having joined generation 2 reporting what it owned in generation 1 (A_PARTS and
    S_PARTS), as a cooperative consumer does. Returns (a, s1's member id)."""
    first = h.join(client="a", protocols=coop(meta()), protocol_type=protocol_type)
    a = h.must(first, JoinGroupResult).member_id
    ra = h.join(a, client="a", protocols=coop(meta()), protocol_type=protocol_type)
    rs = h.join(instance="s1", client="s", protocols=coop(meta()), protocol_type=protocol_type)
    h.complete_join()
    s = h.must(rs, JoinGroupResult).member_id
    h.sync(a, 1, {a: assignment(A_PARTS), s: assignment(S_PARTS)})
    h.sync(s, 1, instance="s1")
    h.complete_stores()
    # The leader's rejoin (with what it owns) rebalances; s1 follows with what it owns.
    ra = h.join(
        a,
        client="a",
        protocols=coop(meta(owned=A_PARTS, generation=1)),
        protocol_type=protocol_type,
    )
    rs = h.join(
        s,
        instance="s1",
        client="s",
        protocols=coop(meta(owned=S_PARTS, generation=1)),
        protocol_type=protocol_type,
    )
    assert h.must(ra, JoinGroupResult).generation_id == 2
    assert h.must(rs, JoinGroupResult).generation_id == 2
    h.sync(a, 2, {a: assignment(A_PARTS), s: assignment(s_assigned)})
    h.sync(s, 2, instance="s1")
    h.complete_stores()
    assert h.state() is S.STABLE and h.group.generation_id == 2
    return a, s


def test_a_cooperative_static_restart_owning_nothing_does_not_rebalance() -> None:
    h = Harness()
    a, old = _cooperative_group(h)
    fresh = meta()  # a new process: nothing owned, generation -1
    rid = h.join(instance="s1", client="s", protocols=coop(fresh))
    assert h.reply(rid, JoinGroupResult) is None and len(h.stores) == 1  # stored first
    assert h.state() is S.STABLE
    h.complete_stores()
    r = h.must(rid, JoinGroupResult)
    new = r.member_id
    assert new != old and (r.error, r.generation_id, r.leader_id) == (0, 2, a)
    assert h.must(h.sync(new, 2, instance="s1"), SyncGroupResult).assignment == assignment(S_PARTS)
    assert h.group.generation_id == 2 and h.state() is S.STABLE
    assert h.heartbeat(a, 2) == 0 and h.heartbeat(new, 2, "s1") == 0
    # The fresh metadata is what the group now holds (and stored): the leader's next
    # assignment sees s1 owning nothing rather than its predecessor's partitions.
    (stored,) = [m for m in h.records[-1].members if m.group_instance_id == "s1"]
    assert stored.member_id == new and stored.subscription == fresh
    assert h.group.roster[new].protocols == ((COOP, fresh),)


def test_topic_order_alone_is_no_change() -> None:
    h = Harness()
    _cooperative_group(h)
    h.join(instance="s1", client="s", protocols=coop(meta(["t0", "t0"])))
    assert h.state() is S.STABLE and len(h.stores) == 1


@pytest.mark.parametrize(
    "protocols",
    [
        coop(meta(["t0", "t1"])),  # subscribes to another topic too
        coop(meta(["t1"])),
        coop(meta(user_data=b"rack-b")),
        [(COOP, meta()), ("range", meta())],  # another protocol offered
        coop(b"not a subscription"),
    ],
    ids=["more-topics", "other-topics", "user-data", "protocols", "undecodable"],
)
def test_a_static_restart_asking_for_something_else_rebalances(
    protocols: list[tuple[str, bytes]],
) -> None:
    h = Harness()
    a, _ = _cooperative_group(h)
    rid = h.join(instance="s1", client="s", protocols=protocols)
    assert h.state() is S.PREPARING_REBALANCE and not h.stores
    h.join(a, client="a", protocols=coop(meta(owned=A_PARTS, generation=2)))
    assert h.must(rid, JoinGroupResult).generation_id == 3


def test_other_protocol_types_compare_bytes() -> None:
    h = Harness()
    _cooperative_group(h, protocol_type="connect")
    h.join(instance="s1", client="s", protocols=coop(meta()), protocol_type="connect")
    assert h.state() is S.PREPARING_REBALANCE and not h.stores


def test_a_restart_that_still_owed_a_follow_up_rejoin_rebalances() -> None:
    """s1 joined generation 2 owning t0p2 and t0p3 and was assigned only t0p2: it was to
    revoke t0p3 and rejoin. Its new process owns nothing and never would, so t0p3 would
    stay unassigned: the restart rebalances instead."""
    h = Harness()
    a, _ = _cooperative_group(h, s_assigned=(("t0", 2),))
    rid = h.join(instance="s1", client="s", protocols=coop(meta()))
    assert h.state() is S.PREPARING_REBALANCE and not h.stores
    h.join(a, client="a", protocols=coop(meta(owned=A_PARTS, generation=2)))
    assert h.must(rid, JoinGroupResult).generation_id == 3


def test_a_known_followers_rejoin_owning_less_rebalances() -> None:
    """Kafka's byte comparison for a known member: a cooperative follower rejoining after
    revoking starts the follow-up rebalance (KIP-429) with metadata whose only change is
    what it owns."""
    h = Harness()
    _, s = _cooperative_group(h, s_assigned=(("t0", 2),))
    rid = h.join(s, instance="s1", client="s", protocols=coop(meta(owned=(("t0", 2),))))
    assert h.state() is S.PREPARING_REBALANCE and h.reply(rid, JoinGroupResult) is None


def test_a_failed_store_restores_the_old_metadata() -> None:
    h = Harness()
    _, old = _cooperative_group(h)
    before = h.group.roster[old].protocols
    rid = h.join(instance="s1", client="s", protocols=coop(meta()))
    h.complete_stores(error=NotLeaderForPartitionError.code)
    assert h.must(rid, JoinGroupResult).error != 0
    assert h.group.roster.static["s1"] == old and h.group.roster[old].protocols == before


def test_a_restart_after_a_coordinator_moved_does_not_rebalance() -> None:
    """A reloaded group keeps only the chosen protocol's metadata, as stored."""
    h = Harness()
    _, old = _cooperative_group(h)
    loaded = Group.from_record(h.records[-1], now_ms=h.now, new_member_id=counter_ids())
    h2 = Harness(group=loaded)
    rid = h2.join(instance="s1", client="s", protocols=coop(meta()))
    h2.complete_stores()
    new = h2.must(rid, JoinGroupResult).member_id
    assert new != old and h2.state() is S.STABLE and h2.group.generation_id == 2
    assert h2.must(h2.sync(new, 2, instance="s1"), SyncGroupResult).assignment == assignment(
        S_PARTS
    )


# -- the comparison ----------------------------------------------------------------------

topics_st = st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)
owned_st = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3)), max_size=4, unique=True
)
user_data_st = st.sampled_from([b"", b"x", b"y"])


@given(
    topics=st.tuples(topics_st, topics_st),
    owned=st.tuples(owned_st, owned_st),
    user_data=st.tuples(user_data_st, user_data_st),
    generation=st.tuples(st.integers(-1, 5), st.integers(-1, 5)),
)
def test_consumer_subscriptions_match_iff_topic_sets_and_user_data_do(
    topics: tuple[list[str], list[str]],
    owned: tuple[list[tuple[str, int]], list[tuple[str, int]]],
    user_data: tuple[bytes, bytes],
    generation: tuple[int, int],
) -> None:
    old, new = (
        ((COOP, meta(topics[i], tuple(owned[i]), generation[i], user_data[i])),) for i in (0, 1)
    )
    expected = set(topics[0]) == set(topics[1]) and user_data[0] == user_data[1]
    assert same_subscriptions("consumer", old, new) is expected
    assert same_subscriptions("other", old, new) is (old == new)


@given(st.binary(max_size=8), st.binary(max_size=8))
def test_undecodable_consumer_metadata_compares_bytes(a: bytes, b: bytes) -> None:
    assert same_subscriptions("consumer", ((COOP, a),), ((COOP, b),)) is (a == b)


def test_follow_up_owed_only_for_owned_partitions_the_assignment_took() -> None:
    owned = meta(owned=S_PARTS, generation=1)
    assert not owes_follow_up_rejoin("consumer", owned, assignment(S_PARTS))
    assert not owes_follow_up_rejoin("consumer", owned, assignment((*S_PARTS, ("t1", 0))))
    assert owes_follow_up_rejoin("consumer", owned, assignment(S_PARTS[:1]))
    assert owes_follow_up_rejoin("consumer", owned, b"")  # the leader left it out
    assert owes_follow_up_rejoin("consumer", owned, b"garbage")
    assert not owes_follow_up_rejoin("consumer", meta(), b"garbage")
    assert not owes_follow_up_rejoin("consumer", b"garbage", b"")
    assert not owes_follow_up_rejoin("connect", owned, b"")
