"""The async producer and its sender task: the real implementation behind both APIs.

``AsyncProducer.send`` appends to the accumulator (see client.accumulator) and returns a
``FutureRecordMetadata``. The ``Sender`` task (``client.sender``) drains ready batches per
broker into one ProduceRequest (many partitions, several batches each), with up to
``max_in_flight_requests_per_connection`` requests pipelined per broker; retriable errors
put the batches back in front of their partition's queue after a metadata refresh. With
``enable_idempotence`` (on by default with acks=all) each batch carries a producer id and
sequence, so those retries never write a record twice (``client.idempotence``).
The blocking ``client.sync.Producer`` shares this object but appends from its own thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import trio

from client.accumulator import (
    FutureRecordMetadata,
    ProduceResult,
    RecordAccumulator,
    RecordFutures,
)
from client.cluster import Cluster
from client.config import RECORD_OVERHEAD, ProducerConfig
from client.errors import (
    IllegalStateError,
    MessageSizeTooLargeError,
    TimeoutExpiredError,
    UnknownTopicOrPartitionError,
)
from client.lifecycle import BackgroundTasks
from client.logs import get_logger
from client.partitioner import keyed_partition
from client.sender import MAX_BATCHES_PER_PARTITION, Sender
from client.types import TopicPartition

__all__ = ["AsyncProducer"]

log = get_logger("client.producer")


def _wait_all(results: list[ProduceResult]) -> None:
    for r in results:
        r.wait_blocking(None)


def _batch_growth(config: ProducerConfig) -> dict[str, int]:
    """An idempotent producer sends at most 5 batches per partition per request; under
    load its batches double up to max_request_size / 5 (16 KiB -> 128 KiB by default),
    so that a request can still carry as much of a partition as a non-idempotent one.
    Measured with acks=all on 3 brokers: without growth, half the records/s or less."""
    if not config.enable_idempotence:
        return {}
    limit = config.max_request_size // MAX_BATCHES_PER_PARTITION
    if limit < 2 * config.batch_size:
        return {}
    return {"max_grown_batch_size": limit, "backlog_batches": MAX_BATCHES_PER_PARTITION}


_VALUE_TYPES = frozenset({bytes, type(None)})


class AsyncProducer:
    """Publishes records to minibroker. ``async with AsyncProducer(...) as p:``.

    Settings follow kafka-python's names; see ``ProducerConfig.build`` for defaults.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **configs: Any):
        blocking = bool(configs.pop("_blocking", False))
        self.config = ProducerConfig.build(bootstrap_servers, **configs)
        self.lock = threading.Lock()
        self.memory_cond = threading.Condition(self.lock)
        self.accumulator = RecordAccumulator(
            batch_size=self.config.batch_size,
            linger_ms=self.config.linger_ms,
            codec=self.config.codec,
            buffer_memory=self.config.buffer_memory,
            lock=self.lock,
            blocking=blocking,
            clock=time.monotonic if blocking else trio.current_time,
            **_batch_growth(self.config),
        )
        # topic -> (number of partitions, partitions with a leader); read without the lock.
        self.topics: dict[str, tuple[int, list[int]]] = {}
        self.sender = Sender(self)
        self._memory_event: trio.Event | None = None
        self._blocking = blocking
        # The keyless fast path needs no serializer and a value that surely fits.
        self.fast_path = self.config.key_serializer is None and self.config.value_serializer is None
        self.max_fast_value = self.config.max_request_size - RECORD_OVERHEAD
        self._cluster: Cluster | None = None
        self._tasks = BackgroundTasks()
        self._nursery: trio.Nursery | None = None
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bootstrap (raises NoBrokersAvailableError) and start the sender task."""
        nursery = self._nursery = await self._tasks.open()
        try:
            self._cluster = Cluster(self.config.connection, nursery)
            self._cluster.listeners.append(self._metadata_updated)
            await self._cluster.refresh()
        except BaseException:
            await self._tasks.close()
            raise
        nursery.start_soon(self.sender.run, self._cluster, nursery)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise IllegalStateError("producer not started: use 'async with' or start()")
        return self._cluster

    def _metadata_updated(self) -> None:
        cluster = self.cluster
        for topic in cluster.wanted:
            parts = cluster.partitions.get(topic)
            if parts is not None:
                self.topics[topic] = (len(parts), cluster.available_partitions(topic))
            else:
                self.topics.pop(topic, None)
        self.sender.wake()

    async def topic_metadata(self, topic: str) -> tuple[int, list[int]]:
        await self.cluster.partitions_for(topic)
        self._metadata_updated()
        return self.topics[topic]

    # --- sending ------------------------------------------------------------------------

    def prepare(
        self, topic: str, value: Any, key: Any, headers: Any, timestamp_ms: int | None
    ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int]:
        if self._closed or self.accumulator.closing:
            raise IllegalStateError("send() after close()")
        cfg = self.config
        if cfg.key_serializer is not None and key is not None:
            key = cfg.key_serializer(key)
        if cfg.value_serializer is not None and value is not None:
            value = cfg.value_serializer(value)
        if not (value is None or type(value) is bytes) or not (key is None or type(key) is bytes):
            raise TypeError("key and value must be bytes or None (or set a serializer)")
        size = (len(value) if value else 0) + (len(key) if key else 0) + RECORD_OVERHEAD
        if headers:
            headers = [(str(k), bytes(v)) for k, v in headers]
            size += sum(len(k) + len(v) for k, v in headers)
        if size > cfg.max_request_size:
            raise MessageSizeTooLargeError(
                f"record of ~{size} bytes exceeds max_request_size {cfg.max_request_size}"
            )
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        return key, value, headers or [], ts

    def choose_partition(
        self, topic: str, meta: tuple[int, list[int]], key: bytes | None, partition: int | None
    ) -> tuple[TopicPartition, bool]:
        """The record's partition, and whether the sticky partitioner chose it."""
        num, available = meta
        acc = self.accumulator
        if partition is not None:
            if not 0 <= partition < num:
                raise UnknownTopicOrPartitionError(f"{topic} has no partition {partition}")
            return acc.topic_partition(topic, partition), False
        if key is not None:
            return acc.topic_partition(topic, keyed_partition(key, num)), False
        return acc.topic_partition(topic, acc.sticky.current(topic, num, available)), True

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        """Queue a record; ``await`` the returned future for its RecordMetadata."""
        acc = self.accumulator
        if (
            self.fast_path
            and key is None
            and partition is None
            and not headers
            and type(value) is bytes
            and len(value) <= self.max_fast_value
        ):
            ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
            fut = acc.try_append_sticky(topic, value, ts)
            if fut is not None:
                if acc.wake_pending:
                    acc.wake_pending = False
                    self.sender.wake()
                return fut
        kb, vb, hdrs, ts = self.prepare(topic, value, key, headers, timestamp_ms)
        meta = self.topics.get(topic)
        if meta is None:
            meta = await self.topic_metadata(topic)
        tp, sticky = self.choose_partition(topic, meta, kb, partition)
        if acc.memory_full(tp):
            with trio.fail_after(self.config.max_block_ms / 1000):
                while acc.memory_full(tp):
                    event = self._memory_event
                    if event is None or event.is_set():
                        event = self._memory_event = trio.Event()
                    await event.wait()
            tp, sticky = self.choose_partition(topic, meta, kb, partition)
        fut, wake = acc.append(tp, vb, kb, hdrs, ts, sticky)
        if wake:
            self.sender.wake()
        return fut

    def prepare_many(
        self, values: Sequence[Any], key: Any, timestamp_ms: int | None
    ) -> tuple[list[bytes | None], bytes | None, int, int]:
        """Serialize and check the values of ``send_many``; returns them, the key, the
        timestamp and the largest value size."""
        if self._closed or self.accumulator.closing:
            raise IllegalStateError("send_many() after close()")
        cfg = self.config
        if cfg.key_serializer is not None and key is not None:
            key = cfg.key_serializer(key)
        if cfg.value_serializer is not None:
            ser = cfg.value_serializer
            values = [None if v is None else ser(v) for v in values]
        elif not isinstance(values, list):
            values = list(values)
        if key is not None and type(key) is not bytes:
            raise TypeError("key must be bytes or None (or set a key_serializer)")
        kinds = set(map(type, values))
        if not kinds <= _VALUE_TYPES:
            raise TypeError("values must be bytes or None (or set a value_serializer)")
        if type(None) in kinds:
            largest = max((len(v) for v in values if v is not None), default=0)
        else:
            largest = max(map(len, values), default=0)
        if largest + (len(key) if key else 0) + RECORD_OVERHEAD > cfg.max_request_size:
            raise MessageSizeTooLargeError(
                f"a record of ~{largest} bytes exceeds max_request_size {cfg.max_request_size}"
            )
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        return values, key, ts, largest

    async def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        *,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFutures:
        """Queue one record per value, all with the same key (or none), partition choice
        and timestamp; one future per record. Cheaper per record than ``send``."""
        vals, kb, ts, largest = self.prepare_many(values, key, timestamp_ms)
        meta = self.topics.get(topic)
        if meta is None:
            meta = await self.topic_metadata(topic)
        acc = self.accumulator
        futures = RecordFutures()
        done = 0
        while done < len(vals):
            tp, sticky = self.choose_partition(topic, meta, kb, partition)
            if acc.memory_full(tp):
                with trio.fail_after(self.config.max_block_ms / 1000):
                    while acc.memory_full(tp):
                        event = self._memory_event
                        if event is None or event.is_set():
                            event = self._memory_event = trio.Event()
                        await event.wait()
                continue
            result, first, taken, wake = acc.append_many(tp, vals, done, kb, ts, largest, sticky)
            futures.add(result, first, taken, ts)
            done += taken
            if wake:
                self.sender.wake()
        return futures

    async def send_and_wait(self, topic: str, value: Any = None, **kwargs: Any) -> Any:
        fut = await self.send(topic, value, **kwargs)
        return await fut

    def memory_freed(self) -> None:
        """Called by the sender whenever a batch completes."""
        if self._blocking:
            with self.memory_cond:
                self.memory_cond.notify_all()
        elif self._memory_event is not None:
            self._memory_event.set()

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered now and wait for it (``timeout`` in seconds)."""
        acc = self.accumulator
        with self.lock:
            results = list(acc.incomplete)
            acc.flushing += 1
        self.sender.wake()
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                if self._blocking:
                    # A blocking producer's results carry a threading.Event only; the
                    # thread ends when they complete (close() completes the stranded).
                    await trio.to_thread.run_sync(_wait_all, results, abandon_on_cancel=True)
                else:
                    for r in results:
                        await r.wait()
                return
            raise TimeoutExpiredError(f"flush did not complete within {timeout} s")
        finally:
            with self.lock:
                acc.flushing -= 1

    async def partitions_for(self, topic: str) -> set[int]:
        num, _ = await self.topic_metadata(topic)
        return set(range(num))

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` s), then stop; unsent records fail with IllegalStateError."""
        if self._closed:
            return
        self._closed = True
        self.fast_path = False
        if self._nursery is None:
            return
        deadline = trio.current_time() + (math.inf if timeout is None else timeout)
        try:
            try:
                await self.flush(timeout)
            except TimeoutExpiredError:
                log.warning("close_timed_out", timeout=timeout)
            with self.lock:
                self.accumulator.closing = True
                aborted = self.accumulator.abort_all()
            for b in aborted:
                self.sender._fail(
                    b, IllegalStateError("producer closed before the record was sent")
                )
            self.sender.wake()
            with trio.move_on_at(deadline):
                await self.sender.stopped.wait()
        finally:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            try:
                await self.cluster.aclose()
            finally:
                await self._tasks.close()
                # Requests still in flight were cancelled: their records never resolve.
                with self.lock:
                    stranded = list(self.accumulator.incomplete)
                    self.accumulator.incomplete.clear()
                for result in stranded:
                    result.complete(-1, -1, IllegalStateError("producer closed while in flight"))
