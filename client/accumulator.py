"""The producer's record accumulator: per-partition open batches and the futures on them.

The hot path (``append``) runs in the application's thread under the producer's lock and
costs one msgpack pack plus a small future object: every record of a batch shares one
``ProduceResult`` (Kafka's ProduceRequestResult), and the record's future only remembers
its offset delta (``client.futures``, re-exported here). The sender drains sealed or
lingered batches per partition; a partition with a request in flight is *muted*, so
retried batches go out again before any later one and order per partition is preserved.
No I/O and no trio calls happen here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from client.futures import FutureRecordMetadata, ProduceResult, RecordFutures
from client.partitioner import StickyPartitioner
from client.types import TopicPartition
from proto.batch import BatchBuilder

__all__ = [
    "FutureRecordMetadata",
    "ProduceResult",
    "ProducerBatch",
    "RecordAccumulator",
    "RecordFutures",
]

_new_future = tuple.__new__

# msgpack framing of one record besides its key and value: array header, offset and
# timestamp deltas, nil markers, the bin header and the empty headers array.
RECORD_SIZE_ESTIMATE = 24


class ProducerBatch:
    __slots__ = ("attempts", "builder", "created", "payload", "result", "seal_at", "tp")

    def __init__(
        self,
        tp: TopicPartition,
        builder: BatchBuilder,
        result: ProduceResult,
        now: float,
        seal_at: int,
    ):
        self.tp = tp
        self.builder = builder
        self.result = result
        self.created = now
        self.attempts = 0
        self.payload: bytes | None = None
        # The size at which the batch is full; also the buffer memory it holds.
        self.seal_at = seal_at

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
        max_grown_batch_size: int = 0,
        backlog_batches: int = 0,
    ) -> None:
        self.batch_size = batch_size
        # Idempotent producers send at most ``backlog_batches`` batches per partition per
        # request: a full batch of a partition that already has that many queued grows
        # (doubling, up to ``max_grown_batch_size``) instead of lengthening the queue.
        self.max_grown_batch_size = max_grown_batch_size
        self.backlog_batches = backlog_batches
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
        if builder.size >= batch.seal_at and self._full(batch):
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
        if builder.size >= batch.seal_at and self._full(batch):
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
        n = max(1, min(left, (batch.seal_at - builder.size) // per_record))
        first = builder.append_values(values[start : start + n], timestamp, key)
        if (builder.size >= batch.seal_at or n < left) and self._full(batch):
            wake = True
        return batch.result, first, n, wake

    def _open_batch(self, tp: TopicPartition, sticky: bool) -> tuple[ProducerBatch, bool]:
        """``tp``'s open batch, created if needed (then True: a linger period starts)."""
        batch = self.open.get(tp)
        created = False
        if batch is None:
            result = ProduceResult(tp, self.lock, self.blocking)
            batch = self.open[tp] = ProducerBatch(
                tp, BatchBuilder(self.codec), result, self.clock(), self.batch_size
            )
            self.incomplete.add(result)
            self.buffered_bytes += self.batch_size
            created = True
        if sticky:
            self.sticky_open[tp.topic] = batch
        return batch, created

    def _full(self, batch: ProducerBatch) -> bool:
        """``batch`` reached its size: seal it (True: wake the sender), or let it grow
        when its partition already has a whole request queued (see ``__init__``). A grown
        batch stops being the sticky one, so keyless records move on as after a seal."""
        tp = batch.tp
        extra = batch.seal_at
        q = self.queued.get(tp)
        if (
            self.max_grown_batch_size
            and q is not None
            and len(q) >= self.backlog_batches
            and batch.seal_at + extra <= self.max_grown_batch_size
            and self.buffered_bytes + extra <= self.buffer_memory
        ):
            batch.seal_at += extra
            self.buffered_bytes += extra
            if self.sticky_open.get(tp.topic) is batch:
                del self.sticky_open[tp.topic]
                self.sticky.batch_sealed(tp.topic, tp.partition)
            return False
        self._seal(batch)
        return True

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

    def drain(
        self, tps: Sequence[TopicPartition], max_request_size: int, max_batches: int = 0
    ) -> list[ProducerBatch]:
        """Take whole batches for one request; each drained partition becomes muted.

        ``max_batches`` (idempotent producers; 0 = no limit): at most that many batches per
        partition, and a batch sent before goes alone, so that a retried request is either
        all duplicates or all new at the broker."""
        out: list[ProducerBatch] = []
        size = 0
        for tp in tps:
            open_batch = self.open.get(tp)
            if open_batch is not None:
                self._seal(open_batch)
            q = self.queued.get(tp)
            taken = 0
            while q:
                head = q[0]
                estimate = head.builder.size
                if out and size + estimate > max_request_size:
                    break
                if max_batches and (taken == max_batches or (taken and head.attempts)):
                    break
                out.append(q.popleft())
                size += estimate
                taken += 1
                self.muted.add(tp)
                if max_batches and head.attempts:
                    break
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
        self.buffered_bytes -= batch.seal_at
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
