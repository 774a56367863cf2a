"""The partition assignors: Kafka's documented range and roundrobin results, coverage and
balance as properties, and cooperative-sticky's stickiness and incremental (KIP-429)
hand-over; plus the subscription/assignment encoding."""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.assignors import (
    ASSIGNORS,
    Assignment,
    RebalanceProtocol,
    Subscription,
    cooperative_sticky_assign,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    range_assign,
    roundrobin_assign,
)
from client.types import TopicPartition as TP
from proto.codec import packb
from proto.errors import RemoteProtocolError

Subs = dict[str, Subscription]
Counts = dict[str, int]

TOPICS = ["t0", "t1", "t2", "t3"]
counts_st = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 9), min_size=1)
member_ids_st = st.lists(
    st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=7, unique=True
)


@st.composite
def group_st(draw: st.DrawFn, equal: bool = False) -> tuple[Subs, Counts]:
    counts = draw(counts_st)
    members = draw(member_ids_st)
    known = sorted(counts)
    shared = draw(st.lists(st.sampled_from(known), min_size=1, unique=True))
    subs = {}
    for m in members:
        topics = (
            shared
            if equal
            else draw(st.lists(st.sampled_from([*known, "gone"]), min_size=1, unique=True))
        )
        instance = draw(st.one_of(st.none(), st.just(f"i-{m}")))
        subs[m] = Subscription(tuple(topics), group_instance_id=instance)
    return subs, counts


def subscribed_partitions(subs: Subs, counts: Counts) -> set[TP]:
    return {
        TP(t, p) for s in subs.values() for t in s.topics if t in counts for p in range(counts[t])
    }


def check_valid(
    subs: Subs, counts: Counts, result: Mapping[str, Assignment], complete: bool
) -> None:
    """Every member answered; only subscribed topics; no partition twice; and (complete)
    every partition some member subscribes to is assigned."""
    assert set(result) == set(subs)
    owners = Counter(tp for a in result.values() for tp in a.partitions)
    assert all(n == 1 for n in owners.values()), owners
    for m, a in result.items():
        assert all(
            tp.topic in subs[m].topics and tp.partition < counts[tp.topic] for tp in a.partitions
        )
    if complete:
        assert set(owners) == subscribed_partitions(subs, counts)


def sizes(result: Mapping[str, Assignment]) -> list[int]:
    return [len(a.partitions) for a in result.values()]


def tps(*names: str) -> tuple[TP, ...]:
    return tuple(TP(n[:2], int(n[3:])) for n in names)


# -- Kafka's documented examples ---------------------------------------------------------


def test_range_kafka_example() -> None:
    subs = {"C0": Subscription(("t0", "t1")), "C1": Subscription(("t0", "t1"))}
    result = range_assign(subs, {"t0": 3, "t1": 3})
    assert result["C0"].partitions == tps("t0p0", "t0p1", "t1p0", "t1p1")
    assert result["C1"].partitions == tps("t0p2", "t1p2")


def test_roundrobin_kafka_examples() -> None:
    equal = {"C0": Subscription(("t0", "t1")), "C1": Subscription(("t0", "t1"))}
    result = roundrobin_assign(equal, {"t0": 3, "t1": 3})
    assert result["C0"].partitions == tps("t0p0", "t0p2", "t1p1")
    assert result["C1"].partitions == tps("t0p1", "t1p0", "t1p2")
    unequal = {
        "C0": Subscription(("t0",)),
        "C1": Subscription(("t0", "t1")),
        "C2": Subscription(("t0", "t1", "t2")),
    }
    result = roundrobin_assign(unequal, {"t0": 1, "t1": 2, "t2": 3})
    assert result["C0"].partitions == tps("t0p0")
    assert result["C1"].partitions == tps("t1p0")
    assert result["C2"].partitions == tps("t1p1", "t2p0", "t2p1", "t2p2")


def test_static_members_sort_first_by_instance_id() -> None:
    subs = {
        "a": Subscription(("t0",)),
        "z": Subscription(("t0",), group_instance_id="i1"),
        "m": Subscription(("t0",), group_instance_id="i0"),
    }
    result = range_assign(subs, {"t0": 3})
    assert [result[m].partitions for m in ("m", "z", "a")] == [
        tps("t0p0"),
        tps("t0p1"),
        tps("t0p2"),
    ]


def test_registry_names_and_protocols() -> None:
    assert set(ASSIGNORS) == {"range", "roundrobin", "cooperative-sticky"}
    assert RebalanceProtocol.COOPERATIVE in ASSIGNORS["cooperative-sticky"].protocols
    assert ASSIGNORS["range"].protocols == (RebalanceProtocol.EAGER,)


# -- properties of all three -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@given(group=group_st())
def test_every_partition_goes_to_exactly_one_subscriber(
    name: str, group: tuple[Subs, Counts]
) -> None:
    subs, counts = group
    check_valid(subs, counts, ASSIGNORS[name].assign(subs, counts), complete=True)


