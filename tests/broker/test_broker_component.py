"""A coordinator and a broker in one trio run, driven with raw protocol requests.

Covers the handler paths the client library hides: request-level and partition-level
errors, acks=0, long polling under the autojump clock, list offsets, topic configs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from broker.config import BrokerConfig
from broker.server import serve as serve_broker
from coordinator.config import CoordinatorConfig
from coordinator.server import serve as serve_coordinator
from proto import messages as m
from proto.batch import BatchBuilder, iter_batches, records_of
from proto.connection import ClientConnection
from proto.errors import (
    CorruptRecordError,
    InvalidConfigurationError,
    InvalidRequiredAcksError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
)


class Wire:
    """One client connection speaking the broker protocol."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = ClientConnection("component-test")

    async def send(self, request: m.Request) -> int:
        cid, frame = self.conn.send_request(request)
        await self.stream.send_all(frame)
        return cid

    async def receive(self) -> m.Response:
        while True:
            event = self.conn.next_event()
            if event is not None:
                assert event.response is not None, f"request-level error {event.error_code}"
                return event.response
            data = await self.stream.receive_some(65536)
            assert data, "broker closed the connection"
            self.conn.receive_data(data)

    async def call(self, request: m.Request) -> m.Response:
        await self.send(request)
        return await self.receive()


