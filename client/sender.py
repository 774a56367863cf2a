"""The producer's sender task: drains the accumulator into ProduceRequests.

One ``Sender`` per producer. Each round it takes the partitions with a batch ready (full,
lingered, flushing), groups them by leader and sends one ProduceRequest per broker, with
up to ``max_in_flight_requests_per_connection`` pipelined per broker. A partition with a
request in flight is muted (``client.accumulator``), so a retried batch goes out again
before any later batch of its partition: order per partition holds across retries.

With idempotence on (``client.idempotence``) the sender first gets a producer id
(InitProducerId, any broker) and stamps every batch with it and its partition's next
sequence the first time the batch is drained. It then sends at most 5 batches per
partition per request (what the broker remembers per producer), a batch sent before goes
alone (part of its first request may be in the log already and the rest not: together
they would be neither all duplicates nor all new), and a batch is retried until
``delivery_timeout_ms``. A batch that fails for good makes the producer take a new id.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from client.accumulator import ProducerBatch
from client.cluster import Cluster
from client.errors import (
    BrokerResponseError,
    ClientError,
    MinibrokerError,
    OutOfOrderSequenceNumberError,
    TimeoutExpiredError,
    for_code,
)
from client.idempotence import IdempotenceState
from client.logs import get_logger
from client.types import TopicPartition
from proto.messages import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProducePartitionData,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicData,
)

if TYPE_CHECKING:
    from client.producer import AsyncProducer

__all__ = ["MAX_BATCHES_PER_PARTITION", "Sender"]

log = get_logger("client.producer")

# Batches of one partition in one idempotent request: the broker's dedup window.
MAX_BATCHES_PER_PARTITION = 5


class Sender:
    """Drains the accumulator into ProduceRequests; one instance per producer."""

    def __init__(self, producer: AsyncProducer) -> None:
        self._p = producer
        self._acc = producer.accumulator
        self._lock = producer.lock
        self._config = producer.config
        self._in_flight: dict[int, int] = {}
        self._wake = trio.Event()
        self.wake_scheduled = False  # a thread-side wake-up is queued (blocking producer)
        self.stopped = trio.Event()
        self.idempotence = IdempotenceState() if producer.config.enable_idempotence else None
        self._init_running = False
        # InitProducerId failed for good (the broker cannot serve it): every send fails.
        self.fatal_error: BaseException | None = None

    def wake(self) -> None:
        self.wake_scheduled = False
        self._wake.set()

    async def run(self, cluster: Cluster, nursery: trio.Nursery) -> None:
        acc, lock, cfg = self._acc, self._lock, self._config
        idem = self.idempotence
        batch_limit = MAX_BATCHES_PER_PARTITION if idem is not None else 0
        backoff = cfg.connection.retry_backoff_ms / 1000
        try:
            while True:
                self._wake = trio.Event()
                cluster.refresh_if_stale()
                now = acc.clock()
                with lock:
                    by_node, delay, no_leader = acc.ready(now, cluster.leader_for)
                if no_leader:
                    cluster.request_update()
                    self._expire(no_leader, now, "has had no leader")
                    delay = min(delay, backoff)
                if self.fatal_error is not None:
                    self._fail_all(self.fatal_error)
                    by_node = {}
                elif idem is not None and idem.needs_producer_id and by_node:
                    # Nothing goes out without a producer id; wait for it (it wakes us).
                    if not self._init_running:
                        self._init_running = True
                        nursery.start_soon(self._init_producer_id, cluster)
                    self._expire(
                        [tp for tps in by_node.values() for tp in tps],
                        now,
                        "waited for a producer id",
                    )
                    by_node = {}
                    delay = min(delay, backoff)
                for node, tps in by_node.items():
                    if self._in_flight.get(node, 0) >= cfg.max_in_flight_requests_per_connection:
                        continue
                    with lock:
                        batches = acc.drain(tps, cfg.max_request_size, batch_limit)
                    if batches:
                        if idem is not None:
                            for b in batches:
                                idem.stamp(b)
                        self._in_flight[node] = self._in_flight.get(node, 0) + 1
                        nursery.start_soon(self._send, cluster, node, batches)
                with lock:
                    idle = acc.is_empty() and not any(self._in_flight.values())
                if acc.closing and idle:
                    return
                with trio.move_on_after(delay if delay != math.inf else 3600):
                    await self._wake.wait()
        finally:
            self.stopped.set()

    # --- producer id ------------------------------------------------------------------

    async def _init_producer_id(self, cluster: Cluster) -> None:
        """InitProducerId from any broker, retried with backoff while the error is
        retriable (no broker reachable, coordinator unavailable)."""
        idem = self.idempotence
        assert idem is not None
        try:
            while idem.needs_producer_id and not self._acc.closing:
                error: MinibrokerError
                try:
                    resp = await cluster.request_any(InitProducerIdRequest())
                    assert isinstance(resp, InitProducerIdResponse)
                    if resp.error_code == 0:
                        idem.set_producer_id(resp.producer_id, resp.producer_epoch)
                        log.info(
                            "producer_id_assigned",
                            producer_id=resp.producer_id,
                            producer_epoch=resp.producer_epoch,
                        )
                        return
                    error = for_code(resp.error_code)(resp.error_message or "InitProducerId")
                except (ClientError, BrokerResponseError) as exc:
                    error = exc
                if not getattr(error, "retriable", False):
                    log.error("init_producer_id_failed", error=str(error))
                    self.fatal_error = error
                    return
                log.info("init_producer_id_retry", error=str(error))
                await trio.sleep(self._config.connection.retry_backoff_ms / 1000)
        finally:
            self._init_running = False
            self.wake()

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            batches = self._acc.abort_all()
        for b in batches:
            self._fail(b, error)

    # --- sending ----------------------------------------------------------------------

    def _expire(self, tps: list[TopicPartition], now: float, why: str) -> None:
        timeout_ms = self._config.delivery_timeout_ms
        with self._lock:
            expired = [b for tp in tps for b in self._acc.expire(tp, now - timeout_ms / 1000)]
        for b in expired:
            self._fail(b, TimeoutExpiredError(f"{b.tp} {why} for {timeout_ms} ms"))

    async def _send(self, cluster: Cluster, node: int, batches: list[ProducerBatch]) -> None:
        cfg = self._config
        by_tp: dict[TopicPartition, list[ProducerBatch]] = {}
        for b in batches:
            if b.payload is None:
                b.payload = b.builder.build()
            b.attempts += 1
            by_tp.setdefault(b.tp, []).append(b)
        topics: dict[str, list[ProducePartitionData]] = {}
        for tp, bs in by_tp.items():
            payload = bs[0].payload if len(bs) == 1 else b"".join(b.payload or b"" for b in bs)
            assert payload is not None
            topics.setdefault(tp.topic, []).append(ProducePartitionData(tp.partition, payload))
        request = ProduceRequest(
            cfg.acks,
            cfg.connection.request_timeout_ms,
            [ProduceTopicData(t, parts) for t, parts in topics.items()],
        )
        try:
            conn = await cluster.connection(node)
            if cfg.acks == 0:
                await conn.send_oneway(request)
                for bs in by_tp.values():
                    for b in bs:
                        self._succeed(b, -1, -1)
                return
            response = await conn.request(request)
            assert isinstance(response, ProduceResponse)
        except (ClientError, BrokerResponseError) as exc:
            # Connection-level or request-level failure: every batch shares it.
            cluster.request_update()
            for bs in by_tp.values():
                self._retry_or_fail(bs, exc)
            return
        finally:
            self._in_flight[node] -= 1
            self.wake()
        answered: set[TopicPartition] = set()
        for t in response.topics:
            for pr in t.partitions:
                tp = TopicPartition(t.name, pr.partition)
                bs = by_tp.get(tp, [])
                if not bs:
                    continue
                answered.add(tp)
                if pr.error_code == 0:
                    # A retried duplicate is answered with its original base offset.
                    base = pr.base_offset
                    for b in bs:
                        self._succeed(b, base, pr.log_append_time_ms)
                        base += b.record_count
                    continue
                err = for_code(pr.error_code)(pr.error_message or f"producing to {tp}")
                if err.retriable:
                    cluster.request_update()
                elif isinstance(err, OutOfOrderSequenceNumberError) and self.idempotence:
                    err = _out_of_order(bs[0], err)
                self._retry_or_fail(bs, err)
        for tp, bs in by_tp.items():
            if tp not in answered:
                self._retry_or_fail(bs, MinibrokerError(f"no produce result for {tp}"))

    def _retry_or_fail(self, batches: list[ProducerBatch], error: BaseException) -> None:
        cfg = self._config
        first = batches[0]
        if getattr(error, "retriable", False) and not self._acc.closing:
            now = self._acc.clock()
            if first.attempts > cfg.retries:
                pass  # fail below with the error itself
            elif now - first.created >= cfg.delivery_timeout_ms / 1000:
                timeout = TimeoutExpiredError(
                    f"{first.tp}: delivery_timeout_ms {cfg.delivery_timeout_ms} passed after "
                    f"{first.attempts} attempts; last error: {error}"
                )
                timeout.__cause__ = error
                error = timeout
            else:
                log.info(
                    "produce_retry",
                    topic=first.tp.topic,
                    partition=first.tp.partition,
                    attempt=first.attempts,
                    error=str(error),
                )
                with self._lock:
                    self._acc.requeue(batches, now + cfg.connection.retry_backoff_ms / 1000)
                return
        for b in batches:
            self._fail(b, error)

    def _succeed(self, batch: ProducerBatch, base_offset: int, log_append_time: int) -> None:
        with self._lock:
            self._acc.finished(batch)
        batch.result.complete(base_offset, log_append_time)
        self._p.memory_freed()

    def _fail(self, batch: ProducerBatch, error: BaseException) -> None:
        with self._lock:
            self._acc.finished(batch)
        batch.result.complete(-1, -1, error)
        self._p.memory_freed()
        idem = self.idempotence
        if idem is not None and not self._acc.closing and idem.batch_failed(batch):
            # Its sequences are a gap every later batch of the partition would hit.
            log.warning(
                "producer_id_reset",
                producer_id=batch.builder.producer_id,
                topic=batch.tp.topic,
                partition=batch.tp.partition,
                error=str(error),
            )
            self.wake()


def _out_of_order(
    batch: ProducerBatch, error: OutOfOrderSequenceNumberError
) -> OutOfOrderSequenceNumberError:
    b = batch.builder
    clear = OutOfOrderSequenceNumberError(
        f"{batch.tp}: the broker refused sequence {b.base_sequence} of producer "
        f"{b.producer_id} as out of order: an earlier batch of this partition failed (or "
        f"the partition lost the producer's state). The record may be lost; the producer "
        f"takes a new producer id and carries on. Broker said: {error.message}"
    )
    clear.__cause__ = error
    return clear
