"""The producer against the fake broker: acks, partitioning, retries, failures."""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from client import Producer
from client.aio import AsyncConsumer, AsyncProducer
from client.errors import (
    ConfigurationError,
    ConnectionFailedError,
    IllegalStateError,
    MessageSizeTooLargeError,
    NoBrokersAvailableError,
    NotEnoughReplicasError,
    RequestTimedOutError,
    TimeoutExpiredError,
    UnknownTopicOrPartitionError,
)
from client.partitioner import keyed_partition
from client.types import TopicPartition
from proto.messages import ApiKey, ProduceRequest
from tests.client.fakebroker import NOT_LEADER, running_cluster


@pytest.mark.parametrize(("acks", "wire"), [(0, 0), (1, 1), ("all", -1), (-1, -1)])
async def test_acks(acks: int | str, wire: int) -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap, acks=acks) as producer:
            fut = await producer.send("t", b"v")
            await producer.flush()
            md = await fut
        assert md.offset == (-1 if wire == 0 else 0)
        (req,) = cluster.requests_of(ApiKey.PRODUCE)
        assert isinstance(req, ProduceRequest) and req.acks == wire
        assert cluster.records("t", 0) == [(0, None, b"v")]


@pytest.mark.parametrize(
    "bad",
    [
        {"acks": 2},
        {"acks": "some"},
        {"linger_ms": -1},
        {"batch_size": 0},
        {"compression_type": "gzip"},
        {"max_in_flight_requests_per_connection": 0},
        {"retries": -1},
        {"value_serializer": 3},
        {"request_timeout_ms": -5},
    ],
)
def test_bad_config_raises_configuration_error(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as info:
        AsyncProducer("127.0.0.1:1", **bad)
    assert isinstance(info.value, ValueError)


def test_bad_bootstrap_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        AsyncProducer("no-port-here")


async def test_no_brokers_available() -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(NoBrokersAvailableError):
            async with AsyncProducer(f"127.0.0.1:{port}"):
                pass


async def test_keyed_records_follow_murmur2() -> None:
    async with running_cluster(topics={"t": 5}) as cluster:
        async with AsyncProducer(cluster.bootstrap) as producer:
            futs = [await producer.send("t", b"v", key=f"key-{i}".encode()) for i in range(40)]
            await producer.flush()
            metas = [await f for f in futs]
        for i, md in enumerate(metas):
            assert md.partition == keyed_partition(f"key-{i}".encode(), 5)
        assert len({m.partition for m in metas}) > 1


async def test_keyless_records_stick_to_one_partition_per_batch() -> None:
    async with running_cluster(topics={"t": 4}) as cluster:
        # ~10 records per batch: each sealed batch should switch partition.
        async with AsyncProducer(cluster.bootstrap, batch_size=1200, linger_ms=1000) as producer:
            futs = [await producer.send("t", b"x" * 100) for _ in range(100)]
            await producer.flush()
            metas = [await f for f in futs]
        parts = [m.partition for m in metas]
        runs = [parts[0]]
        for p in parts[1:]:
            if p != runs[-1]:
                runs.append(p)
        # consecutive records share a partition in runs of a whole batch
        assert len(runs) <= 12
        assert min(Counter(parts).values()) >= 5
        assert len(set(parts)) > 1


async def test_explicit_partition_and_bad_partition() -> None:
    async with (
        running_cluster(topics={"t": 3}) as cluster,
        AsyncProducer(cluster.bootstrap) as producer,
    ):
        md = await producer.send_and_wait("t", b"v", partition=2)
        assert md.partition == 2 and md.offset == 0
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send("t", b"v", partition=3)
        assert await producer.partitions_for("t") == {0, 1, 2}


async def test_unknown_topic_raises_typed_error() -> None:
    async with (
        running_cluster(topics={"t": 1}) as cluster,
        AsyncProducer(cluster.bootstrap) as producer,
    ):
        with pytest.raises(UnknownTopicOrPartitionError, match="nope"):
            await producer.send("nope", b"v")


async def test_not_leader_refreshes_metadata_and_retries() -> None:
    async with running_cluster(brokers=2, topics={"t": 1}) as cluster:
        assert cluster.topics["t"][0].leader == 0
        async with AsyncProducer(cluster.bootstrap, retry_backoff_ms=10) as producer:
            await producer.send_and_wait("t", b"first")
            cluster.topics["t"][0].leader = 1  # leadership moved; the client doesn't know
            md = await producer.send_and_wait("t", b"second")
        assert md.offset == 1
        nodes = [node for node, api, _ in cluster.log if api == ApiKey.PRODUCE]
        assert nodes == [0, 0, 1]  # refused by the old leader, then sent to the new
        assert [v for _, _, v in cluster.records("t", 0)] == [b"first", b"second"]


async def test_retries_keep_order_within_partition() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        cluster.partition_errors[(ApiKey.PRODUCE, "t", 0)] = [NOT_LEADER, NOT_LEADER]
        async with AsyncProducer(
            cluster.bootstrap, batch_size=300, linger_ms=0, retry_backoff_ms=5
        ) as producer:
            futs = [await producer.send("t", f"{i:04}".encode() * 20) for i in range(30)]
            await producer.flush()
            metas = [await f for f in futs]
        assert [m.offset for m in metas] == list(range(30))
        assert [v for _, _, v in cluster.records("t", 0)] == [
            f"{i:04}".encode() * 20 for i in range(30)
        ]


async def test_non_retriable_error_fails_the_batch() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        cluster.partition_errors[(ApiKey.PRODUCE, "t", 0)] = [19, 19, 19, 19, 19, 19, 19]
        async with AsyncProducer(cluster.bootstrap, retries=1, retry_backoff_ms=1) as producer:
            fut = await producer.send("t", b"v")
            with pytest.raises(NotEnoughReplicasError):
                await fut
            assert fut.failed() and isinstance(fut.exception, NotEnoughReplicasError)
        assert len(cluster.requests_of(ApiKey.PRODUCE)) == 2  # first try + one retry


async def test_connection_drop_fails_pending_futures() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        cluster.drop[ApiKey.PRODUCE] = 1
        async with AsyncProducer(cluster.bootstrap, retries=0) as producer:
            fut = await producer.send("t", b"v")
            with pytest.raises(ConnectionFailedError) as info:
                await fut
            assert isinstance(info.value.__cause__, trio.BrokenResourceError)
            # the next send reconnects
            md = await producer.send_and_wait("t", b"w")
            assert md.offset == 0


async def test_connection_drop_is_retried() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        cluster.drop[ApiKey.PRODUCE] = 2
        async with AsyncProducer(cluster.bootstrap, retry_backoff_ms=1) as producer:
            md = await producer.send_and_wait("t", b"v")
        assert md.offset == 0
        assert len(cluster.requests_of(ApiKey.PRODUCE)) == 3


async def test_request_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        cluster.hang.add(ApiKey.PRODUCE)
        async with AsyncProducer(cluster.bootstrap, retries=0, request_timeout_ms=5000) as producer:
            start = trio.current_time()
            fut = await producer.send("t", b"v")
            with pytest.raises(RequestTimedOutError):
                await fut
            assert 5.0 <= trio.current_time() - start < 6.0


async def test_linger_sends_after_linger_ms(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        running_cluster(topics={"t": 1}) as cluster,
        AsyncProducer(cluster.bootstrap, linger_ms=2000) as producer,
    ):
        start = trio.current_time()
        await producer.send_and_wait("t", b"v")
        assert 2.0 <= trio.current_time() - start < 2.5


async def test_zstd_round_trip() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap, compression_type="zstd") as producer:
            futs = [await producer.send("t", b"abc" * 50, key=b"k") for _ in range(20)]
            await producer.flush()
            assert [(await f).offset for f in futs] == list(range(20))
        stored = cluster.topics["t"][0].batches[0][1]
        assert stored[21:23] == b"\x00\x04"  # codec bits say zstd
        async with AsyncConsumer(
            bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
        ) as consumer:
            tp = TopicPartition("t", 0)
            consumer.assign([tp])
            recs = (await consumer.poll(timeout_ms=1000))[tp]
            assert [r.value for r in recs] == [b"abc" * 50] * 20


