"""Consumer groups against real broker processes: how partitions are shared and handed
over, commits, the poll timeout, static membership, pattern subscriptions, and a blocking
consumer's listener that commits. One cluster for the module; each test has its own topic
and group."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from client import (
    Admin,
    Consumer,
    ConsumerRebalanceListener,
    NewTopic,
    OffsetAndMetadata,
    TopicPartition,
)
from client.aio import AsyncAdmin, AsyncConsumer, AsyncProducer
from client.errors import CommitFailedError
from tests.integration.cluster import LocalCluster

SETTINGS = {
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "500",
}
_names = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("groups")
    c = LocalCluster(root, brokers=2, settings=SETTINGS).start()
    try:
        yield c
    finally:
        c.stop()


async def new_topic(cluster: LocalCluster, partitions: int, prefix: str = "t") -> str:
    name = f"{prefix}-{next(_names)}"
    async with AsyncAdmin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, partitions, 2)])
    return name


class Recorder(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.events.append(("revoked", frozenset(revoked)))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.events.append(("assigned", frozenset(assigned)))

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.events.append(("lost", frozenset(lost)))

    def of(self, kind: str) -> list[frozenset[TopicPartition]]:
        return [parts for k, parts in self.events if k == kind and parts]


def member(cluster: LocalCluster, group: str, *topics: str, **kw: Any) -> AsyncConsumer:
    settings: dict[str, Any] = {
        "bootstrap_servers": cluster.bootstrap,
        "group_id": group,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 3_000,
        "heartbeat_interval_ms": 200,
        "fetch_max_wait_ms": 50,
        "retry_backoff_ms": 50,
        "request_timeout_ms": 10_000,
    }
    settings.update(kw)
    return AsyncConsumer(*topics, **settings)


@contextlib.asynccontextmanager
async def started(*consumers: AsyncConsumer) -> AsyncIterator[list[AsyncConsumer]]:
    async with contextlib.AsyncExitStack() as stack:
        for c in consumers:
            await stack.enter_async_context(c)
        yield list(consumers)


async def produce(
    cluster: LocalCluster, topic: str, values: Sequence[bytes], partitions: int
) -> None:
    async with AsyncProducer(cluster.bootstrap, acks="all", linger_ms=0) as p:
        for i, v in enumerate(values):
            await p.send(topic, v, partition=i % partitions)
        await p.flush()


async def poll_until(
    consumers: Sequence[AsyncConsumer],
    done: Callable[[], bool],
    got: list[bytes] | None = None,
    timeout: float = 30,
) -> list[bytes]:
    out = [] if got is None else got
    with trio.fail_after(timeout):
        while not done():
            for c in consumers:
                for recs in (await c.poll(timeout_ms=20)).values():
                    out.extend(r.value for r in recs)
    return out


def sizes(consumers: Sequence[AsyncConsumer]) -> list[int]:
    return sorted(len(c.assignment()) for c in consumers)


async def test_three_members_split_six_partitions_and_read_everything_once(
    cluster: LocalCluster,
) -> None:
    topic = await new_topic(cluster, 6)
    values = [b"v%04d" % i for i in range(600)]
    await produce(cluster, topic, values, 6)
    consumers = [member(cluster, "split", topic, enable_auto_commit=False) for _ in range(3)]
    async with started(*consumers):
        got = await poll_until(consumers, lambda: sizes(consumers) == [2, 2, 2])
        await poll_until(consumers, lambda: len(got) >= 600, got)
        assert set().union(*(c.assignment() for c in consumers)) == {
            TopicPartition(topic, p) for p in range(6)
        }
        for c in consumers:
            await c.commit()
        committed = await consumers[0].committed([TopicPartition(topic, p) for p in range(6)])
    assert sorted(got) == values  # every record, exactly once
    assert {tp.partition: om.offset for tp, om in committed.items() if om} == dict.fromkeys(
        range(6), 100
    )


async def test_cooperative_join_and_leave_revoke_only_what_moves(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster, 6)
    listeners = [Recorder() for _ in range(4)]
    consumers = [
        member(cluster, "coop", partition_assignment_strategy="cooperative-sticky")
        for _ in range(4)
    ]
    for c, lst in zip(consumers, listeners, strict=True):
        c.subscribe([topic], listener=lst)
    first, fourth = consumers[:3], consumers[3]
    async with started(*first):
        await poll_until(first, lambda: sizes(first) == [2, 2, 2])
        before = {id(c): c.assignment() for c in first}
        for lst in listeners:
            lst.events.clear()
        async with started(fourth):
            everyone = [*first, fourth]
            await poll_until(everyone, lambda: sizes(everyone) == [1, 1, 2, 2])
            moved = [p for lst in listeners[:3] for parts in lst.of("revoked") for p in parts]
            assert len(moved) == 1  # exactly one partition moves, to the newcomer
            assert listeners[3].of("assigned") == [frozenset(moved)]
            assert all(c.assignment() <= before[id(c)] for c in first)
            during = {id(c): c.assignment() for c in first}
            for lst in listeners:
                lst.events.clear()
        await poll_until(first, lambda: sizes(first) == [2, 2, 2])
        assert listeners[3].of("revoked") == [frozenset(moved)]  # its own, on close
        for c, lst in zip(first, listeners[:3], strict=True):
            assert not lst.of("revoked") and not lst.of("lost")
            assert c.assignment() >= during[id(c)]


async def test_close_hands_partitions_over_from_the_committed_offsets(
    cluster: LocalCluster,
) -> None:
    topic = await new_topic(cluster, 4)
    await produce(cluster, topic, [b"a%02d" % i for i in range(40)], 4)
    a = member(cluster, "handover", topic)
    b = member(cluster, "handover", topic, enable_auto_commit=False)
    async with started(a):
        async with started(b):
            got = await poll_until([a, b], lambda: sizes([a, b]) == [2, 2])
            await poll_until([a, b], lambda: len(got) >= 40, got)
            b_parts = b.assignment()
            await b.commit({part: OffsetAndMetadata(7) for part in b_parts})
        more = await poll_until([a], lambda: len(a.assignment()) == 4)
        await produce(cluster, topic, [b"b%02d" % i for i in range(4)], 4)
        await poll_until([a], lambda: len(more) >= 10, more)
    redone = {b"a%02d" % i for i in range(28, 40) if TopicPartition(topic, i % 4) in b_parts}
    assert sorted(got) == [b"a%02d" % i for i in range(40)]
    assert sorted(more) == sorted(redone | {b"b%02d" % i for i in range(4)})


async def test_a_member_that_stops_polling_is_removed_and_cannot_commit(
    cluster: LocalCluster,
) -> None:
    topic = await new_topic(cluster, 2)
    slow = member(cluster, "slow", topic, max_poll_interval_ms=1_500, enable_auto_commit=False)
    fast = member(cluster, "slow", topic)
    async with started(slow, fast):
        await poll_until([slow, fast], lambda: sizes([slow, fast]) == [1, 1])
        await poll_until([fast], lambda: len(fast.assignment()) == 2)  # slow does not poll
        with pytest.raises(CommitFailedError, match="max_poll_interval_ms"):
            await slow.commit()
        await poll_until([slow, fast], lambda: sizes([slow, fast]) == [1, 1])  # it rejoins


async def test_a_static_member_restart_moves_nothing(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster, 4)
    other_listener = Recorder()
    other = member(cluster, "static")
    other.subscribe([topic], listener=other_listener)
    static = {"group_instance_id": "static-1", "session_timeout_ms": 10_000}
    async with started(other):
        async with started(member(cluster, "static", topic, **static)) as [s]:
            await poll_until([other, s], lambda: sizes([other, s]) == [2, 2])
            mine = s.assignment()
        other_listener.events.clear()
        async with started(member(cluster, "static", topic, **static)) as [s2]:
            await poll_until([other, s2], lambda: len(s2.assignment()) == 2)
            with trio.move_on_after(1):  # give a rebalance, if any, the time to show
                await poll_until([other, s2], lambda: False)
            assert s2.assignment() == mine
            assert other_listener.events == []  # no revoke, no assign: no rebalance at all


def generation(c: AsyncConsumer) -> int | None:
    """The generation a consumer is settled in (its listener told, no rejoin pending), or
    None mid-rebalance. Not public API, and DescribeGroups has no generation."""
    group = c._coordinator
    assert group is not None
    stable = group.membership.generation_if_stable()
    if stable is None or group._rejoin_needed_or_pending():
        return None
    return stable.generation_id


async def test_a_cooperative_static_member_restart_does_not_rebalance(
    cluster: LocalCluster,
) -> None:
    """Its metadata names what it owns; the new process owns nothing, and the coordinator
    compares what it asks for, not what it holds."""
    topic = await new_topic(cluster, 4)
    coop = {"partition_assignment_strategy": ("cooperative-sticky",)}
    other_listener = Recorder()
    other = member(cluster, "coop-static", **coop)
    other.subscribe([topic], listener=other_listener)
    static = {**coop, "group_instance_id": "coop-static-1", "session_timeout_ms": 10_000}
    async with started(other):
        async with started(member(cluster, "coop-static", topic, **static)) as [s]:
            await poll_until(
                [other, s],
                lambda: (
                    sizes([other, s]) == [2, 2]
                    and generation(other) is not None
                    and generation(other) == generation(s)
                ),
            )
            mine, before = s.assignment(), generation(other)
            assert before is not None
        other_listener.events.clear()
        async with started(member(cluster, "coop-static", topic, **static)) as [s2]:
            await poll_until([other, s2], lambda: generation(s2) is not None)
            # A rebalance would have given s2 its partitions in a later generation.
            assert generation(s2) == generation(other) == before
            assert s2.assignment() == mine
            assert other_listener.events == []  # not even an empty assign: no rebalance


async def test_a_pattern_subscription_picks_up_a_new_topic(cluster: LocalCluster) -> None:
    prefix = f"orders{next(_names)}"
    first = await new_topic(cluster, 1, prefix)
    await produce(cluster, first, [b"x1", b"x2"], 1)
    c = member(cluster, "pattern", metadata_max_age_ms=300)
    c.subscribe(pattern=rf"{prefix}-\d+")
    async with started(c):
        got: list[bytes] = []
        await poll_until([c], lambda: len(got) >= 2, got)
        second = await new_topic(cluster, 2, prefix)
        await produce(cluster, second, [b"y1", b"y2", b"y3"], 2)
        await poll_until([c], lambda: len(got) >= 5, got)
        assert c.subscription() == {first, second}
    assert sorted(got) == [b"x1", b"x2", b"y1", b"y2", b"y3"]


async def test_commit_and_committed_round_trip(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster, 2)
    t0, t1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with started(member(cluster, "roundtrip", topic, enable_auto_commit=False)) as [c]:
        await poll_until([c], lambda: len(c.assignment()) == 2)
        assert await c.committed(t0) is None
        await c.commit({t0: OffsetAndMetadata(5, "five"), t1: 9})
        assert await c.committed(t0) == OffsetAndMetadata(5, "five")
        assert await c.committed([t0, t1]) == {
            t0: OffsetAndMetadata(5, "five"),
            t1: OffsetAndMetadata(9, ""),
        }


def test_a_blocking_consumers_listener_can_commit(cluster: LocalCluster) -> None:
    topic = f"blocking-{next(_names)}"
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 2, 2)])
    trio.run(produce, cluster, topic, [b"r%d" % i for i in range(10)], 2)
    seen: list[tuple[str, list[TopicPartition]]] = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            seen.append(("assigned", sorted(assigned)))

        def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            consumer.commit()  # re-enters the consumer's loop from the callback's thread
            seen.append(("revoked", sorted(revoked)))

    consumer = Consumer(
        bootstrap_servers=cluster.bootstrap,
        group_id="blocking",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=3_000,
        heartbeat_interval_ms=200,
        fetch_max_wait_ms=50,
        consumer_timeout_ms=2_000,
    )
    try:
        consumer.subscribe([topic], listener=Listener())
        assert len(list(consumer)) == 10
    finally:
        consumer.close()
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    assert seen == [("assigned", parts), ("revoked", parts)]
    with Consumer(bootstrap_servers=cluster.bootstrap, group_id="blocking") as check:
        assert check.committed(parts) == dict.fromkeys(parts, OffsetAndMetadata(5, ""))