@asynccontextmanager
async def running_broker(
    tmp_path: Path, nursery: trio.Nursery, settings: dict[str, str] | None = None
) -> AsyncIterator[Wire]:
    """A coordinator and one broker in this trio run; yields a connection to the broker."""
    coord_addr = await nursery.start(
        serve_coordinator,
        CoordinatorConfig(port=0, data_dir=tmp_path / "coord", force_sync=False),
    )
    config = BrokerConfig.from_settings(
        1,
        settings or {},
        listen_port=0,
        coordinator=f"{coord_addr[0]}:{coord_addr[1]}",
        data_dir=str(tmp_path / "broker"),
    )
    shutdown, stopped = trio.Event(), trio.Event()

    async def run_broker(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        try:
            await serve_broker(config, shutdown=shutdown, task_status=task_status)
        finally:
            stopped.set()

    host, port = await nursery.start(run_broker)
    stream = await trio.open_tcp_stream(host, port)
    yield Wire(stream)
    await stream.aclose()
    # A clean stop: the broker closes its session while the coordinator still runs.
    shutdown.set()
    await stopped.wait()
    nursery.cancel_scope.cancel()


@pytest.fixture
async def wire(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Wire]:
    async with running_broker(tmp_path, nursery) as w:
        resp = await w.call(m.CreateTopicsRequest([m.CreatableTopic("t", 2, 1)]))
        assert isinstance(resp, m.CreateTopicsResponse) and resp.topics[0].error_code == 0
        yield w


def batch(*values: bytes, timestamp_ms: int | None = None) -> bytes:
    b = BatchBuilder()
    for v in values:
        b.append(v, timestamp_ms=timestamp_ms)
    return b.build()


def produce(
    records: bytes, acks: int = 1, partition: int = 0, topic: str = "t"
) -> m.ProduceRequest:
    return m.ProduceRequest(
        acks, 1000, [m.ProduceTopicData(topic, [m.ProducePartitionData(partition, records)])]
    )


def fetch(offset: int, max_wait_ms: int = 0, partition: int = 0) -> m.FetchRequest:
    return m.FetchRequest(
        max_wait_ms, 1, 1 << 20, [m.FetchTopic("t", [m.FetchPartition(partition, offset, 1 << 20)])]
    )


def produced(resp: m.Response) -> m.ProducePartitionResponse:
    assert isinstance(resp, m.ProduceResponse)
    return resp.topics[0].partitions[0]


def fetched(resp: m.Response) -> m.FetchPartitionResponse:
    assert isinstance(resp, m.FetchResponse)
    return resp.topics[0].partitions[0]


async def test_produce_then_fetch_assigns_contiguous_offsets(wire: Wire) -> None:
    r1 = produced(await wire.call(produce(batch(b"a", b"b", b"c"))))
    r2 = produced(await wire.call(produce(batch(b"d"))))
    assert (r1.error_code, r1.base_offset, r2.base_offset) == (0, 0, 3)
    f = fetched(await wire.call(fetch(0)))
    assert isinstance(f, m.FetchPartitionResponse) and f.high_watermark == 4
    assert isinstance(f.records, bytes)
    assert [(r.offset, r.value) for r in records_of(f.records)] == [
        (0, b"a"),
        (1, b"b"),
        (2, b"c"),
        (3, b"d"),
    ]


async def test_partition_errors_keep_the_connection(wire: Wire) -> None:
    bad_acks = produced(await wire.call(produce(batch(b"x"), acks=2)))
    assert bad_acks.error_code == InvalidRequiredAcksError.code
    corrupt = bytearray(batch(b"x"))
    corrupt[-1] ^= 0xFF
    bad_crc = produced(await wire.call(produce(bytes(corrupt))))
    assert bad_crc.error_code == CorruptRecordError.code
    unknown = produced(await wire.call(produce(batch(b"x"), topic="nope")))
    assert unknown.error_code == UnknownTopicOrPartitionError.code
    no_partition = produced(await wire.call(produce(batch(b"x"), partition=7)))
    assert no_partition.error_code == UnknownTopicOrPartitionError.code
    out_of_range = fetched(await wire.call(fetch(99)))
    assert out_of_range.error_code == OffsetOutOfRangeError.code
    ok = produced(await wire.call(produce(batch(b"x"))))
    assert ok.error_code == 0 and ok.base_offset == 0


async def test_acks_0_gets_no_response(wire: Wire) -> None:
    await wire.send(produce(batch(b"fire"), acks=0))
    await wire.send(produce(batch(b"and forget"), acks=0))
    # The next response on the connection is the metadata answer: nothing was sent for acks=0.
    resp = await wire.call(m.MetadataRequest(["t"]))
    assert isinstance(resp, m.MetadataResponse)
    f = fetched(await wire.call(fetch(0)))
    assert isinstance(f, m.FetchPartitionResponse) and f.high_watermark == 2


async def test_fetch_long_polls_until_max_wait(wire: Wire, autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    f = fetched(await wire.call(fetch(0, max_wait_ms=500)))
    assert f.error_code == 0 and f.records == b""
    assert trio.current_time() - start == pytest.approx(0.5, abs=0.05)


async def test_fetch_wakes_when_data_arrives(wire: Wire, autojump_clock: trio.abc.Clock) -> None:
    producer_stream = await trio.open_tcp_stream(*wire.stream.socket.getpeername()[:2])
    producer = Wire(producer_stream)
    start = trio.current_time()
    async with trio.open_nursery() as n:
        result: list[m.Response] = []

        async def long_poll() -> None:
            result.append(await wire.call(fetch(0, max_wait_ms=30_000)))

        n.start_soon(long_poll)
        await trio.testing.wait_all_tasks_blocked()
        await producer.call(produce(batch(b"wake up")))
    f = fetched(result[0])
    assert isinstance(f.records, bytes) and len(list(iter_batches(f.records))) == 1
    assert trio.current_time() - start < 30
    await producer_stream.aclose()


async def test_list_offsets(wire: Wire) -> None:
    now = int(time.time() * 1000)
    await wire.call(produce(batch(b"old", timestamp_ms=now - 60_000)))
    await wire.call(produce(batch(b"new", timestamp_ms=now)))

    async def offset_for(ts: int) -> tuple[int, int]:
        resp = await wire.call(
            m.ListOffsetsRequest([m.ListOffsetsTopic("t", [m.ListOffsetsPartition(0, ts)])])
        )
        assert isinstance(resp, m.ListOffsetsResponse)
        p = resp.topics[0].partitions[0]
        assert p.error_code == 0
        return p.offset, p.timestamp

    assert (await offset_for(m.EARLIEST_TIMESTAMP))[0] == 0
    assert (await offset_for(m.LATEST_TIMESTAMP))[0] == 2
    assert await offset_for(now - 1000) == (1, now)
    assert (await offset_for(now + 60_000))[0] == -1


async def test_topic_configs(wire: Wire) -> None:
    resp = await wire.call(
        m.CreateTopicsRequest([m.CreatableTopic("c", 1, 1, {"retention.ms": "1000"})])
    )
    assert isinstance(resp, m.CreateTopicsResponse) and resp.topics[0].error_code == 0
    bad = await wire.call(
        m.CreateTopicsRequest([m.CreatableTopic("d", 1, 1, {"retention.ms": "x"})])
    )
    assert isinstance(bad, m.CreateTopicsResponse)
    assert bad.topics[0].error_code == InvalidConfigurationError.code
    assert "retention.ms" in (bad.topics[0].error_message or "")
    described = await wire.call(m.DescribeConfigsRequest(["c"]))
    assert isinstance(described, m.DescribeConfigsResponse)
    [result] = described.results
    assert result.configs["retention.ms"] == "1000" and result.overrides == ["retention.ms"]
    assert result.configs["segment.bytes"] == str(1024**3)  # a broker default shows through


async def test_topic_segment_bytes_override_rolls_segments(wire: Wire, tmp_path: Path) -> None:
    resp = await wire.call(
        m.CreateTopicsRequest([m.CreatableTopic("small", 1, 1, {"segment.bytes": "20000"})])
    )
    assert isinstance(resp, m.CreateTopicsResponse) and resp.topics[0].error_code == 0
    for i in range(10):
        r = produced(await wire.call(produce(batch(b"x" * 5000), topic="small")))
        assert r.error_code == 0 and r.base_offset == i
    segments = sorted(p.name for p in (tmp_path / "broker" / "small-0").glob("*.log"))
    assert len(segments) >= 3 and segments[0] == "00000000000000000000.log"


async def test_metadata_auto_creates_topics_when_enabled(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = {"auto.create.topics.enable": "true", "num.partitions": "3"}
    async with running_broker(tmp_path, nursery, settings) as w:
        resp = await w.call(m.MetadataRequest(["fresh", "bad name"]))
        assert isinstance(resp, m.MetadataResponse)
        fresh, bad = resp.topics
        assert fresh.error_code == 0 and len(fresh.partitions) == 3
        assert bad.error_code == UnknownTopicOrPartitionError.code  # an illegal name stays unknown


async def test_metadata_does_not_create_topics_by_default(wire: Wire) -> None:
    resp = await wire.call(m.MetadataRequest(["fresh"]))
    assert isinstance(resp, m.MetadataResponse)
    assert resp.topics[0].error_code == UnknownTopicOrPartitionError.code


async def test_api_versions_lists_every_api_on_the_wire(wire: Wire) -> None:
    """Every request type the protocol defines is served, and ApiVersions says so with
    each one's version range (the group APIs included, served by the group coordinator)."""
    from proto import group_messages as g

    versions = await wire.call(m.ApiVersionsRequest())
    assert isinstance(versions, m.ApiVersionsResponse)
    listed = {v.api_key: (v.min_version, v.max_version) for v in versions.api_keys}
    assert listed == {
        key: (cls.MIN_VERSION, cls.MAX_VERSION) for key, cls in m.REQUEST_TYPES.items()
    }
    found = await wire.call(g.FindCoordinatorRequest("my-group"))
    assert isinstance(found, g.FindCoordinatorResponse)
    assert isinstance(await wire.call(m.MetadataRequest([])), m.MetadataResponse)