async def test_send_after_close_and_record_too_large() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        producer = AsyncProducer(cluster.bootstrap, max_request_size=1000)
        async with producer:
            with pytest.raises(MessageSizeTooLargeError):
                await producer.send("t", b"x" * 2000)
            with pytest.raises(TypeError):
                await producer.send("t", "not bytes")
        with pytest.raises(IllegalStateError):
            await producer.send("t", b"v")


async def test_blocking_callbacks_and_many_partitions() -> None:
    async with running_cluster(brokers=2, topics={"a": 3, "b": 2}) as cluster:

        def produce() -> tuple[list[object], list[object]]:
            ok: list[object] = []
            errors: list[object] = []
            with Producer(bootstrap_servers=cluster.bootstrap, linger_ms=1) as producer:
                for i in range(200):
                    fut = producer.send("a" if i % 2 else "b", b"v", key=str(i).encode())
                    fut.add_callback(ok.append).add_errback(errors.append)
                producer.flush(timeout=10)
                assert producer.partitions_for("a") == {0, 1, 2}
            return ok, errors

        ok, errors = await trio.to_thread.run_sync(produce)
        assert len(ok) == 200 and errors == []
        total = sum(len(cluster.records(t, p)) for t, n in (("a", 3), ("b", 2)) for p in range(n))
        assert total == 200


