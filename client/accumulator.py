"""The producer's record accumulator: per-partition open batches and the futures on them.

The hot path (``append``) runs in the application's thread under the producer's lock and
costs one msgpack pack plus a small future object: every record of a batch shares one
``ProduceResult`` (Kafka's ProduceRequestResult), and the record's future only remembers
its offset delta. The sender drains sealed or lingered batches per partition; a partition
with a request in flight is *muted*, so retried batches go out again before any later
one and order per partition is preserved. No I/O and no trio calls happen here.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, overload

import trio

from client.errors import TimeoutExpiredError
from client.partitioner import StickyPartitioner
from client.types import RecordMetadata, TopicPartition
from proto.batch import BatchBuilder

__all__ = [
    "FutureRecordMetadata",
    "ProduceResult",
    "ProducerBatch",
    "RecordAccumulator",
    "RecordFutures",
]

Callback = tuple[bool, Callable[..., Any], tuple[Any, ...], "FutureRecordMetadata"]


class ProduceResult:
    """The outcome of one batch, shared by the futures of all its records.

    Completed exactly once, in the sender's (trio) thread. A blocking producer waits on a
    ``threading.Event``, an async one on a ``trio.Event``; callbacks run in the sender.
    """

    __slots__ = (
        "_async_event",
        "_callbacks",
        "_lock",
        "_sync_event",
        "base_offset",
        "completed_at",
        "done",
        "error",
        "log_append_time",
        "tp",
    )

    def __init__(self, tp: TopicPartition, lock: threading.Lock, blocking: bool) -> None:
        self.tp = tp
        self.base_offset = -1
        self.log_append_time = -1
        self.error: BaseException | None = None
        self.done = False
        self.completed_at: float | None = None
        self._lock = lock
        self._callbacks: list[Callback] | None = []
        self._sync_event = threading.Event() if blocking else None
        self._async_event = None if blocking else trio.Event()

    def complete(
        self, base_offset: int, log_append_time: int = -1, error: BaseException | None = None
    ) -> None:
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.error = error
        self.completed_at = time.perf_counter()
        with self._lock:
            self.done = True
            callbacks, self._callbacks = self._callbacks, None
        if self._sync_event is not None:
            self._sync_event.set()
        if self._async_event is not None:
            self._async_event.set()
        for ok, fn, args, fut in callbacks or ():
            fut._run_callback(ok, fn, args)

    def add_callback(self, entry: Callback) -> bool:
        """Register; False if already done (the caller runs it now)."""
        with self._lock:
            if self._callbacks is None:
                return False
            self._callbacks.append(entry)
            return True

    def wait_blocking(self, timeout: float | None) -> bool:
        if self._sync_event is None:
            raise TypeError("this future belongs to an async producer: await it")
        return self._sync_event.wait(timeout)

    async def wait(self) -> None:
        if self._async_event is None:
            raise TypeError("this future belongs to a blocking producer: use .get()")
        await self._async_event.wait()


class FutureRecordMetadata(tuple[ProduceResult, int, int]):
    """The future ``send()`` returns: ``.get(timeout)`` (blocking) or ``await`` (async).

    A 3-tuple (batch result, offset delta, timestamp) underneath, so that making one per
    record costs a tuple allocation rather than a Python ``__init__`` call.
    """

    __slots__ = ()

    @property
    def is_done(self) -> bool:
        return self[0].done

    def succeeded(self) -> bool:
        return self[0].done and self[0].error is None

    def failed(self) -> bool:
        return self[0].done and self[0].error is not None

    @property
    def completed_at(self) -> float | None:
        """``time.perf_counter()`` when the batch was answered (latency measurement)."""
        return self[0].completed_at

    @property
    def exception(self) -> BaseException | None:
        return self[0].error if self[0].done else None

    @property
    def value(self) -> RecordMetadata | None:
        return self._value() if self.succeeded() else None

    def _value(self) -> RecordMetadata:
        r, delta, timestamp = self
        if r.error is not None:
            raise r.error
        offset = r.base_offset + delta if r.base_offset >= 0 else -1
        ts = r.log_append_time if r.log_append_time >= 0 else timestamp
        return RecordMetadata(r.tp.topic, r.tp.partition, offset, ts)

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Block until acknowledged (``timeout`` in seconds, like kafka-python)."""
        r = self[0]
        if not r.done and not r.wait_blocking(timeout):
            raise TimeoutExpiredError(f"record not acknowledged within {timeout} s")
        return self._value()

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        if not self[0].done:
            yield from self[0].wait().__await__()
        return self._value()

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> FutureRecordMetadata:
        """``fn(*args, record_metadata)`` on success; runs in the sender thread."""
        if not self[0].add_callback((True, fn, args, self)):
            self._run_callback(True, fn, args)
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> FutureRecordMetadata:
        """``fn(*args, exception)`` on failure; runs in the sender thread."""
        if not self[0].add_callback((False, fn, args, self)):
            self._run_callback(False, fn, args)
        return self

    def _run_callback(self, ok: bool, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        err = self[0].error
        if ok and err is None:
            fn(*args, self._value())
        elif not ok and err is not None:
            fn(*args, err)

    def __repr__(self) -> str:
        r = self[0]
        state = "pending" if not r.done else ("failed" if r.error else "done")
        return f"<FutureRecordMetadata {r.tp.topic}-{r.tp.partition} +{self[1]} {state}>"


_new_future = tuple.__new__

# msgpack framing of one record besides its key and value: array header, offset and
# timestamp deltas, nil markers, the bin header and the empty headers array.
RECORD_SIZE_ESTIMATE = 24


class RecordFutures(Sequence[FutureRecordMetadata]):
    """The futures of one ``send_many`` call, in order, made on demand.

    Holds one entry per batch the records went into, so a million records cost a few
    thousand objects until someone indexes or iterates.
    """

    __slots__ = ("_count", "_firsts", "_segments", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._segments: list[tuple[ProduceResult, int]] = []
        self._firsts: list[int] = []
        self._count = 0

    def add(self, result: ProduceResult, first_delta: int, count: int, timestamp: int) -> None:
        self._starts.append(self._count)
        self._segments.append((result, timestamp))
        self._firsts.append(first_delta)
        self._count += count

    def __len__(self) -> int:
        return self._count

    def _at(self, i: int) -> FutureRecordMetadata:
        seg = bisect.bisect_right(self._starts, i) - 1
        result, timestamp = self._segments[seg]
        delta = self._firsts[seg] + i - self._starts[seg]
        return _new_future(FutureRecordMetadata, (result, delta, timestamp))

    @overload
    def __getitem__(self, index: int) -> FutureRecordMetadata: ...

    @overload
    def __getitem__(self, index: slice) -> list[FutureRecordMetadata]: ...

    def __getitem__(self, index: int | slice) -> FutureRecordMetadata | list[FutureRecordMetadata]:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("RecordFutures index out of range")
        return self._at(index)

    def __iter__(self) -> Iterator[FutureRecordMetadata]:
        for (result, timestamp), first, start, end in zip(
            self._segments,
            self._firsts,
            self._starts,
            [*self._starts[1:], self._count],
            strict=True,
        ):
            for delta in range(first, first + end - start):
                yield _new_future(FutureRecordMetadata, (result, delta, timestamp))

    def get(self, timeout: float | None = None) -> list[RecordMetadata]:
        """Wait for every record (blocking producers) and return their metadata."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for result, _ts in self._segments:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not result.done and not result.wait_blocking(left):
                raise TimeoutExpiredError(f"records not acknowledged within {timeout} s")
        return [f.get() for f in self]

    def __repr__(self) -> str:
        return f"<RecordFutures {self._count} records in {len(self._segments)} batches>"


class ProducerBatch:
    __slots__ = ("attempts", "builder", "created", "payload", "result", "tp")

    def __init__(
        self, tp: TopicPartition, builder: BatchBuilder, result: ProduceResult, now: float
    ):
        self.tp = tp
        self.builder = builder
        self.result = result
        self.created = now
        self.attempts = 0
        self.payload: bytes | None = None

    @property
    def record_count(self) -> int:
        return self.builder.count


class RecordAccumulator:
    """Open and sealed batches per partition. Every method runs under ``lock``."""

    def __init__(
        self,
        *,
        batch_size: int,
        linger_ms: float,
        codec: int,
        buffer_memory: int,
        lock: threading.Lock,
        blocking: bool,
        clock: Callable[[], float],
    ) -> None:
        self.batch_size = batch_size
        self.linger = linger_ms / 1000
        self.codec = codec
        self.buffer_memory = buffer_memory
        self.lock = lock
        self.blocking = blocking
        self.clock = clock
        self.sticky = StickyPartitioner()
        self.open: dict[TopicPartition, ProducerBatch] = {}
        self.queued: dict[TopicPartition, deque[ProducerBatch]] = {}
        self.muted: set[TopicPartition] = set()
        self.retry_at: dict[TopicPartition, float] = {}
        self.incomplete: set[ProduceResult] = set()
        self.buffered_bytes = 0
        self.flushing = 0
        self.closing = False
        self.wake_pending = False
        # topic -> the open batch of its sticky partition: the keyless fast path.
        self.sticky_open: dict[str, ProducerBatch] = {}
        self._tps: dict[str, list[TopicPartition]] = {}

    # --- application side -------------------------------------------------------------

    def memory_full(self, tp: TopicPartition) -> bool:
        """A new batch for ``tp`` would exceed buffer_memory (an open one never does)."""
        return tp not in self.open and self.buffered_bytes + self.batch_size > self.buffer_memory

    def topic_partition(self, topic: str, partition: int) -> TopicPartition:
        """An interned TopicPartition (building a NamedTuple per record is not free)."""
        tps = self._tps.get(topic)
        if tps is None or partition >= len(tps):
            tps = self._tps[topic] = [TopicPartition(topic, p) for p in range(partition + 1)]
        return tps[partition]

    def try_append_sticky(
        self, topic: str, value: bytes | None, timestamp: int
    ) -> FutureRecordMetadata | None:
        """Keyless, headerless fast path: append to the topic's sticky open batch.

        None when there is no such batch (the caller takes the general path). Sets
        ``wake_pending`` when the batch filled up and was sealed.
        """
        batch = self.sticky_open.get(topic)
        if batch is None:
            return None
        builder = batch.builder
        fut: FutureRecordMetadata = _new_future(
            FutureRecordMetadata,
            (batch.result, builder.append(value, None, (), timestamp), timestamp),
        )
        if builder.size >= self.batch_size:
            self._seal(batch)
            self.wake_pending = True
        return fut

    def append(
        self,
        tp: TopicPartition,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        timestamp: int,
        sticky: bool = False,
    ) -> tuple[FutureRecordMetadata, bool]:
        """Add a record; returns its future and whether the sender should be woken.

        ``sticky``: the partition was chosen by the sticky partitioner, so its open batch
        becomes the topic's fast-path batch.
        """
        batch, wake = self._open_batch(tp, sticky)
        builder = batch.builder
        fut: FutureRecordMetadata = _new_future(
            FutureRecordMetadata,
            (batch.result, builder.append(value, key, headers, timestamp), timestamp),
        )
        if builder.size >= self.batch_size:
            self._seal(batch)
            wake = True
        return fut, wake

    def append_many(
        self,
        tp: TopicPartition,
        values: Sequence[bytes | None],
        start: int,
        key: bytes | None,
        timestamp: int,
        max_value_size: int,
        sticky: bool = False,
    ) -> tuple[ProduceResult, int, int, bool]:
        """Add as many of ``values[start:]`` as fit ``tp``'s open batch (at least one).

        Returns the batch's result, the offset delta of the first record added, how many
        were added, and whether to wake the sender. ``max_value_size`` bounds the record
        size estimate, so a batch stays near batch_size even when values differ in size.
        """
        batch, wake = self._open_batch(tp, sticky)
        builder = batch.builder
        per_record = max_value_size + (len(key) if key else 0) + RECORD_SIZE_ESTIMATE
        left = len(values) - start
        n = max(1, min(left, (self.batch_size - builder.size) // per_record))
        first = builder.append_values(values[start : start + n], timestamp, key)
        if builder.size >= self.batch_size or n < left:
            self._seal(batch)
            wake = True
        return batch.result, first, n, wake

    def _open_batch(self, tp: TopicPartition, sticky: bool) -> tuple[ProducerBatch, bool]:
        """``tp``'s open batch, created if needed (then True: a linger period starts)."""
        batch = self.open.get(tp)
        created = False
        if batch is None:
            result = ProduceResult(tp, self.lock, self.blocking)
            batch = self.open[tp] = ProducerBatch(
                tp, BatchBuilder(self.codec), result, self.clock()
            )
            self.incomplete.add(result)
            self.buffered_bytes += self.batch_size
            created = True
        if sticky:
            self.sticky_open[tp.topic] = batch
        return batch, created

    def _seal(self, batch: ProducerBatch) -> None:
        tp = batch.tp
        del self.open[tp]
        if self.sticky_open.get(tp.topic) is batch:
            del self.sticky_open[tp.topic]
        q = self.queued.get(tp)
        if q is None:
            q = self.queued[tp] = deque()
        q.append(batch)
        self.sticky.batch_sealed(tp.topic, tp.partition)

    # --- sender side -------------------------------------------------------------------

    def ready(
        self, now: float, leader_for: Callable[[TopicPartition], int | None]
    ) -> tuple[dict[int, list[TopicPartition]], float, list[TopicPartition]]:
        """Partitions with something to send, grouped by leader; the delay until the next
        lingering batch or retry is due; and the partitions whose leader is unknown."""
        by_node: dict[int, list[TopicPartition]] = {}
        no_leader: list[TopicPartition] = []
        delay = float("inf")
        send_all = self.flushing > 0 or self.closing
        for tp in {*self.open, *(tp for tp, q in self.queued.items() if q)}:
            if tp in self.muted:
                continue
            retry = self.retry_at.get(tp, 0.0)
            if retry > now:
                delay = min(delay, retry - now)
                continue
            if not self.queued.get(tp):
                due = self.open[tp].created + self.linger
                if not send_all and due > now:
                    delay = min(delay, due - now)
                    continue
            leader = leader_for(tp)
            if leader is None:
                no_leader.append(tp)
            else:
                by_node.setdefault(leader, []).append(tp)
        return by_node, delay, no_leader

    def drain(self, tps: Sequence[TopicPartition], max_request_size: int) -> list[ProducerBatch]:
        """Take whole batches for one request; each drained partition becomes muted."""
        out: list[ProducerBatch] = []
        size = 0
        for tp in tps:
            open_batch = self.open.get(tp)
            if open_batch is not None:
                self._seal(open_batch)
            q = self.queued.get(tp)
            while q:
                estimate = q[0].builder.size
                if out and size + estimate > max_request_size:
                    break
                out.append(q.popleft())
                size += estimate
                self.muted.add(tp)
            if out and size >= max_request_size:
                break
        return out

    def requeue(self, batches: Sequence[ProducerBatch], retry_at: float) -> None:
        """Put batches of one partition back in front of its queue, in their order."""
        tp = batches[0].tp
        q = self.queued.setdefault(tp, deque())
        q.extendleft(reversed(batches))
        self.retry_at[tp] = retry_at
        self.muted.discard(tp)

    def finished(self, batch: ProducerBatch) -> None:
        """A batch completed (either way): free its memory."""
        self.incomplete.discard(batch.result)
        self.buffered_bytes -= self.batch_size
        self.muted.discard(batch.tp)
        self.retry_at.pop(batch.tp, None)

    def expire(self, tp: TopicPartition, older_than: float) -> list[ProducerBatch]:
        """Remove the batches of ``tp`` (no leader) created before ``older_than``."""
        out: list[ProducerBatch] = []
        q = self.queued.get(tp)
        while q and q[0].created < older_than:
            out.append(q.popleft())
        b = self.open.get(tp)
        if not q and b is not None and b.created < older_than:
            self._seal(b)
            out.append(self.queued[tp].popleft())
        return out

    def abort_all(self) -> list[ProducerBatch]:
        """Remove every batch not in flight (close without waiting)."""
        out = [b for q in self.queued.values() for b in q] + list(self.open.values())
        self.queued.clear()
        self.open.clear()
        self.sticky_open.clear()
        return out

    def is_empty(self) -> bool:
        return not self.open and not any(self.queued.values())
