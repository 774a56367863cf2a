"""The consumer in a group, against the fake broker whose coordinator is the broker's own
sans-IO ``Group`` state machine (tests/client/fakegroup.py): rebalances (eager and
cooperative), listener callbacks, commits, heartbeats' error handling, the poll timeout,
static membership, a moved coordinator, pattern subscriptions."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import trio

from client import Consumer, ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from client.aio import AsyncConsumer, AsyncProducer
from client.errors import (
    CommitFailedError,
    ConfigurationError,
    FencedInstanceIdError,
    IllegalStateError,
    RebalanceInProgressError,
)
from proto.api import ApiKey
from tests.client.fakegroup import GroupCluster, running_group_cluster

T = "t"


def tp(p: int, topic: str = T) -> TopicPartition:
    return TopicPartition(topic, p)


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


def member(cluster: GroupCluster, *topics: str, **kw: Any) -> AsyncConsumer:
    settings: dict[str, Any] = {
        "bootstrap_servers": cluster.bootstrap,
        "group_id": "g",
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 1_000,
        "heartbeat_interval_ms": 100,
        "fetch_max_wait_ms": 20,
        "retry_backoff_ms": 20,
        "request_timeout_ms": 2_000,
    }
    settings.update(kw)
    return AsyncConsumer(*topics, **settings)


@contextlib.asynccontextmanager
async def started(*consumers: AsyncConsumer) -> AsyncIterator[list[AsyncConsumer]]:
    async with contextlib.AsyncExitStack() as stack:
        for c in consumers:
            await stack.enter_async_context(c)
        yield list(consumers)


async def produce(cluster: GroupCluster, n: int, partitions: int, topic: str = T) -> None:
    async with AsyncProducer(cluster.bootstrap, linger_ms=0) as p:
        for i in range(n):
            await p.send(topic, b"%s-%d" % (topic.encode(), i), partition=i % partitions)
        await p.flush()


async def poll_until(
    consumers: Sequence[AsyncConsumer],
    done: Callable[[], bool],
    got: list[bytes] | None = None,
    timeout: float = 10,
) -> list[bytes]:
    """Poll every consumer in turn until ``done()``; the values read are appended."""
    out = [] if got is None else got
    with trio.fail_after(timeout):
        while not done():
            for c in consumers:
                for recs in (await c.poll(timeout_ms=10)).values():
                    out.extend(r.value for r in recs)
    return out


def sizes(consumers: Sequence[AsyncConsumer]) -> list[int]:
    return sorted(len(c.assignment()) for c in consumers)


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
async def test_three_members_share_six_partitions_and_read_each_record_once(strategy: str) -> None:
    async with running_group_cluster(topics={T: 6}) as cluster:
        await produce(cluster, 120, 6)
        consumers = [member(cluster, T, partition_assignment_strategy=strategy) for _ in range(3)]
        async with started(*consumers):
            got = await poll_until(consumers, lambda: sizes(consumers) == [2, 2, 2])
            await poll_until(consumers, lambda: len(got) >= 120, got)
            owned = [c.assignment() for c in consumers]
            assert set().union(*owned) == {tp(p) for p in range(6)}
            for c in consumers:
                await c.commit()
        assert sorted(got) == sorted(b"t-%d" % i for i in range(120))  # each exactly once
        assert {k[2]: v[0] for k, v in cluster.committed.items()} == dict.fromkeys(range(6), 20)
        assert cluster.groups["g"].state.name == "EMPTY"  # every member left on close


async def test_cooperative_join_and_leave_revoke_only_what_moves() -> None:
    async with running_group_cluster(topics={T: 6}) as cluster:
        listeners = [Recorder() for _ in range(4)]
        consumers = [
            member(cluster, partition_assignment_strategy="cooperative-sticky") for _ in range(4)
        ]
        for c, lst in zip(consumers, listeners, strict=True):
            c.subscribe([T], listener=lst)
        first, fourth = consumers[:3], consumers[3]
        async with started(*first):
            await poll_until(first, lambda: sizes(first) == [2, 2, 2])
            before = {id(c): c.assignment() for c in first}
            for lst in listeners[:3]:
                lst.events.clear()
            async with started(fourth):
                everyone = [*first, fourth]
                await poll_until(everyone, lambda: sizes(everyone) == [1, 1, 2, 2])
                revoked = [p for lst in listeners[:3] for parts in lst.of("revoked") for p in parts]
                assert len(revoked) == 1  # one partition moves, to the newcomer
                assert listeners[3].of("assigned") == [frozenset(revoked)]
                for c in first:  # nobody else lost or gained anything
                    assert c.assignment() <= before[id(c)]
                assert not any(lst.of("lost") for lst in listeners)
                during = {id(c): c.assignment() for c in first}
                for lst in listeners[:3]:
                    lst.events.clear()
            await poll_until(first, lambda: sizes(first) == [2, 2, 2])
            assert listeners[3].of("revoked") == [frozenset(revoked)]  # on close
            for c, lst in zip(first, listeners[:3], strict=True):
                assert not lst.of("revoked")  # leaving only adds partitions to the others
                assert c.assignment() >= during[id(c)]


async def test_eager_revokes_everything_and_commits_before_rejoining() -> None:
    async with running_group_cluster(topics={T: 4}) as cluster:
        await produce(cluster, 40, 4)
        a_listener, b_listener = Recorder(), Recorder()
        a, b = member(cluster, partition_assignment_strategy="range"), member(cluster)
        a.subscribe(T, listener=a_listener)
        b.subscribe(T, listener=b_listener)
        async with started(a):
            got = await poll_until([a], lambda: len(a.assignment()) == 4)
            await poll_until([a], lambda: len(got) >= 40, got)
            async with started(b):
                await poll_until([a, b], lambda: sizes([a, b]) == [2, 2], got)
                assert a_listener.of("revoked") == [frozenset(tp(p) for p in range(4))]
                # auto commit before the revocation: b starts where a stopped
                assert {k[2]: v[0] for k, v in cluster.committed.items()} == dict.fromkeys(
                    range(4), 10
                )
                await produce(cluster, 8, 4)
                await poll_until([a, b], lambda: len(got) >= 48, got)
        assert len(got) == 48 and len(set(got)) == 40  # the 8 new ones reuse keys t-0..7
        assert Counter(got)[b"t-0"] == 2


async def test_close_hands_partitions_over_and_the_others_continue_from_the_commit() -> None:
    async with running_group_cluster(topics={T: 4}) as cluster:
        a, b = member(cluster, T), member(cluster, T, enable_auto_commit=False)
        async with started(a):
            async with started(b):
                await poll_until([a, b], lambda: sizes([a, b]) == [2, 2])
                await produce(cluster, 40, 4)
                got: list[bytes] = []
                await poll_until([a, b], lambda: len(got) >= 40, got)
                b_parts = b.assignment()
                await b.commit({part: 8 for part in b_parts})  # as if it had processed less
            # b left (LeaveGroup): its partitions go to a, from b's committed offsets
            more = await poll_until([a], lambda: len(a.assignment()) == 4)
            await produce(cluster, 4, 4)
            await poll_until([a], lambda: len(more) >= 8, more)
        assert sorted(got) == sorted(b"t-%d" % i for i in range(40))
        redone = [b"t-%d" % i for i in range(32, 40) if tp(i % 4) in b_parts]
        assert sorted(more) == sorted([*redone, *(b"t-%d" % i for i in range(4))])


async def test_commit_and_committed_round_trip() -> None:
    async with running_group_cluster(topics={T: 2}) as cluster:
        await produce(cluster, 10, 2)
        async with started(member(cluster, T, enable_auto_commit=False)) as [c]:
            await poll_until([c], lambda: len(c.assignment()) == 2)
            assert await c.committed(tp(0)) is None
            await c.commit({tp(0): OffsetAndMetadata(3, "note"), tp(1): 4})
            assert await c.committed(tp(0)) == OffsetAndMetadata(3, "note")
            assert await c.committed([tp(0), tp(1), tp(0, "other")]) == {
                tp(0): OffsetAndMetadata(3, "note"),
                tp(1): OffsetAndMetadata(4, ""),
                tp(0, "other"): None,
            }
            with pytest.raises(ConfigurationError):
                await c.commit({tp(0): -3})
            results: list[tuple[dict[TopicPartition, OffsetAndMetadata], Exception | None]] = []
            c.commit_async({tp(1): 5}, lambda offsets, exc: results.append((offsets, exc)))
            c.commit_async({tp(1): 6}, lambda offsets, exc: results.append((offsets, exc)))
            await c.commit({tp(0): 7})  # after the async ones; their callbacks run here
            assert results == [
                ({tp(1): OffsetAndMetadata(5)}, None),
                ({tp(1): OffsetAndMetadata(6)}, None),
            ]
            assert await c.committed(tp(1)) == OffsetAndMetadata(6)


async def test_manual_assignment_commits_with_generation_minus_one() -> None:
    async with running_group_cluster(topics={T: 1}) as cluster:
        await produce(cluster, 5, 1)
        cluster.committed[("g", T, 0)] = (2, None)
        async with started(member(cluster)) as [c]:
            c.assign([tp(0)])
            assert await c.position(tp(0)) == 2  # from the committed offset
            with pytest.raises(IllegalStateError):
                c.subscribe([T])
            got: list[int] = []
            with trio.fail_after(5):
                while len(got) < 3:
                    for recs in (await c.poll(timeout_ms=50)).values():
                        got.extend(r.offset for r in recs)
            assert got == [2, 3, 4]
            await c.commit()
        assert cluster.committed[("g", T, 0)][0] == 5
        commits = cluster.requests_of(ApiKey.OFFSET_COMMIT)
        assert all(r.generation_id == -1 and r.member_id == "" for r in commits)  # type: ignore[attr-defined]


async def test_a_member_that_stops_polling_leaves_and_its_commit_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_group_cluster(topics={T: 2}) as cluster:
        slow_listener = Recorder()
        slow = member(cluster, max_poll_interval_ms=2_000, enable_auto_commit=False)
        slow.subscribe([T], listener=slow_listener)
        fast = member(cluster, T)
        async with started(slow, fast):
            await poll_until([slow, fast], lambda: sizes([slow, fast]) == [1, 1])
            owned = slow.assignment()
            slow_listener.events.clear()
            with trio.fail_after(30):  # only fast polls; slow's heartbeat task notices
                while len(fast.assignment()) != 2:
                    await fast.poll(timeout_ms=100)
            assert slow.assignment() == owned  # it does not know until it polls
            with pytest.raises(CommitFailedError, match="max_poll_interval_ms"):
                await slow.commit()
            leaves = cluster.requests_of(ApiKey.LEAVE_GROUP)
            assert [m.reason for r in leaves for m in r.members] == [  # type: ignore[attr-defined]
                "consumer poll timeout has expired"
            ]
            # the next poll rejoins; what it owned was lost, not revoked
            await poll_until([slow, fast], lambda: sizes([slow, fast]) == [1, 1])
            assert slow_listener.of("lost") == [frozenset(owned)]
            assert slow_listener.of("revoked") == []


async def test_heartbeat_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with running_group_cluster(topics={T: 2}) as cluster:
        listener = Recorder()
        c = member(cluster)
        c.subscribe([T], listener=listener)
        async with started(c):
            await poll_until([c], lambda: len(c.assignment()) == 2)
            gen = cluster.groups["g"].generation_id
            # UNKNOWN_MEMBER_ID: partitions lost, join again from scratch
            cluster.group_errors[ApiKey.HEARTBEAT] = [25]
            await trio.sleep(0.5)
            await poll_until([c], lambda: cluster.groups["g"].generation_id > gen)
            await poll_until([c], lambda: len(c.assignment()) == 2)
            assert listener.of("lost") == [frozenset({tp(0), tp(1)})]
            # NOT_COORDINATOR: looked up again, no rebalance
            gen = cluster.groups["g"].generation_id
            finds = len(cluster.requests_of(ApiKey.FIND_COORDINATOR))
            cluster.group_errors[ApiKey.HEARTBEAT] = [16]
            await trio.sleep(0.5)
            await poll_until([c], lambda: len(cluster.requests_of(ApiKey.FIND_COORDINATOR)) > finds)
            await trio.sleep(0.5)
            assert cluster.groups["g"].generation_id == gen
            assert c._coordinator is not None and c._coordinator.link.known
            # FENCED_INSTANCE_ID: fatal, raised from poll
            cluster.group_errors[ApiKey.HEARTBEAT] = [82]
            await trio.sleep(0.5)
            with pytest.raises(FencedInstanceIdError):
                await c.poll(timeout_ms=10)
            with pytest.raises(FencedInstanceIdError):
                await c.poll(timeout_ms=10)


async def test_the_group_follows_its_coordinator_to_another_broker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_group_cluster(brokers=2, topics={T: 2}) as cluster:
        await produce(cluster, 10, 2)
        a, b = member(cluster, T), member(cluster, T)
        async with started(a, b):
            got = await poll_until([a, b], lambda: sizes([a, b]) == [1, 1])
            await poll_until([a, b], lambda: len(got) >= 10, got)
            gen = cluster.groups["g"].generation_id
            cluster.move_coordinator(1)
            await a.commit()  # NOT_COORDINATOR, then the new one
            await trio.sleep(0.3)  # heartbeats go to node 1 now
            beats = [n for n, api, _ in cluster.log if api == ApiKey.HEARTBEAT]
            assert beats[-1] == 1
            assert cluster.groups["g"].generation_id == gen  # no rebalance needed
            assert cluster.committed[("g", T, next(iter(a.assignment())).partition)][0] == 5


async def test_a_static_member_restarting_within_the_session_causes_no_rebalance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_group_cluster(topics={T: 4}) as cluster:
        other_listener = Recorder()
        other = member(cluster, partition_assignment_strategy="cooperative-sticky")
        other.subscribe([T], listener=other_listener)
        static = dict(group_instance_id="s-1", session_timeout_ms=3_000)
        async with started(other):
            async with started(member(cluster, T, **static)) as [s]:
                await poll_until([other, s], lambda: sizes([other, s]) == [2, 2])
                mine = s.assignment()
            gen = cluster.groups["g"].generation_id
            leaves = len(cluster.requests_of(ApiKey.LEAVE_GROUP))
            other_listener.events.clear()
            async with started(member(cluster, T, **static)) as [s2]:
                await poll_until([other, s2], lambda: len(s2.assignment()) == 2)
                assert s2.assignment() == mine
                await trio.sleep(0.3)
                await other.poll(timeout_ms=100)
                assert cluster.groups["g"].generation_id == gen
            assert len(cluster.requests_of(ApiKey.LEAVE_GROUP)) == leaves  # static: none
            assert not other_listener.of("revoked") and not other_listener.of("assigned")


async def test_pattern_subscription_picks_up_a_new_topic() -> None:
    async with running_group_cluster(topics={"orders-eu": 1, "audit": 1}) as cluster:
        await produce(cluster, 3, 1, "orders-eu")
        c = member(cluster, metadata_max_age_ms=100)
        c.subscribe(pattern=r"orders-.*")
        async with started(c):
            got: list[bytes] = []
            await poll_until([c], lambda: len(got) >= 3, got)
            assert c.subscription() == {"orders-eu"}
            cluster.create_topic("orders-us", 2)
            await produce(cluster, 4, 2, "orders-us")
            await poll_until([c], lambda: len(got) >= 7, got)
            assert c.subscription() == {"orders-eu", "orders-us"}
            assert c.assignment() == {tp(0, "orders-eu"), tp(0, "orders-us"), tp(1, "orders-us")}


async def test_commit_errors() -> None:
    async with (
        running_group_cluster(topics={T: 1}) as cluster,
        started(member(cluster, T, enable_auto_commit=False)) as [c],
    ):
        await poll_until([c], lambda: len(c.assignment()) == 1)
        cluster.group_errors[ApiKey.OFFSET_COMMIT] = [16, 14]  # moved, loading: retried
        await c.commit({tp(0): 1})
        assert cluster.committed[("g", T, 0)][0] == 1
        cluster.group_errors[ApiKey.OFFSET_COMMIT] = [27]
        with pytest.raises(RebalanceInProgressError):
            await c.commit({tp(0): 2})
        await c.poll(timeout_ms=200)
        cluster.group_errors[ApiKey.OFFSET_COMMIT] = [22]
        with pytest.raises(CommitFailedError):
            await c.commit({tp(0): 3})
        await poll_until([c], lambda: len(c.assignment()) == 1)


async def test_a_failing_listener_is_raised_from_poll_after_the_rebalance() -> None:
    class Boom(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            raise ValueError("app bug")

    async with running_group_cluster(topics={T: 1}) as cluster:
        c = member(cluster)
        c.subscribe([T], listener=Boom())
        async with started(c):
            with trio.fail_after(5), pytest.raises(ValueError, match="app bug"):
                while True:
                    await c.poll(timeout_ms=50)
            assert c.assignment() == {tp(0)}  # the rebalance completed all the same


async def test_async_listener_may_commit() -> None:
    class Committer(ConsumerRebalanceListener):
        def __init__(self, consumer: AsyncConsumer) -> None:
            self.consumer = consumer

        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            await self.consumer.commit({p: 1 for p in revoked})

    async with running_group_cluster(topics={T: 2}) as cluster:
        c = member(cluster, enable_auto_commit=False)
        c.subscribe([T], listener=Committer(c))
        async with started(c):
            await poll_until([c], lambda: len(c.assignment()) == 2)
        assert {k: v[0] for k, v in cluster.committed.items()} == {("g", T, 0): 1, ("g", T, 1): 1}


async def test_blocking_consumer_listener_calls_commit() -> None:
    async with running_group_cluster(topics={T: 2}) as cluster:
        await produce(cluster, 10, 2)

        def run() -> list[tuple[str, list[TopicPartition], int | None]]:
            seen: list[tuple[str, list[TopicPartition], int | None]] = []

            class Listener(ConsumerRebalanceListener):
                def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
                    # re-enters the consumer's loop from the callback's worker thread
                    seen.append(("assigned", sorted(assigned), None))

                def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
                    consumer.commit()  # all consumed positions, synchronously
                    seen.append(("revoked", sorted(revoked), consumer.position(tp(0))))

            consumer = Consumer(
                bootstrap_servers=cluster.bootstrap,
                group_id="g",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=1_000,
                heartbeat_interval_ms=100,
                fetch_max_wait_ms=20,
                consumer_timeout_ms=500,
            )
            try:
                consumer.subscribe([T], listener=Listener())
                assert len(list(consumer)) == 10
            finally:
                consumer.close()
            return seen

        seen = await trio.to_thread.run_sync(run)
        assert seen == [("assigned", [tp(0), tp(1)], None), ("revoked", [tp(0), tp(1)], 5)]
        assert {k: v[0] for k, v in cluster.committed.items()} == {("g", T, 0): 5, ("g", T, 1): 5}


async def test_auto_commit_runs_from_poll(autojump_clock: trio.testing.MockClock) -> None:
    async with running_group_cluster(topics={T: 2}) as cluster:
        await produce(cluster, 10, 2)
        async with started(member(cluster, T, auto_commit_interval_ms=1_000)) as [c]:
            got: list[bytes] = []
            await poll_until([c], lambda: len(got) >= 10, got)
            assert not cluster.committed  # not yet due
            await c.poll(timeout_ms=1_500)  # the interval passes inside poll()
            await trio.sleep(0.1)  # the async commit's round trip
            assert {k[2]: v[0] for k, v in cluster.committed.items()} == {0: 5, 1: 5}


async def test_a_member_closing_mid_join_leaves_so_nobody_waits_for_it() -> None:
    async with running_group_cluster(topics={T: 2}) as cluster:
        a = member(cluster, T, max_poll_interval_ms=60_000)
        async with started(a):
            await poll_until([a], lambda: len(a.assignment()) == 2)
            b = member(cluster, T, max_poll_interval_ms=60_000)
            async with started(b):
                with trio.move_on_after(0.3):  # b's JoinGroup is held: a has not rejoined
                    await b.poll(timeout_ms=300)
                assert not b.assignment()
            leaves = cluster.requests_of(ApiKey.LEAVE_GROUP)
            assert len(leaves) == 1 and leaves[0].members[0].member_id  # type: ignore[attr-defined]
            # a rejoins at once and keeps both partitions, well within b's session timeout
            group = cluster.groups["g"]
            with trio.fail_after(0.7):
                await poll_until(
                    [a],
                    lambda: (
                        group.state.name == "STABLE"
                        and len(group.members) == 1
                        and len(a.assignment()) == 2
                    ),
                )
