"""Produce/consume round trips through the async and blocking clients."""

from __future__ import annotations

import json

import trio

from client import Consumer, ConsumerRecord, Producer, RecordMetadata, TopicPartition
from client.aio import AsyncConsumer, AsyncProducer
from tests.client.fakebroker import running_cluster


async def test_async_round_trip() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap, linger_ms=1) as producer:
            futs = [await producer.send("t", f"v{i}".encode(), key=b"k") for i in range(10)]
            await producer.flush()
            metas = [await f for f in futs]
        assert [m.offset for m in metas] == list(range(10))
        assert all(isinstance(m, RecordMetadata) and m.topic == "t" for m in metas)
        assert [v for _, _, v in cluster.records("t", 0)] == [f"v{i}".encode() for i in range(10)]

        tp = TopicPartition("t", 0)
        async with AsyncConsumer(
            bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
        ) as consumer:
            consumer.assign([tp])
            got: list[ConsumerRecord] = []
            while len(got) < 10:
                batch = await consumer.poll(timeout_ms=1000)
                got.extend(batch.get(tp, []))
            assert [r.value for r in got] == [f"v{i}".encode() for i in range(10)]
            assert [r.offset for r in got] == list(range(10))
            assert got[0].key == b"k" and got[0].topic == "t" and got[0].headers == ()
            assert await consumer.position(tp) == 10


async def test_send_and_wait_with_headers_and_timestamp() -> None:
    async with running_cluster(topics={"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap) as producer:
            md = await producer.send_and_wait("t", b"v", headers=[("h", b"1")], timestamp_ms=1234)
            assert md == RecordMetadata("t", 0, 0, 1234)
        async with AsyncConsumer(
            bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
        ) as consumer:
            consumer.assign([TopicPartition("t", 0)])
            recs = (await consumer.poll(timeout_ms=1000))[TopicPartition("t", 0)]
            assert recs[0].timestamp == 1234
            assert list(recs[0].headers) == [("h", b"1")]


async def test_blocking_round_trip_with_serializers() -> None:
    async with running_cluster(topics={"t": 2}) as cluster:

        def produce() -> list[RecordMetadata]:
            with Producer(
                bootstrap_servers=cluster.bootstrap,
                value_serializer=lambda v: json.dumps(v).encode(),
                key_serializer=str.encode,
            ) as producer:
                futs = [producer.send("t", {"n": i}, key=str(i)) for i in range(50)]
                producer.flush()
                return [f.get(timeout=10) for f in futs]

        metas = await trio.to_thread.run_sync(produce)
        assert len(metas) == 50

        def consume() -> list[tuple[str, dict[str, int]]]:
            consumer = Consumer(
                "t",
                bootstrap_servers=cluster.bootstrap,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=20,
                consumer_timeout_ms=300,
                value_deserializer=json.loads,
                key_deserializer=bytes.decode,
            )
            try:
                assert consumer.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}
                return [(r.key, r.value) for r in consumer]
            finally:
                consumer.close()

        got = await trio.to_thread.run_sync(consume)
        assert sorted(got, key=lambda kv: kv[1]["n"]) == [(str(i), {"n": i}) for i in range(50)]
