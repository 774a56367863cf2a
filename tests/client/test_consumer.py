"""The consumer: positions, seeks, offset lookups, out-of-range resets, fetch errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from client import Consumer, ConsumerRecord, TopicPartition
from client.aio import AsyncConsumer, AsyncProducer
from client.errors import (
    ConfigurationError,
    IllegalStateError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
)
from client.types import OffsetAndTimestamp
from proto.messages import ApiKey
from tests.client.fakebroker import NOT_LEADER, FakeCluster, running_cluster

TP = TopicPartition("t", 0)


@asynccontextmanager
async def cluster_with_records(n: int = 10, partitions: int = 1) -> AsyncIterator[FakeCluster]:
    async with running_cluster(topics={"t": partitions}) as cluster:
        async with AsyncProducer(cluster.bootstrap, linger_ms=0) as producer:
            for i in range(n):
                await producer.send("t", f"v{i}".encode(), partition=0, timestamp_ms=1000 + i)
            await producer.flush()
        yield cluster


def consumer(cluster: FakeCluster, **kw: object) -> AsyncConsumer:
    return AsyncConsumer(bootstrap_servers=cluster.bootstrap, fetch_max_wait_ms=20, **kw)


async def poll_values(c: AsyncConsumer, count: int) -> list[bytes]:
    out: list[bytes] = []
    with trio.fail_after(5):
        while len(out) < count:
            for recs in (await c.poll(timeout_ms=200)).values():
                out.extend(r.value for r in recs)
    return out


async def test_offsets_and_seek() -> None:
    async with cluster_with_records(10) as cluster, consumer(cluster) as c:
        c.assign([TP])
        assert c.assignment() == {TP}
        assert await c.beginning_offsets([TP]) == {TP: 0}
        assert await c.end_offsets([TP]) == {TP: 10}
        assert await c.position(TP) == 10  # auto_offset_reset="latest"
        c.seek(TP, 7)
        assert await c.position(TP) == 7
        assert await poll_values(c, 3) == [b"v7", b"v8", b"v9"]
        assert await c.position(TP) == 10
        await c.seek_to_beginning(TP)
        assert await c.position(TP) == 0
        assert await poll_values(c, 10) == [f"v{i}".encode() for i in range(10)]
        await c.seek_to_end()
        assert await c.position(TP) == 10
        assert await c.poll(timeout_ms=50) == {}


async def test_seek_mid_batch_skips_earlier_records() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap, linger_ms=50) as producer:
            for i in range(10):
                await producer.send("t", f"v{i}".encode())
            await producer.flush()
        assert len(cluster.topics["t"][0].batches) == 1
        async with consumer(cluster) as c:
            c.assign([TP])
            c.seek(TP, 4)
            assert await poll_values(c, 6) == [f"v{i}".encode() for i in range(4, 10)]


async def test_max_records_and_prefetch() -> None:
    async with cluster_with_records(30) as cluster, consumer(cluster) as c:
        c.assign([TP])
        c.seek(TP, 0)
        with trio.fail_after(5):
            first: dict[TopicPartition, list[ConsumerRecord]] = {}
            while not first:
                first = await c.poll(timeout_ms=200, max_records=4)
        assert [r.offset for r in first[TP]] == [0, 1, 2, 3]
        rest = await c.poll(timeout_ms=200, max_records=100)
        assert rest[TP][0].offset == 4


async def test_offsets_for_times() -> None:
    async with cluster_with_records(10) as cluster, consumer(cluster) as c:
        c.assign([TP])
        assert await c.offsets_for_times({TP: 1005}) == {TP: OffsetAndTimestamp(5, 1005)}
        assert await c.offsets_for_times({TP: 99999}) == {TP: None}
        with pytest.raises(ConfigurationError):
            await c.offsets_for_times({TP: -3})


async def test_out_of_range_resets_to_earliest() -> None:
    async with (
        cluster_with_records(10) as cluster,
        consumer(cluster, auto_offset_reset="earliest") as c,
    ):
        c.assign([TP])
        cluster.topics["t"][0].truncate_front(5)
        c.seek(TP, 2)  # below the log start now
        values = await poll_values(c, 1)
        assert values[0] in (b"v0", b"v5")  # the batch holding offset 5 may start earlier
        assert await c.position(TP) >= 5


async def test_out_of_range_resets_to_latest() -> None:
    async with cluster_with_records(10) as cluster, consumer(cluster) as c:
        c.assign([TP])
        c.seek(TP, 50)  # beyond the end
        assert await c.poll(timeout_ms=300) == {}
        assert await c.position(TP) == 10


async def test_out_of_range_with_reset_none_raises() -> None:
    async with (
        cluster_with_records(10) as cluster,
        consumer(cluster, auto_offset_reset="none") as c,
    ):
        c.assign([TP])
        with pytest.raises(OffsetOutOfRangeError):
            await c.position(TP)  # no position and no reset policy
        c.seek(TP, 50)
        with pytest.raises(OffsetOutOfRangeError), trio.fail_after(5):
            while True:
                await c.poll(timeout_ms=100)


async def test_fetch_not_leader_is_retried_after_refresh() -> None:
    async with cluster_with_records(5) as cluster, consumer(cluster, retry_backoff_ms=5) as c:
        cluster.partition_errors[(ApiKey.FETCH, "t", 0)] = [NOT_LEADER, NOT_LEADER]
        c.assign([TP])
        c.seek(TP, 0)
        assert await poll_values(c, 5) == [f"v{i}".encode() for i in range(5)]
        assert len(cluster.requests_of(ApiKey.METADATA)) >= 2


async def test_long_poll_wakes_on_new_data() -> None:
    async with (
        running_cluster(topics={"t": 1}) as cluster,
        consumer(cluster) as c,
        AsyncProducer(cluster.bootstrap, linger_ms=0) as p,
    ):
        c.assign([TP])
        assert await c.position(TP) == 0
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def read() -> None:
                got.extend(await poll_values(c, 1))

            nursery.start_soon(read)
            await p.send_and_wait("t", b"late")
        assert got == [b"late"]


async def test_metadata_helpers_and_errors() -> None:
    async with cluster_with_records(1, partitions=3) as cluster, consumer(cluster) as c:
        assert await c.topics() == {"t"}
        assert await c.partitions_for_topic("t") == {0, 1, 2}
        assert await c.partitions_for_topic("missing") is None
        with pytest.raises(ConfigurationError, match="group_id"):
            c.subscribe(["t"])  # consumer groups need a group_id
        with pytest.raises(IllegalStateError):
            c.seek(TopicPartition("t", 1), 0)  # not assigned
        with pytest.raises(UnknownTopicOrPartitionError):
            await c.end_offsets([TopicPartition("missing", 0)])


def test_topics_with_a_group_id_subscribe() -> None:
    c = AsyncConsumer("t", "u", bootstrap_servers="127.0.0.1:1", group_id="g")
    assert c.subscription() == {"t", "u"}
    with pytest.raises(IllegalStateError, match="unsubscribe"):
        c.assign([TP])


async def test_blocking_consumer_iteration_stops_after_timeout() -> None:
    async with cluster_with_records(10) as cluster:

        def consume() -> tuple[list[int], dict[TopicPartition, int], int]:
            c = Consumer(
                bootstrap_servers=cluster.bootstrap,
                auto_offset_reset="earliest",
                consumer_timeout_ms=200,
                fetch_max_wait_ms=20,
            )
            try:
                c.assign([TP])
                c.seek_to_beginning(TP)
                offsets = [r.offset for r in c]
                c.seek(TP, 3)
                return offsets, c.end_offsets([TP]), c.position(TP)
            finally:
                c.close()

        offsets, ends, pos = await trio.to_thread.run_sync(consume)
        assert offsets == list(range(10))
        assert ends == {TP: 10}
        assert pos == 3
