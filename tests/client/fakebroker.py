"""A small in-memory minibroker for client tests: real TCP on 127.0.0.1, port 0.

``FakeCluster`` holds topics and partition logs shared by N ``serve_broker`` tasks (one
listener per node id), answers Metadata, Produce, Fetch (long-polling), ListOffsets,
CreateTopics, DeleteTopics, DescribeConfigs and InitProducerId (no sequence checks) like
the real broker will, and lets a test inject faults: per-partition error codes,
request-level errors, dropped connections and requests that never get an answer.
Requests on one connection are handled in order, one at a time, as Kafka's socket server
does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from proto.batch import decode_records, iter_batches, set_base_offset
from proto.connection import ServerConnection
from proto.errors import RemoteProtocolError
from proto.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    ApiKey,
    BrokerMetadata,
    CreatableTopicResult,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeletableTopicResult,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    DescribeConfigsResult,
    FetchPartitionResponse,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListOffsetsPartitionResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
    MetadataRequest,
    MetadataResponse,
    PartitionMetadata,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResponse,
    Request,
    RequestHeader,
    Response,
    TopicMetadata,
)

NOT_LEADER = 6
UNKNOWN_TOPIC = 3
OFFSET_OUT_OF_RANGE = 1
DEFAULT_CONFIGS = {"retention.ms": "604800000", "segment.bytes": "1073741824"}


@dataclass
class PartitionLog:
    leader: int
    batches: list[tuple[int, bytes]] = field(default_factory=list)  # (base_offset, batch)
    log_start: int = 0
    end: int = 0
    appended: trio.Event = field(default_factory=trio.Event)

    def append(self, records: bytes) -> int:
        base = self.end
        buf = bytearray(records)
        for pos, h in list(iter_batches(buf)):
            set_base_offset(buf, self.end, pos)
            self.batches.append((self.end, bytes(buf[pos : pos + h.size])))
            self.end += h.record_count
        self.appended.set()
        self.appended = trio.Event()
        return base

    def read(self, offset: int, max_bytes: int) -> bytes:
        out: list[bytes] = []
        size = 0
        for base, batch in self.batches:
            if base + _count(batch) <= offset:
                continue
            if out and size + len(batch) > max_bytes:
                break
            out.append(batch)
            size += len(batch)
        return b"".join(out)

    def truncate_front(self, new_start: int) -> None:
        self.batches = [(b, x) for b, x in self.batches if b + _count(x) > new_start]
        self.log_start = new_start


def _count(batch: bytes) -> int:
    return next(iter_batches(batch, validate=False))[1].record_count


class FakeCluster:
    def __init__(self) -> None:
        self.addresses: dict[int, tuple[str, int]] = {}
        self.topics: dict[str, list[PartitionLog]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.controller_id = 0
        self.next_producer_id = 0
        # Fault injection: consumed one per matching request.
        self.partition_errors: dict[tuple[ApiKey, str, int], list[int]] = {}
        self.request_errors: dict[ApiKey, list[int]] = {}
        self.drop: dict[ApiKey, int] = {}  # close the connection on the next N of these
        self.hang: set[ApiKey] = set()  # never answer these
        self.frozen: set[int] = set()  # these brokers accept connections, never answer
        self.log: list[tuple[int, ApiKey, Request]] = []  # (node_id, api, request)
        self.received = trio.Event()

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.addresses.values())

    def create_topic(self, name: str, partitions: int = 1) -> None:
        nodes = sorted(self.addresses) or [0]
        self.topics[name] = [PartitionLog(nodes[p % len(nodes)]) for p in range(partitions)]
        self.configs[name] = {}

    def records(self, topic: str, partition: int) -> list[tuple[int, bytes | None, bytes | None]]:
        out: list[tuple[int, bytes | None, bytes | None]] = []
        for _, batch in self.topics[topic][partition].batches:
            out.extend((r.offset, r.key, r.value) for r in decode_records(batch))
        return out

    def requests_of(self, api: ApiKey) -> list[Request]:
        return [r for _, a, r in self.log if a == api]

    # --- serving --------------------------------------------------------------------

    async def serve_broker(
        self,
        node_id: int,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        addr = listeners[0].socket.getsockname()[:2]
        self.addresses[node_id] = (addr[0], addr[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._make_handler(node_id), listeners)
            task_status.started((addr[0], addr[1]))

    def _make_handler(self, node_id: int) -> Callable[[trio.SocketStream], Awaitable[None]]:
        async def handle(stream: trio.SocketStream) -> None:
            await self._serve_connection(node_id, stream)

        return handle

    async def _serve_connection(self, node_id: int, stream: trio.SocketStream) -> None:
        conn = ServerConnection()
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(1 << 16)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                conn.receive_data(data)
                while True:
                    try:
                        item = conn.next_request()
                    except RemoteProtocolError:
                        return
                    if item is None:
                        break
                    header, request = item
                    api = ApiKey(header.api_key)
                    self.log.append((node_id, api, request))
                    self.received.set()
                    self.received = trio.Event()
                    if self.drop.get(api, 0) > 0:
                        self.drop[api] -= 1
                        return
                    if api in self.hang or node_id in self.frozen:
                        continue
                    errors = self.request_errors.get(api)
                    if errors:
                        await stream.send_all(conn.send_error(header.correlation_id, errors.pop(0)))
                        continue
                    response = await self._answer(node_id, header, request)
                    if response is not None:
                        await stream.send_all(conn.send_response(header, response))

    def _injected(self, api: ApiKey, topic: str, partition: int) -> int:
        errs = self.partition_errors.get((api, topic, partition))
        return errs.pop(0) if errs else 0

    async def _answer(self, node_id: int, header: RequestHeader, req: Request) -> Response | None:
        if isinstance(req, MetadataRequest):
            return self._metadata(req)
        if isinstance(req, ProduceRequest):
            resp = self._produce(node_id, req)
            return None if req.acks == 0 else resp
        if isinstance(req, FetchRequest):
            return await self._fetch(node_id, req)
        if isinstance(req, ListOffsetsRequest):
            return self._list_offsets(node_id, req)
        if isinstance(req, CreateTopicsRequest):
            return self._create(req)
        if isinstance(req, InitProducerIdRequest):
            self.next_producer_id += 1
            return InitProducerIdResponse(0, self.next_producer_id - 1, 0)
        if isinstance(req, DeleteTopicsRequest):
            results = []
            for name in req.topic_names:
                code = 0 if name in self.topics else UNKNOWN_TOPIC
                if code == 0:
                    del self.topics[name]
                results.append(DeletableTopicResult(name, code))
            return DeleteTopicsResponse(results)
        if isinstance(req, DescribeConfigsRequest):
            return DescribeConfigsResponse(
                [
                    DescribeConfigsResult(
                        name,
                        0 if name in self.topics else UNKNOWN_TOPIC,
                        {**DEFAULT_CONFIGS, **self.configs.get(name, {})},
                        sorted(self.configs.get(name, {})),
                    )
                    for name in req.topics
                ]
            )
        raise AssertionError(f"unexpected request {req!r}")

    def _metadata(self, req: MetadataRequest) -> MetadataResponse:
        names = sorted(self.topics) if req.topics is None else req.topics
        topics = []
        for name in names:
            logs = self.topics.get(name)
            if logs is None:
                topics.append(TopicMetadata(UNKNOWN_TOPIC, name, False, []))
                continue
            parts = [
                PartitionMetadata(0, p, log.leader, 0, [log.leader], [log.leader])
                for p, log in enumerate(logs)
            ]
            topics.append(TopicMetadata(0, name, False, parts))
        brokers = [BrokerMetadata(n, h, p) for n, (h, p) in sorted(self.addresses.items())]
        return MetadataResponse(brokers, "fake-cluster", self.controller_id, topics)

    def _partition(
        self, node_id: int, api: ApiKey, topic: str, partition: int
    ) -> tuple[PartitionLog | None, int]:
        logs = self.topics.get(topic)
        if logs is None or not 0 <= partition < len(logs):
            return None, UNKNOWN_TOPIC
        code = self._injected(api, topic, partition)
        if code:
            return None, code
        log = logs[partition]
        if log.leader != node_id:
            return None, NOT_LEADER
        return log, 0

    def _produce(self, node_id: int, req: ProduceRequest) -> ProduceResponse:
        topics = []
        for t in req.topics:
            parts = []
            for p in t.partitions:
                log, code = self._partition(node_id, ApiKey.PRODUCE, t.name, p.partition)
                base = log.append(p.records) if log is not None else -1
                parts.append(ProducePartitionResponse(p.partition, code, base))
            topics.append(ProduceTopicResponse(t.name, parts))
        return ProduceResponse(topics)

    async def _fetch(self, node_id: int, req: FetchRequest) -> FetchResponse:
        with trio.move_on_after(req.max_wait_ms / 1000):
            while True:
                response, size, waits = self._fetch_once(node_id, req)
                if size >= req.min_bytes or not waits:
                    return response
                await waits[0].wait()  # any append to a requested partition
        return self._fetch_once(node_id, req)[0]

    def _fetch_once(
        self, node_id: int, req: FetchRequest
    ) -> tuple[FetchResponse, int, list[trio.Event]]:
        topics, size, waits = [], 0, []
        for t in req.topics:
            parts = []
            for p in t.partitions:
                log, code = self._partition(node_id, ApiKey.FETCH, t.name, p.partition)
                records = b""
                hw = start = -1
                if log is not None:
                    hw, start = log.end, log.log_start
                    if not log.log_start <= p.fetch_offset <= log.end:
                        code = OFFSET_OUT_OF_RANGE
                    else:
                        records = log.read(p.fetch_offset, p.partition_max_bytes)
                        waits.append(log.appended)
                size += len(records)
                parts.append(FetchPartitionResponse(p.partition, code, hw, hw, start, records))
                if code:
                    size += 1  # an error answers right away
            topics.append(FetchTopicResponse(t.name, parts))
        return FetchResponse(0, topics), size, waits

    def _list_offsets(self, node_id: int, req: ListOffsetsRequest) -> ListOffsetsResponse:
        topics = []
        for t in req.topics:
            parts = []
            for p in t.partitions:
                log, code = self._partition(node_id, ApiKey.LIST_OFFSETS, t.name, p.partition)
                offset, ts = -1, -1
                if log is not None:
                    if p.timestamp == EARLIEST_TIMESTAMP:
                        offset = log.log_start
                    elif p.timestamp == LATEST_TIMESTAMP:
                        offset = log.end
                    else:
                        for _, batch in log.batches:
                            hit = [r for r in decode_records(batch) if r.timestamp >= p.timestamp]
                            if hit:
                                offset, ts = hit[0].offset, hit[0].timestamp
                                break
                parts.append(ListOffsetsPartitionResponse(p.partition, code, ts, offset))
            topics.append(ListOffsetsTopicResponse(t.name, parts))
        return ListOffsetsResponse(topics)

    def _create(self, req: CreateTopicsRequest) -> CreateTopicsResponse:
        results = []
        for t in req.topics:
            if t.name in self.topics:
                results.append(CreatableTopicResult(t.name, 36, "topic exists"))
            elif t.num_partitions <= 0:
                results.append(CreatableTopicResult(t.name, 37, "partitions must be > 0"))
            elif t.replication_factor > len(self.addresses):
                results.append(CreatableTopicResult(t.name, 38, "not enough brokers"))
            else:
                if not req.validate_only:
                    self.create_topic(t.name, t.num_partitions)
                    self.configs[t.name] = dict(t.configs)
                results.append(CreatableTopicResult(t.name, 0))
        return CreateTopicsResponse(results)


@asynccontextmanager
async def running_cluster(
    brokers: int = 1, topics: dict[str, int] | None = None
) -> AsyncIterator[FakeCluster]:
    """Start ``brokers`` fake brokers with ``topics`` (name -> partitions)."""
    cluster = FakeCluster()
    async with trio.open_nursery() as nursery:
        for node_id in range(brokers):
            await nursery.start(cluster.serve_broker, node_id)
        for name, n in (topics or {}).items():
            cluster.create_topic(name, n)
        yield cluster
        nursery.cancel_scope.cancel()
