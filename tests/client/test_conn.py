"""BrokerConnection: pipelining, request-level errors, drops and timeouts."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from client.admin import AsyncAdmin
from client.conn import BrokerConnection
from client.errors import ConnectionFailedError, RequestTimedOutError, UnsupportedVersionError
from proto.messages import ApiKey, MetadataRequest, MetadataResponse
from tests.client.fakebroker import running_cluster


async def test_pipelined_requests_are_matched() -> None:
    async with running_cluster(topics={"a": 1, "b": 2}) as cluster, trio.open_nursery() as n:
        host, port = cluster.addresses[0]
        conn = BrokerConnection(host, port)
        await conn.connect(n)
        results: dict[str, int] = {}

        async def ask(topic: str) -> None:
            resp = await conn.request(MetadataRequest([topic]))
            assert isinstance(resp, MetadataResponse)
            results[topic] = len(resp.topics[0].partitions)

        async with trio.open_nursery() as inner:
            for t in ("a", "b", "a", "b"):
                inner.start_soon(ask, t)
        assert results == {"a": 1, "b": 2}
        await conn.aclose()
        n.cancel_scope.cancel()


async def test_request_level_error_is_typed() -> None:
    async with running_cluster() as cluster, trio.open_nursery() as n:
        cluster.request_errors[ApiKey.METADATA] = [UnsupportedVersionError.code]
        conn = BrokerConnection(*cluster.addresses[0])
        await conn.connect(n)
        with pytest.raises(UnsupportedVersionError):
            await conn.request(MetadataRequest([]))
        assert isinstance(await conn.request(MetadataRequest([])), MetadataResponse)
        await conn.aclose()


async def test_drop_fails_every_pending_request() -> None:
    async with running_cluster() as cluster, trio.open_nursery() as n:
        cluster.hang.add(ApiKey.METADATA)
        conn = BrokerConnection(*cluster.addresses[0])
        await conn.connect(n)
        errors: list[BaseException] = []

        async def ask() -> None:
            try:
                await conn.request(MetadataRequest([]))
            except ConnectionFailedError as exc:
                errors.append(exc)

        async with trio.open_nursery() as inner:
            for _ in range(3):
                inner.start_soon(ask)
            while len(cluster.requests_of(ApiKey.METADATA)) < 3:
                await cluster.received.wait()
            cluster.hang.clear()
            cluster.drop[ApiKey.METADATA] = 1
            inner.start_soon(ask)  # this one makes the server close the connection
        assert len(errors) == 4
        assert all(isinstance(e.__cause__, trio.BrokenResourceError) for e in errors)
        assert not conn.connected
        with pytest.raises(ConnectionFailedError):
            await conn.request(MetadataRequest([]))


async def test_close_fails_pending_with_closed_cause() -> None:
    async with running_cluster() as cluster, trio.open_nursery() as n:
        cluster.hang.add(ApiKey.METADATA)
        conn = BrokerConnection(*cluster.addresses[0])
        await conn.connect(n)
        caught: list[BaseException] = []

        async def ask() -> None:
            with pytest.raises(ConnectionFailedError) as info:
                await conn.request(MetadataRequest([]))
            caught.append(info.value)

        async with trio.open_nursery() as inner:
            inner.start_soon(ask)
            await cluster.received.wait()
            await conn.aclose()
        assert isinstance(caught[0].__cause__, trio.ClosedResourceError)


async def test_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with running_cluster() as cluster, trio.open_nursery() as n:
        cluster.hang.add(ApiKey.METADATA)
        conn = BrokerConnection(*cluster.addresses[0], request_timeout_ms=2000)
        await conn.connect(n)
        start = trio.current_time()
        with pytest.raises(RequestTimedOutError):
            await conn.request(MetadataRequest([]))
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)
        assert conn.in_flight == 0
        # As Kafka's client: a timeout disconnects (the broker may be frozen); the owner
        # reconnects for the next request.
        assert not conn.connected
        with pytest.raises(ConnectionFailedError):
            await conn.request(MetadataRequest([]))
        cluster.hang.clear()
        conn = BrokerConnection(*cluster.addresses[0], request_timeout_ms=2000)
        await conn.connect(n)
        assert isinstance(await conn.request(MetadataRequest([])), MetadataResponse)
        await conn.aclose()


async def test_a_frozen_bootstrap_broker_is_passed_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_cluster(brokers=2, topics={"t": 1}) as cluster:
        cluster.frozen.add(0)  # accepts connections, never answers
        bootstrap = ",".join(f"{h}:{p}" for h, p in (cluster.addresses[0], cluster.addresses[1]))
        start = trio.current_time()
        async with AsyncAdmin(bootstrap, request_timeout_ms=2000) as admin:
            assert [t.name for t in await admin.describe_topics(["t"])] == ["t"]
        # One request timeout on the frozen broker, then the next one answered.
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)


async def test_connect_refused() -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        async with trio.open_nursery() as n:
            with pytest.raises(ConnectionFailedError) as info:
                await BrokerConnection("127.0.0.1", port).connect(n)
            assert isinstance(info.value.__cause__, OSError)
