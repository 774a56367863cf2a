"""The idempotent producer against the fake broker: settings, InitProducerId, sequences
stamped once per batch and kept on retries, retried batches alone and first, the reset
after a batch fails for good.

``DedupCluster`` is the fake broker with the real broker's append decision
(``broker.log.append.plan_append`` over ``ProducerStateManager``), so retries are
recognised exactly as a real partition leader would, plus one more fault: a produce that
is appended but never answered (the response is lost)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from broker.log.append import plan_append
from broker.log.config import LogConfig
from broker.log.producer_state import ProducerStateManager
from client import Producer
from client.accumulator import RecordAccumulator
from client.aio import AsyncProducer
from client.config import IDEMPOTENT_RETRIES, ProducerConfig
from client.errors import (
    ConfigurationError,
    IllegalStateError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    TimeoutExpiredError,
    UnsupportedVersionError,
)
from proto.batch import BatchHeader, iter_batches, read_header
from proto.errors import BrokerResponseError
from proto.messages import (
    ApiKey,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResponse,
    Request,
    RequestHeader,
    Response,
)
from tests.client.fakebroker import NOT_LEADER, FakeCluster

OUT_OF_ORDER = 45
MESSAGE_TOO_LARGE = 10
COORDINATOR_NOT_AVAILABLE = 15
UNSUPPORTED_VERSION = 35


class DedupCluster(FakeCluster):
    def __init__(self) -> None:
        super().__init__()
        self.states: dict[tuple[str, int], ProducerStateManager] = {}
        self.unanswered = 0  # the next N produce requests are appended, never answered

    async def _answer(self, node_id: int, header: RequestHeader, req: Request) -> Response | None:
        response = await super()._answer(node_id, header, req)
        if isinstance(req, ProduceRequest) and self.unanswered:
            self.unanswered -= 1
            return None
        return response

    def _produce(self, node_id: int, req: ProduceRequest) -> ProduceResponse:
        topics = []
        for t in req.topics:
            parts = []
            for p in t.partitions:
                log, code = self._partition(node_id, ApiKey.PRODUCE, t.name, p.partition)
                base = -1
                if log is not None:
                    state = self.states.setdefault((t.name, p.partition), ProducerStateManager())
                    buf = bytearray(p.records)
                    try:
                        plan = plan_append(
                            buf,
                            LogConfig(),
                            state,
                            first_offset=log.end,
                            leader_epoch=0,
                            assign_offsets=True,
                            now_ms=0,
                        )
                    except BrokerResponseError as exc:
                        code = exc.code
                    else:
                        if plan.duplicate is not None:
                            base = plan.duplicate.first_offset
                        else:
                            base = log.append(bytes(buf))
                            state.commit(plan.producers)
                parts.append(ProducePartitionResponse(p.partition, code, base))
            topics.append(ProduceTopicResponse(t.name, parts))
        return ProduceResponse(topics)

    def headers(self, topic: str, partition: int) -> list[BatchHeader]:
        return [read_header(b) for _, b in self.topics[topic][partition].batches]

    def produce_requests(self) -> list[ProduceRequest]:
        return [r for r in self.requests_of(ApiKey.PRODUCE) if isinstance(r, ProduceRequest)]


@asynccontextmanager
async def dedup_cluster(topics: dict[str, int]) -> AsyncIterator[DedupCluster]:
    cluster = DedupCluster()
    async with trio.open_nursery() as nursery:
        await nursery.start(cluster.serve_broker, 0)
        for name, n in topics.items():
            cluster.create_topic(name, n)
        yield cluster
        nursery.cancel_scope.cancel()


def batch_counts(req: ProduceRequest) -> list[int]:
    """Batches per partition in one produce request."""
    return [len(list(iter_batches(p.records))) for t in req.topics for p in t.partitions]


def values(cluster: FakeCluster, topic: str = "t", partition: int = 0) -> list[bytes | None]:
    return [v for _, _, v in cluster.records(topic, partition)]


# --- settings ----------------------------------------------------------------------------


def test_idempotence_is_on_by_default_with_acks_all_only() -> None:
    on = ProducerConfig.build("h:1", acks="all")
    assert on.enable_idempotence and on.retries == IDEMPOTENT_RETRIES
    off = ProducerConfig.build("h:1")
    assert not off.enable_idempotence and off.retries == 5
    # Kafka 3.2+: a conflicting setting turns the default off silently.
    assert not ProducerConfig.build("h:1", acks="all", retries=0).enable_idempotence
    conflict = ProducerConfig.build("h:1", acks=-1, max_in_flight_requests_per_connection=6)
    assert not conflict.enable_idempotence
    assert not ProducerConfig.build("h:1", acks="all", enable_idempotence=False).enable_idempotence
    explicit = ProducerConfig.build("h:1", acks="all", retries=3, enable_idempotence=True)
    assert explicit.enable_idempotence and explicit.retries == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"acks": 1}, "acks must be 'all'"),
        ({"acks": 0}, "acks must be 'all'"),
        ({"acks": "all", "retries": 0}, "retries must be positive"),
        (
            {"acks": "all", "max_in_flight_requests_per_connection": 6},
            "max_in_flight_requests_per_connection must be at most 5",
        ),
    ],
)
def test_explicit_idempotence_with_a_conflict_is_a_configuration_error(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AsyncProducer("127.0.0.1:1", enable_idempotence=True, **settings)


def test_enable_idempotence_must_be_a_bool_or_none() -> None:
    with pytest.raises(ConfigurationError, match="enable_idempotence"):
        AsyncProducer("127.0.0.1:1", acks="all", enable_idempotence="yes")


# --- stamping ----------------------------------------------------------------------------


async def test_batches_carry_the_producer_id_and_consecutive_sequences() -> None:
    async with dedup_cluster({"t": 2}) as cluster:
        async with AsyncProducer(
            cluster.bootstrap, acks="all", batch_size=300, linger_ms=0
        ) as producer:
            futs = [await producer.send("t", b"%04d" % i * 10, partition=i % 2) for i in range(40)]
            await producer.flush()
            metas = [await f for f in futs]
        apis = [
            api for _, api, _ in cluster.log if api in (ApiKey.INIT_PRODUCER_ID, ApiKey.PRODUCE)
        ]
        assert apis[0] == ApiKey.INIT_PRODUCER_ID and apis.count(ApiKey.INIT_PRODUCER_ID) == 1
        for p in (0, 1):
            headers = cluster.headers("t", p)
            assert len(headers) > 2  # several batches per partition
            assert {(h.producer_id, h.producer_epoch) for h in headers} == {(0, 0)}
            expected = 0
            for h in headers:
                assert h.base_sequence == expected
                expected += h.record_count
            assert expected == 20
            assert values(cluster, "t", p) == [b"%04d" % i * 10 for i in range(p, 40, 2)]
        assert [m.offset for m in metas[0::2]] == list(range(20))


async def test_acks_1_stays_non_idempotent() -> None:
    async with dedup_cluster({"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap) as producer:
            await producer.send_and_wait("t", b"v")
        assert not cluster.requests_of(ApiKey.INIT_PRODUCER_ID)
        assert [h.producer_id for h in cluster.headers("t", 0)] == [-1]


async def test_the_blocking_producer_stamps_too() -> None:
    async with dedup_cluster({"t": 1}) as cluster:

        def produce() -> list[int]:
            with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
                futs = [producer.send("t", b"v%d" % i) for i in range(10)]
                producer.flush()
                return [f.get().offset for f in futs]

        assert await trio.to_thread.run_sync(produce) == list(range(10))
        assert {h.producer_id for h in cluster.headers("t", 0)} == {0}


async def test_closing_a_blocking_producer_with_records_in_flight() -> None:
    """close(timeout) of a blocking producer whose records are never answered fails
    them (it used to crash: flush awaited a trio event its results do not have)."""
    async with dedup_cluster({"t": 1}) as cluster:
        cluster.hang.add(ApiKey.PRODUCE)

        def produce() -> BaseException | None:
            producer = Producer(bootstrap_servers=cluster.bootstrap, acks="all")
            fut = producer.send("t", b"v")
            producer.close(timeout=0.2)
            return fut.exception

        error = await trio.to_thread.run_sync(produce)
        assert isinstance(error, IllegalStateError)


# --- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("idempotent", [True, False])
async def test_a_lost_response_is_retried_without_a_duplicate(
    autojump_clock: trio.testing.MockClock, idempotent: bool
) -> None:
    async with dedup_cluster({"t": 1}) as cluster:
        cluster.unanswered = 1
        async with AsyncProducer(
            cluster.bootstrap,
            acks="all",
            enable_idempotence=idempotent,
            retries=5,
            batch_size=200,
            linger_ms=60_000,
            request_timeout_ms=1000,
        ) as producer:
            futs = [await producer.send("t", b"%03d" % i * 20) for i in range(12)]
            await producer.flush()
            offsets = [(await f).offset for f in futs]
        first, *retries = cluster.produce_requests()
        assert batch_counts(first) == [4]  # every batch of the partition in one request
        sent = [b"%03d" % i * 20 for i in range(12)]
        if idempotent:
            # Each batch is retried alone, in order, with the bytes (and sequence) it first
            # had; the broker answers each with its original offset.
            assert [batch_counts(r) for r in retries] == [[1], [1], [1], [1]]
            resent = b"".join(r.topics[0].partitions[0].records for r in retries)
            assert resent == first.topics[0].partitions[0].records
            assert values(cluster) == sent
            assert offsets == list(range(12))
        else:
            assert values(cluster) == sent + sent  # what idempotence prevents
            assert offsets == list(range(12, 24))


async def test_a_refused_request_is_retried_alone_before_later_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with dedup_cluster({"t": 1}) as cluster:
        cluster.partition_errors[(ApiKey.PRODUCE, "t", 0)] = [NOT_LEADER]
        async with AsyncProducer(
            cluster.bootstrap, acks="all", batch_size=200, linger_ms=60_000, retry_backoff_ms=10
        ) as producer:
            futs = [await producer.send("t", b"%03d" % i * 20) for i in range(36)]
            flush = trio.Event()

            async def more() -> None:
                # Sent while the refused batches wait for their retry.
                await cluster.received.wait()
                futs.extend([await producer.send("t", b"%03d" % i * 20) for i in range(36, 40)])
                flush.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(more)
                await producer.flush()
                await flush.wait()
                await producer.flush()
            offsets = [(await f).offset for f in futs]
        counts = [batch_counts(r) for r in cluster.produce_requests()]
        # At most 5 batches per partition per request; the refused five are retried one
        # by one before anything newer of the partition goes out.
        assert counts[0] == [5]
        assert counts[1:6] == [[1]] * 5
        assert all(c[0] <= 5 for c in counts)
        assert values(cluster) == [b"%03d" % i * 20 for i in range(40)]
        assert offsets == list(range(40))
        headers = cluster.headers("t", 0)
        assert [h.base_sequence for h in headers] == [h.base_offset for h in headers]


async def test_retries_go_on_until_the_delivery_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with dedup_cluster({"t": 1}) as cluster:
        cluster.partition_errors[(ApiKey.PRODUCE, "t", 0)] = [NOT_LEADER] * 1000
        async with AsyncProducer(
            cluster.bootstrap, acks="all", retry_backoff_ms=100, delivery_timeout_ms=3000
        ) as producer:
            start = trio.current_time()
            fut = await producer.send("t", b"v")
            with pytest.raises(TimeoutExpiredError, match="delivery_timeout_ms") as info:
                await fut
            assert 3.0 <= trio.current_time() - start < 3.5
        assert info.value.__cause__ is not None
        assert len(cluster.produce_requests()) > 10  # far more than 5 retries


# --- failing for good --------------------------------------------------------------------


async def test_out_of_order_fails_the_batch_clearly_and_takes_a_new_producer_id() -> None:
    async with dedup_cluster({"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap, acks="all") as producer:
            assert (await producer.send_and_wait("t", b"a")).offset == 0
            cluster.partition_errors[(ApiKey.PRODUCE, "t", 0)] = [OUT_OF_ORDER]
            fut = await producer.send("t", b"refused")
            with pytest.raises(OutOfOrderSequenceNumberError, match="new producer id") as info:
                await fut
            assert "sequence 1 of producer 0" in str(info.value)
            assert (await producer.send_and_wait("t", b"b")).offset == 1
        assert len(cluster.requests_of(ApiKey.INIT_PRODUCER_ID)) == 2
        assert [(h.producer_id, h.base_sequence) for h in cluster.headers("t", 0)] == [
            (0, 0),
            (1, 0),
        ]
        assert values(cluster) == [b"a", b"b"]


async def test_a_failed_batch_leaves_no_gap_for_the_next_one() -> None:
    async with dedup_cluster({"t": 1}) as cluster:
        async with AsyncProducer(cluster.bootstrap, acks="all") as producer:
            cluster.partition_errors[(ApiKey.PRODUCE, "t", 0)] = [MESSAGE_TOO_LARGE]
            with pytest.raises(MessageSizeTooLargeError):
                await producer.send_and_wait("t", b"too big")
            # Its sequence 0 was never written: a new producer id starts again at 0,
            # where the old id would have sent sequence 1 (a gap: OUT_OF_ORDER).
            assert (await producer.send_and_wait("t", b"next")).offset == 0
        assert [(h.producer_id, h.base_sequence) for h in cluster.headers("t", 0)] == [(1, 0)]


async def test_init_producer_id_is_retried_and_a_permanent_refusal_fails_sends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with dedup_cluster({"t": 1}) as cluster:
        cluster.request_errors[ApiKey.INIT_PRODUCER_ID] = [COORDINATOR_NOT_AVAILABLE] * 3
        async with AsyncProducer(cluster.bootstrap, acks="all") as producer:
            assert (await producer.send_and_wait("t", b"a")).offset == 0
        assert len(cluster.requests_of(ApiKey.INIT_PRODUCER_ID)) == 4

        cluster.request_errors[ApiKey.INIT_PRODUCER_ID] = [UNSUPPORTED_VERSION]
        async with AsyncProducer(cluster.bootstrap, acks="all") as producer:
            with pytest.raises(UnsupportedVersionError):
                await producer.send_and_wait("t", b"b")
            with pytest.raises(UnsupportedVersionError):
                await producer.send_and_wait("t", b"c")
        assert values(cluster) == [b"a"]


# --- batch growth ------------------------------------------------------------------------


def accumulator(grow: bool) -> RecordAccumulator:
    return RecordAccumulator(
        batch_size=1000,
        linger_ms=0,
        codec=0,
        buffer_memory=1 << 20,
        lock=threading.Lock(),
        blocking=True,
        clock=time.monotonic,
        max_grown_batch_size=4000 if grow else 0,
        backlog_batches=2 if grow else 0,
    )


@pytest.mark.parametrize("grow", [True, False])
def test_a_backlogged_partitions_batch_grows_instead_of_queueing(grow: bool) -> None:
    acc = accumulator(grow)
    tp = acc.topic_partition("t", 0)
    for _ in range(200):
        acc.append(tp, b"x" * 90, None, (), 0)
    sizes = [b.builder.size for b in acc.queued[tp]]
    if grow:
        # Two batches of ~1000 bytes make a whole request; then each batch doubles to
        # 4000 before it is sealed.
        assert [s // 1000 for s in sizes[:2]] == [1, 1]
        assert all(3900 <= s < 4200 for s in sizes[2:]) and len(sizes) > 3
    else:
        assert all(s < 1100 for s in sizes)
    batches = [*acc.queued[tp], *acc.open.values()]
    assert acc.buffered_bytes == sum(b.seal_at for b in batches)
    for b in batches:
        acc.finished(b)
    assert acc.buffered_bytes == 0


def test_a_grown_batch_stops_being_the_sticky_one() -> None:
    acc = accumulator(grow=True)
    grown = None
    for _ in range(200):
        tp = acc.topic_partition("t", acc.sticky.current("t", 2, [0, 1]))
        if acc.try_append_sticky("t", b"x" * 90, 0) is None:
            acc.append(tp, b"x" * 90, None, (), 0, sticky=True)
        batch = acc.open.get(tp)
        if batch is not None and batch.seal_at > 1000:
            grown = batch
            break
    assert grown is not None
    # Keyless records move on to the other partition, as after a seal.
    assert acc.sticky_open.get("t") is not grown
    assert acc.sticky.current("t", 2, [0, 1]) != grown.tp.partition