@pytest.mark.parametrize("name", ["roundrobin", "cooperative-sticky"])
@given(group=group_st(equal=True))
def test_equal_subscriptions_are_balanced(name: str, group: tuple[Subs, Counts]) -> None:
    subs, counts = group
    n = sizes(ASSIGNORS[name].assign(subs, counts))
    assert max(n) - min(n) <= 1


@given(group=group_st())
def test_range_balances_each_topic_with_extras_to_the_first_members(
    group: tuple[Subs, Counts],
) -> None:
    subs, counts = group
    result = range_assign(subs, counts)
    order = sorted(
        subs, key=lambda m: (subs[m].group_instance_id is None, subs[m].group_instance_id or "", m)
    )
    for topic, n in counts.items():
        members = [m for m in order if topic in subs[m].topics]
        got = [sum(tp.topic == topic for tp in result[m].partitions) for m in members]
        if members:
            q, r = divmod(n, len(members))
            assert got == [q + 1] * r + [q] * (len(members) - r)


# -- cooperative-sticky ------------------------------------------------------------------


def rebalance(
    subs: Subs, counts: Counts, owned: Mapping[str, tuple[TP, ...]], generation: int
) -> dict[str, Assignment]:
    with_owned = {
        m: Subscription(
            s.topics, owned.get(m, ()), generation=generation, group_instance_id=s.group_instance_id
        )
        for m, s in subs.items()
    }
    return cooperative_sticky_assign(with_owned, counts)


def converge(
    subs: Subs, counts: Counts, owned: Mapping[str, tuple[TP, ...]], generation: int
) -> dict[str, Assignment]:
    """The incremental protocol's two rounds: revoke, then hand out what was revoked."""
    first = rebalance(subs, counts, owned, generation)
    second = rebalance(subs, counts, {m: a.partitions for m, a in first.items()}, generation + 1)
    for m in subs:  # the follow-up round only adds
        assert set(first[m].partitions) <= set(second[m].partitions)
    return second


def test_cooperative_member_joins_then_gets_revoked_partitions_next_round() -> None:
    subs = {m: Subscription(("t0",)) for m in "ABC"}
    counts = {"t0": 6}
    before = converge(subs, counts, {}, 1)
    assert [before[m].partitions for m in "ABC"] == [
        tps("t0p0", "t0p1"),
        tps("t0p2", "t0p3"),
        tps("t0p4", "t0p5"),
    ]
    subs["D"] = Subscription(("t0",))
    owned = {m: before[m].partitions for m in "ABC"}
    first = rebalance(subs, counts, owned, 2)
    assert first["D"].partitions == () and first["C"].partitions == tps("t0p4")  # t0p5 revoked
    second = rebalance(subs, counts, {m: a.partitions for m, a in first.items()}, 3)
    assert second["D"].partitions == tps("t0p5")
    assert all(second[m].partitions == first[m].partitions for m in "ABC")


def test_cooperative_partitions_of_a_departed_member_move_at_once() -> None:
    subs = {m: Subscription(("t0",)) for m in "ABC"}
    before = converge(subs, {"t0": 6}, {}, 1)
    del subs["C"]
    after = rebalance(subs, {"t0": 6}, {m: before[m].partitions for m in "AB"}, 2)
    check_valid(subs, {"t0": 6}, after, complete=True)
    assert all(set(before[m].partitions) <= set(after[m].partitions) for m in "AB")


def test_cooperative_stale_claims_are_ignored_and_contested_ones_wait() -> None:
    counts = {"t0": 2}
    stale = {
        "A": Subscription(("t0",), tps("t0p0"), generation=5),
        "B": Subscription(("t0",), tps("t0p0", "t0p1"), generation=4),  # fenced since
    }
    result = cooperative_sticky_assign(stale, counts)
    assert result["A"].partitions == tps("t0p0") and result["B"].partitions == tps("t0p1")
    contested = {
        "A": Subscription(("t0",), tps("t0p0"), generation=5),
        "B": Subscription(("t0",), tps("t0p0"), generation=5),
    }
    result = cooperative_sticky_assign(contested, counts)
    assert TP("t0", 0) not in result["A"].partitions + result["B"].partitions


Change = tuple[Subs, Counts, Subs, Counts]


@st.composite
def membership_change_st(draw: st.DrawFn, equal: bool) -> Change:
    """A group before and after members come and go (and, unless ``equal``, topics change
    size): (subscriptions, counts) before and after."""
    subs, counts = draw(group_st(equal=equal))
    members = sorted(subs)
    stay = draw(st.lists(st.sampled_from(members), unique=True, min_size=1))
    newcomers = draw(st.lists(st.text("xyz", min_size=1, max_size=2), max_size=3, unique=True))
    after = {m: subs[m] for m in stay}
    for m in newcomers:
        after.setdefault(m, Subscription(subs[members[0]].topics))
    new_counts = (
        counts if equal else draw(st.fixed_dictionaries({t: st.integers(0, 9) for t in counts}))
    )
    return subs, counts, after, new_counts


