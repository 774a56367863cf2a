"""``send_many``: the bulk path keeps every guarantee of ``send``."""

from __future__ import annotations

import json

import pytest
import trio

from client import Producer
from client.aio import AsyncProducer
from client.errors import MessageSizeTooLargeError
from client.partitioner import keyed_partition
from tests.client.fakebroker import running_cluster


async def test_async_send_many_keeps_order_and_offsets() -> None:
    async with running_cluster(topics={"t": 3}) as cluster:
        async with AsyncProducer(cluster.bootstrap, batch_size=2048) as producer:
            values = [b"v%05d" % i for i in range(5000)]
            futures = await producer.send_many("t", values)
            await producer.flush()
            metas = [await f for f in futures]
        assert len(metas) == 5000
        stored = {(p, off): value for p in range(3) for off, _key, value in cluster.records("t", p)}
        # Each future points at exactly its own value.
        assert [stored[(m.partition, m.offset)] for m in metas] == values
        # Sticky: consecutive values fill one partition's batch before moving on.
        assert len({m.partition for m in metas}) > 1


async def test_send_many_with_key_goes_to_the_key_partition() -> None:
    async with running_cluster(topics={"t": 4}) as cluster:
        async with AsyncProducer(cluster.bootstrap) as producer:
            futures = await producer.send_many("t", [b"a", b"b", b"c"], key=b"user-7")
            await producer.flush()
            metas = [await f for f in futures]
        expected = keyed_partition(b"user-7", 4)
        assert {m.partition for m in metas} == {expected}
        assert [v for _o, _k, v in cluster.records("t", expected)] == [b"a", b"b", b"c"]
        assert {k for _o, k, _v in cluster.records("t", expected)} == {b"user-7"}


async def test_blocking_send_many_with_serializer_and_backpressure() -> None:
    async with running_cluster(topics={"t": 2}) as cluster:

        def produce() -> list[int]:
            with Producer(
                bootstrap_servers=cluster.bootstrap,
                batch_size=1024,
                buffer_memory=4096,
                linger_ms=0,
                value_serializer=lambda v: json.dumps(v).encode(),
            ) as producer:
                futures = producer.send_many("t", [{"n": i} for i in range(2000)], partition=1)
                producer.flush()
                assert len(futures) == 2000 and futures[-1].get(timeout=10).offset == 1999
                assert [f.get().offset for f in futures[10:13]] == [10, 11, 12]
                assert futures[-2000].get().offset == 0
                return [md.offset for md in futures.get(timeout=10)]

        offsets = await trio.to_thread.run_sync(produce)
        assert offsets == list(range(2000))
        assert [json.loads(v or b"") for _o, _k, v in cluster.records("t", 1)] == [
            {"n": i} for i in range(2000)
        ]


async def test_send_many_rejects_bad_values() -> None:
    async with (
        running_cluster(topics={"t": 1}) as cluster,
        AsyncProducer(cluster.bootstrap, max_request_size=1000) as producer,
    ):
        with pytest.raises(TypeError, match="bytes or None"):
            await producer.send_many("t", [b"ok", "not bytes"])
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send_many("t", [b"x" * 2000])
        assert len(await producer.send_many("t", [])) == 0
        futures = await producer.send_many("t", [None, b"v"])
        await producer.flush()
        assert [(await f).offset for f in futures] == [0, 1]
