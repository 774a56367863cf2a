"""The consumer's sans-IO group logic: member states, what each error code does, what a
rebalance revokes and adds, the poll/session/heartbeat clocks, the leader's assignment,
subscriptions, and the group settings' validation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.assignors import (
    Assignment,
    RebalanceProtocol,
    Subscription,
    decode_assignment,
    encode_subscription,
)
from client.config import ConsumerConfig
from client.errors import (
    CommitFailedError,
    ConfigurationError,
    IllegalStateError,
    RebalanceInProgressError,
)
from client.group.listener import ConsumerRebalanceListener, check_listener
from client.group.membership import (
    POLL_TIMEOUT_REASON,
    TRANSITIONS,
    IllegalMemberTransition,
    LeaderInput,
    Membership,
    MemberState,
    common_rebalance_protocol,
    member_subscriptions,
    perform_assignment,
    rebalance_changes,
    revoked_before_join,
)
from client.group.offsets import validate_offsets
from client.group.responses import (
    COMMIT,
    FIND_COORDINATOR,
    HEARTBEAT,
    JOIN_GROUP,
    OFFSET_FETCH,
    OFFSET_FETCH_PARTITION,
    SYNC_GROUP,
    Action,
    action_for,
)
from client.group.subscription import SubscriptionState, SubscriptionType
from client.group.timers import MemberTimers
from client.types import OffsetAndMetadata, TopicPartition
from proto.errors import _REGISTRY, for_code

A = Action
S = MemberState
EAGER, COOP = RebalanceProtocol.EAGER, RebalanceProtocol.COOPERATIVE


def tp(topic: str, p: int) -> TopicPartition:
    return TopicPartition(topic, p)


# -- member states --------------------------------------------------------------------


def state(m: Membership) -> MemberState:
    return m.state  # read through a call: mypy would keep an earlier narrowing


def joined_member(generation: int = 1, member: str = "m-1", leader: str = "m-1") -> Membership:
    m = Membership()
    m.join_sent()
    m.joined(generation, member, "range", leader)
    m.synced()
    return m


def test_a_new_member_must_join_and_cannot_commit() -> None:
    m = Membership()
    assert m.state is S.UNJOINED and m.rejoin_needed
    assert not m.generation.valid and not m.sends_heartbeats
    assert isinstance(m.commit_refusal(), CommitFailedError)
    m.join_sent()
    assert not m.rejoin_needed
    assert isinstance(m.commit_refusal(), RebalanceInProgressError)


def test_join_sync_stable_then_commit_with_the_generation() -> None:
    m = Membership("instance-a")
    m.join_sent()
    m.member_id_required("c-1")  # KIP-394
    assert m.member_id == "c-1" and state(m) is S.PREPARING_REBALANCE
    m.joined(3, "c-1", "range", "c-0")
    assert state(m) is S.COMPLETING_REBALANCE and m.sends_heartbeats and not m.is_leader
    assert isinstance(m.commit_refusal(), RebalanceInProgressError)
    m.synced()
    assert m.generation_if_stable() == m.generation
    assert m.generation.generation_id == 3 and m.commit_refusal() is None
    assert m.is_static


def test_a_failed_join_keeps_the_generation_but_commits_wait() -> None:
    m = joined_member()
    m.request_rejoin("heartbeat said so")
    assert state(m) is S.STABLE and m.commit_refusal() is None  # still its generation
    m.join_sent()
    m.rebalance_failed("coordinator moved")
    assert state(m) is S.UNJOINED and m.generation.valid and m.rejoin_needed
    assert isinstance(m.commit_refusal(), RebalanceInProgressError)


def test_reset_forgets_generation_and_explains_the_commit_failure() -> None:
    m = joined_member()
    m.reset_generation("Heartbeat got UNKNOWN_MEMBER_ID")
    assert not m.generation.valid and m.member_id == "" and m.rejoin_needed
    err = m.commit_refusal()
    assert isinstance(err, CommitFailedError) and "UNKNOWN_MEMBER_ID" in str(err)


def test_poll_timeout_leave_gives_kafkas_explanation() -> None:
    m = joined_member()
    m.left(POLL_TIMEOUT_REASON)
    err = m.commit_refusal()
    assert isinstance(err, CommitFailedError)
    text = str(err)
    assert "max_poll_interval_ms" in text and "max_poll_records" in text
    assert "poll()" in text


def test_request_rejoin_keeps_the_first_reason() -> None:
    m = joined_member()
    m.request_rejoin("first")
    m.request_rejoin("second")
    assert m.rejoin_reason == "first"


@given(st.lists(st.sampled_from(list(MemberState)), max_size=20))
def test_only_table_transitions_are_allowed(path: list[MemberState]) -> None:
    m = Membership()
    for new in path:
        allowed = new is m.state or new in TRANSITIONS[m.state]
        before = m.state
        try:
            m._move(new)
        except IllegalMemberTransition:
            assert not allowed
            assert m.state is before
        else:
            assert allowed


# -- error code -> action -------------------------------------------------------------

ALL_CODES = sorted(_REGISTRY)


def test_membership_tables() -> None:
    assert action_for(JOIN_GROUP, 0) is A.OK
    assert action_for(JOIN_GROUP, 79) is A.RETRY  # MEMBER_ID_REQUIRED
    assert action_for(JOIN_GROUP, 27) is A.RETRY  # superseded / group moved on
    assert action_for(JOIN_GROUP, 25) is A.RESET_REJOIN  # UNKNOWN_MEMBER_ID
    assert action_for(JOIN_GROUP, 16) is A.REDISCOVER  # NOT_COORDINATOR
    assert action_for(JOIN_GROUP, 15) is A.REDISCOVER  # COORDINATOR_NOT_AVAILABLE
    assert action_for(JOIN_GROUP, 14) is A.BACKOFF  # COORDINATOR_LOAD_IN_PROGRESS
    for fatal in (82, 23, 26, 24, 81, 35):  # fenced, inconsistent, session, id, max size, version
        assert action_for(JOIN_GROUP, fatal) is A.FATAL, fatal
    assert action_for(SYNC_GROUP, 27) is A.REJOIN
    assert action_for(SYNC_GROUP, 22) is A.RESET_REJOIN  # ILLEGAL_GENERATION
    assert action_for(SYNC_GROUP, 82) is A.FATAL
    assert action_for(HEARTBEAT, 27) is A.REJOIN
    assert action_for(HEARTBEAT, 25) is A.RESET_REJOIN
    assert action_for(HEARTBEAT, 22) is A.RESET_REJOIN
    assert action_for(HEARTBEAT, 16) is A.REDISCOVER
    assert action_for(HEARTBEAT, 82) is A.FATAL
    assert action_for(FIND_COORDINATOR, 15) is A.BACKOFF


def test_commit_and_offset_fetch_tables() -> None:
    assert action_for(COMMIT, 0) is A.OK
    assert action_for(COMMIT, 27) is A.REJOIN  # -> RebalanceInProgressError
    assert action_for(COMMIT, 25) is A.RESET_REJOIN  # -> CommitFailedError
    assert action_for(COMMIT, 22) is A.RESET_REJOIN
    assert action_for(COMMIT, 16) is A.REDISCOVER
    assert action_for(COMMIT, 7) is A.REDISCOVER  # REQUEST_TIMED_OUT
    assert action_for(COMMIT, 3) is A.BACKOFF
    assert action_for(COMMIT, 82) is A.FATAL
    assert action_for(COMMIT, 12) is A.FAIL  # OFFSET_METADATA_TOO_LARGE
    assert action_for(OFFSET_FETCH, 16) is A.REDISCOVER
    assert action_for(OFFSET_FETCH, 14) is A.BACKOFF
    assert action_for(OFFSET_FETCH_PARTITION, 3) is A.SKIP
    assert action_for(OFFSET_FETCH_PARTITION, 88) is A.BACKOFF


@given(st.sampled_from([*ALL_CODES, -5, 999]))
def test_every_code_has_an_action_in_every_table(code: int) -> None:
    membership = (FIND_COORDINATOR, JOIN_GROUP, SYNC_GROUP, HEARTBEAT)
    for table in (*membership, COMMIT, OFFSET_FETCH, OFFSET_FETCH_PARTITION):
        action = action_for(table, code)
        if code in table:
            assert action is table[code]
        elif for_code(code).retriable:
            assert action is A.BACKOFF  # an unlisted retriable code is retried
        elif any(table is t for t in membership):
            assert action is A.FATAL
        else:
            assert action is A.FAIL


# -- what a rebalance revokes and adds -------------------------------------------------

partitions = st.frozensets(
    st.builds(tp, st.sampled_from(["a", "b", "c"]), st.integers(0, 5)), max_size=12
)


@given(partitions, partitions)
def test_cooperative_changes_keep_what_stays(
    owned: frozenset[TopicPartition], assigned: frozenset[TopicPartition]
) -> None:
    ch = rebalance_changes(COOP, owned, assigned)
    assert ch.revoked == owned - assigned
    assert ch.added == assigned - owned
    assert (owned - ch.revoked) | ch.added == assigned
    assert not ch.revoked & assigned and not ch.added & owned
    assert ch.rejoin == bool(ch.revoked)  # KIP-429: revoked -> rejoin at once


@given(partitions)
def test_eager_owns_nothing_after_the_join(assigned: frozenset[TopicPartition]) -> None:
    ch = rebalance_changes(EAGER, (), assigned)
    assert ch.added == assigned and not ch.revoked and not ch.rejoin


@given(partitions, st.frozensets(st.sampled_from(["a", "b", "c"])))
def test_revocation_before_join(owned: frozenset[TopicPartition], topics: frozenset[str]) -> None:
    assert revoked_before_join(EAGER, owned, topics) == owned
    coop = revoked_before_join(COOP, owned, topics)
    assert coop == {p for p in owned if p.topic not in topics}


def test_common_rebalance_protocol() -> None:
    assert common_rebalance_protocol(["cooperative-sticky"]) is COOP
    assert common_rebalance_protocol(["range", "cooperative-sticky"]) is EAGER
    assert common_rebalance_protocol(["roundrobin"]) is EAGER


# -- the leader's assignment ---------------------------------------------------------------


def _members(subs: dict[str, Subscription]) -> dict[str, Subscription]:
    return member_subscriptions(
        [LeaderInput(mid, s.group_instance_id, encode_subscription(s)) for mid, s in subs.items()]
    )


def test_perform_assignment_gives_every_member_an_entry() -> None:
    subs = _members({m: Subscription(("t",)) for m in ("a", "b", "c")})
    out = perform_assignment("range", subs, {"t": 6})
    got = {m: decode_assignment(data).partitions for m, data in out.items()}
    assert got == {
        "a": (tp("t", 0), tp("t", 1)),
        "b": (tp("t", 2), tp("t", 3)),
        "c": (tp("t", 4), tp("t", 5)),
    }
    out = perform_assignment("range", _members({"a": Subscription(("missing",))}), {})
    assert decode_assignment(out["a"]) == Assignment(())


def test_cooperative_assignment_never_moves_a_partition_in_one_generation() -> None:
    owned = {"a": (tp("t", 0), tp("t", 1), tp("t", 2)), "b": (tp("t", 3), tp("t", 4), tp("t", 5))}
    subs = _members(
        {
            "a": Subscription(("t",), owned["a"], b"", 4),
            "b": Subscription(("t",), owned["b"], b"", 4),
            "c": Subscription(("t",), (), b"", -1),
        }
    )
    out = perform_assignment("cooperative-sticky", subs, {"t": 6})
    got = {m: set(decode_assignment(d).partitions) for m, d in out.items()}
    assert got["c"] == set()  # nothing can go to the newcomer before its owner revoked it
    assert got["a"] <= set(owned["a"]) and got["b"] <= set(owned["b"])
    assert len(got["a"]) + len(got["b"]) == 4  # one of each revoked for the next round


def test_unknown_assignor_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="sticky"):
        perform_assignment("sticky", _members({"a": Subscription(("t",))}), {"t": 1})


# -- clocks ----------------------------------------------------------------------------------


def timers(now: float = 0) -> MemberTimers:
    return MemberTimers(
        heartbeat_interval_ms=3_000,
        session_timeout_ms=10_000,
        max_poll_interval_ms=60_000,
        retry_backoff_ms=100,
        now_ms=now,
    )


def test_heartbeat_interval_and_backoff() -> None:
    t = timers()
    t.reset(1_000)
    assert t.time_to_next_heartbeat(1_000) == 3_000
    t.heartbeat_sent(4_000)
    assert t.heartbeat_in_flight and t.time_to_next_heartbeat(4_000) == 3_000
    t.heartbeat_failed(4_050)
    assert t.time_to_next_heartbeat(4_050) == 100  # retry after the backoff
    t.heartbeat_sent(4_150)
    t.heartbeat_received(4_160)
    assert not t.session_expired(14_159)
    assert t.session_expired(14_160)


@given(st.lists(st.integers(0, 70_000), max_size=10), st.integers(0, 200_000))
def test_poll_expiry_is_measured_from_the_last_poll(polls: list[int], gap: int) -> None:
    t = timers()
    now = 0.0
    for step in polls:
        now += step
        t.polled(now)
    assert t.poll_expired(now + gap) == (gap >= 60_000)
    assert t.time_to_poll_expiry(now + gap) == max(0.0, 60_000 - gap)
    assert t.time_to_next_event(now + gap) <= t.time_to_poll_expiry(now + gap)


# -- subscriptions ---------------------------------------------------------------------------


def test_subscription_kinds_are_mutually_exclusive() -> None:
    s = SubscriptionState()
    assert s.subscribe_topics(["a", "b"], None)
    assert not s.subscribe_topics(["b", "a"], None)  # same set: no rejoin
    assert s.auto and s.type is SubscriptionType.AUTO_TOPICS
    with pytest.raises(IllegalStateError):
        s.assign_manually()
    with pytest.raises(IllegalStateError):
        s.subscribe_pattern("a.*", None)
    s.unsubscribe()
    s.assign_manually()
    with pytest.raises(IllegalStateError):
        s.subscribe_topics(["a"], None)
    with pytest.raises(ConfigurationError):
        SubscriptionState().subscribe_topics([], None)
    with pytest.raises(ConfigurationError):
        SubscriptionState().subscribe_topics(["a", ""], None)


def test_pattern_matches_whole_non_internal_names() -> None:
    s = SubscriptionState()
    s.subscribe_pattern(re.compile(r"orders-\d+"), None)
    assert s.match([("orders-1", False), ("orders-1x", False), ("__orders-2", True)])
    assert s.topics == {"orders-1"}
    assert not s.match([("orders-1", False)])
    assert s.match([("orders-1", False), ("orders-22", False)])
    assert s.topics == {"orders-1", "orders-22"}
    with pytest.raises(ConfigurationError, match="regex"):
        SubscriptionState().subscribe_pattern("(", None)


# -- commit arguments and settings -------------------------------------------------------------


def test_validate_offsets() -> None:
    t0 = tp("t", 0)
    assert validate_offsets({t0: 5}) == {t0: OffsetAndMetadata(5)}
    assert validate_offsets({("t", 1): OffsetAndMetadata(2, "m")}) == {
        tp("t", 1): OffsetAndMetadata(2, "m")
    }
    for bad in ({t0: -1}, {t0: "5"}, {("t",): 1}, {t0: OffsetAndMetadata(1, 5)}, [t0]):  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            validate_offsets(bad)


def test_group_settings() -> None:
    c = ConsumerConfig.build(group_id="g", partition_assignment_strategy="cooperative-sticky")
    assert c.enable_auto_commit and c.rebalance_protocol is COOP
    assert c.rebalance_timeout_ms == c.max_poll_interval_ms == 300_000
    assert (c.session_timeout_ms, c.heartbeat_interval_ms) == (45_000, 3_000)
    assert ConsumerConfig.build().enable_auto_commit is False  # no group, no auto commit
    bad: list[tuple[dict[str, object], str]] = [
        ({"group_id": "g", "heartbeat_interval_ms": 45_000}, "heartbeat_interval_ms"),
        ({"group_id": "g", "session_timeout_ms": 0}, "session_timeout_ms"),
        ({"group_id": "g", "max_poll_interval_ms": -1}, "max_poll_interval_ms"),
        ({"group_id": "g", "auto_commit_interval_ms": 0}, "auto_commit_interval_ms"),
        ({"group_id": "g", "partition_assignment_strategy": ["sticky"]}, "sticky"),
        ({"group_id": "g", "partition_assignment_strategy": []}, "partition_assignment"),
        ({"group_id": "g", "partition_assignment_strategy": ["range", "range"]}, "twice"),
        ({"group_instance_id": "i"}, "group_id"),
        ({"enable_auto_commit": True}, "group_id"),
        ({"group_id": ""}, "group_id"),
        ({"group_id": "g", "allow_auto_create_topics": "yes"}, "allow_auto_create_topics"),
    ]
    for kwargs, word in bad:
        with pytest.raises(ConfigurationError, match=word):
            ConsumerConfig.build(**kwargs)  # type: ignore[arg-type]


def test_listener_checks() -> None:
    class Async(ConsumerRebalanceListener):
        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            pass

    check_listener(Async(), blocking=False)
    with pytest.raises(ConfigurationError, match="thread"):
        check_listener(Async(), blocking=True)  # the blocking Consumer cannot await it
    with pytest.raises(ConfigurationError, match="on_partitions"):
        check_listener(object(), blocking=False)