def owned_by(
    result: Mapping[str, Assignment], members: Container[str]
) -> dict[str, tuple[TP, ...]]:
    return {m: a.partitions for m, a in result.items() if m in members}


def check_incremental(
    result: Mapping[str, Assignment], owned: Mapping[str, tuple[TP, ...]]
) -> None:
    """KIP-429: a member never gets a partition another member still owns."""
    for m, a in result.items():
        others = {tp for o, theirs in owned.items() if o != m for tp in theirs}
        assert not set(a.partitions) & others, (m, a, owned)


@settings(max_examples=200)
@given(change=membership_change_st(equal=True))
def test_cooperative_moves_only_what_balance_requires(change: Change) -> None:
    before_subs, before_counts, subs, counts = change
    owned = owned_by(converge(before_subs, before_counts, {}, 1), subs)
    first = rebalance(subs, counts, owned, 2)
    check_valid(subs, counts, first, complete=False)
    check_incremental(first, owned)
    # sticky: together the members keep as much as any balanced assignment could
    total = len(subscribed_partitions(subs, counts))
    quota, extra = divmod(total, len(subs))
    kept = sum(len(set(first[m].partitions) & set(owned.get(m, ()))) for m in subs)
    over = sum(1 for m in subs if len(owned.get(m, ())) > quota)
    assert kept == sum(min(len(owned.get(m, ())), quota) for m in subs) + min(extra, over)
    # the follow-up round hands out what was revoked and moves nothing else
    second = rebalance(subs, counts, owned_by(first, subs), 3)
    check_valid(subs, counts, second, complete=True)
    assert all(set(first[m].partitions) <= set(second[m].partitions) for m in subs)
    assert max(sizes(second)) - min(sizes(second)) <= 1
    assert rebalance(subs, counts, owned_by(second, subs), 4) == second  # a fixed point


@settings(max_examples=200)
@given(change=membership_change_st(equal=False))
def test_cooperative_with_unequal_subscriptions_converges_balanced(change: Change) -> None:
    before_subs, before_counts, subs, counts = change
    owned = owned_by(converge(before_subs, before_counts, {}, 1), subs)
    for generation in range(2, 6):
        result = rebalance(subs, counts, owned, generation)
        check_valid(subs, counts, result, complete=False)
        check_incremental(result, owned)
        if owned_by(result, subs) == {m: owned.get(m, ()) for m in subs}:
            break  # nothing left to hand over or move
        owned = owned_by(result, subs)
    else:
        raise AssertionError(f"no fixed point after 4 rounds: {owned}")
    check_valid(subs, counts, result, complete=True)
    # balanced as Kafka's sticky assignor defines it: no partition could move to a
    # member subscribed to its topic that has two fewer
    n = {m: len(a.partitions) for m, a in result.items()}
    for m, a in result.items():
        for tp in a.partitions:
            assert all(n[o] >= n[m] - 1 for o in subs if tp.topic in subs[o].topics)


# -- encoding ----------------------------------------------------------------------------

tp_st = st.builds(TP, st.sampled_from(TOPICS), st.integers(0, 2**31 - 1))


@given(
    topics=st.lists(st.text(max_size=10), max_size=4),
    owned=st.lists(tp_st, max_size=8, unique=True),
    user_data=st.binary(max_size=16),
    generation=st.integers(-1, 2**31 - 1),
)
def test_subscription_round_trip(
    topics: list[str], owned: list[TP], user_data: bytes, generation: int
) -> None:
    sub = Subscription(tuple(topics), tuple(sorted(owned)), user_data, generation, "inst")
    assert decode_subscription(encode_subscription(sub), "inst") == sub


@given(partitions=st.lists(tp_st, max_size=12, unique=True), user_data=st.binary(max_size=16))
def test_assignment_round_trip(partitions: list[TP], user_data: bytes) -> None:
    a = Assignment(tuple(sorted(partitions)), user_data)
    assert decode_assignment(encode_assignment(a)) == a


def test_a_newer_version_with_more_fields_still_decodes() -> None:
    newer = packb([7, ["t0"], [["t0", [1]]], b"u", 3, "a future field"])
    assert decode_subscription(newer) == Subscription(("t0",), tps("t0p1"), b"u", 3)
    assert decode_assignment(packb([1, [["t0", [0, 2]]], b"", {"rack": "r1"}])).partitions == tps(
        "t0p0", "t0p2"
    )
    assert decode_assignment(b"") == Assignment(())


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        packb({"v": 0}),
        packb([]),
        packb([-1, [], [], b"", 0]),
        packb([0, ["t"]]),
        packb([0, "t", [], b"", 0]),
    ],
)
def test_garbage_metadata_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_subscription(data)