async def test_blocking_buffer_memory_backpressure() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:

        def produce() -> int:
            with Producer(
                bootstrap_servers=cluster.bootstrap,
                batch_size=1024,
                buffer_memory=4096,
                linger_ms=0,
            ) as producer:
                futs = [producer.send("t", b"x" * 100) for _ in range(500)]
                producer.flush()
                return sum(1 for f in futs if f.get().offset >= 0)

        assert await trio.to_thread.run_sync(produce) == 500
        assert len(cluster.records("t", 0)) == 500


async def test_close_with_timeout_fails_stranded_records(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        cluster.hang.add(ApiKey.PRODUCE)
        producer = AsyncProducer(cluster.bootstrap, request_timeout_ms=60_000)
        async with producer:
            in_flight = await producer.send("t", b"a")
            while not cluster.requests_of(ApiKey.PRODUCE):
                await cluster.received.wait()
            start = trio.current_time()
            await producer.close(timeout=1)
            assert trio.current_time() - start < 61
        with pytest.raises(IllegalStateError):
            await in_flight


async def test_flush_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        cluster.hang.add(ApiKey.PRODUCE)
        async with AsyncProducer(cluster.bootstrap, request_timeout_ms=60_000) as producer:
            fut = await producer.send("t", b"a")
            with pytest.raises(TimeoutExpiredError):
                await producer.flush(timeout=2)
            assert not fut.is_done
            await producer.close(timeout=0)
            assert fut.failed()


async def test_async_buffer_memory_backpressure_many_tasks() -> None:
    async with (
        running_cluster(topics={"t": 3}) as cluster,
        AsyncProducer(
            cluster.bootstrap, batch_size=1024, buffer_memory=2048, linger_ms=0
        ) as producer,
    ):
        futs = []

        async def sender(i: int) -> None:
            for j in range(30):
                futs.append(await producer.send("t", b"x" * 100, key=f"{i}-{j}".encode()))

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(sender, i)
        await producer.flush()
        assert all(f.succeeded() for f in futs) and len(futs) == 150
