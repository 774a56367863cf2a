"""Blocking clients: each runs its async twin in a trio loop on one background thread.

Every call goes to that loop with ``trio.from_thread.run`` except the producer's hot
path: ``Producer.send`` appends to the accumulator in the caller's thread under the
producer's ``threading.Lock`` and wakes the sender (``TrioToken.run_sync_soon``) only
when a batch is created or fills up, never per record.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, overload

import trio

from client.accumulator import FutureRecordMetadata, RecordFutures
from client.admin import AsyncAdmin
from client.consumer import AsyncConsumer
from client.errors import BrokerResponseError, IllegalStateError, TimeoutExpiredError
from client.logs import get_logger
from client.producer import AsyncProducer
from client.types import (
    ClusterDescription,
    ConsumerGroupDescription,
    ConsumerGroupListing,
    ConsumerRecord,
    NewTopic,
    OffsetAndMetadata,
    OffsetAndTimestamp,
    TopicDescription,
    TopicPartition,
)
from proto.messages import PREFERRED_ELECTION

__all__ = ["Admin", "Consumer", "Producer"]

log = get_logger("client.sync")

T = TypeVar("T")


class _Startable(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _LoopThread:
    """A trio loop on a daemon thread that owns one started async client.

    The client is started and closed by the loop's main task (its nursery must be
    entered and exited by one task); other calls run via ``trio.from_thread.run``.
    """

    def __init__(self, client: _Startable, name: str) -> None:
        self.client = client
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._closer: Callable[[], Awaitable[object]] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        if self._closed or self._token is None:
            raise IllegalStateError("client is closed")
        return self._token

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            if self._ready.is_set():
                log.error("client_loop_failed", error=repr(exc))
        finally:
            self._closed = True
            self._ready.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        await self.client.start()
        self._token = trio.lowlevel.current_trio_token()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            # Also reached when a background task crashed and cancelled us: the
            # client's nursery must still be exited by this task (so no shield here).
            await (self._closer or self.client.close)()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return trio.from_thread.run(fn, *args, trio_token=self.token)
        except trio.RunFinishedError as exc:
            raise IllegalStateError("client is closed") from exc

    def close(self, closer: Callable[[], Awaitable[object]]) -> None:
        """Run ``closer`` in the loop's main task, end the loop, join the thread."""
        if self._closed:
            return
        self._closer = closer
        stop, token = self._stop, self._token
        if stop is not None and token is not None:
            # RunFinishedError: the loop already ended (its error was logged).
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
        self._thread.join()
        self._closed = True
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class Producer:
    """Blocking producer; same settings as ``client.aio.AsyncProducer``."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **configs: Any):
        self._ap = AsyncProducer(bootstrap_servers, _blocking=True, **configs)
        self._loop = _LoopThread(self._ap, "minibroker-producer")
        self._max_block = self._ap.config.max_block_ms / 1000

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def config(self) -> Any:
        return self._ap.config

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        """Queue a record; ``.get(timeout)`` on the result waits for its RecordMetadata.

        Runs in the caller's thread: the keyless fast path appends to the topic's sticky
        batch under the producer lock; the sender thread is woken only when a batch is
        created or fills up.
        """
        ap = self._ap
        if (
            ap.fast_path
            and key is None
            and partition is None
            and not headers
            and type(value) is bytes
            and len(value) <= ap.max_fast_value
        ):
            ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
            acc = ap.accumulator
            with ap.lock:
                fut = acc.try_append_sticky(topic, value, ts)
                if fut is not None:
                    if not acc.wake_pending:
                        return fut
                    acc.wake_pending = False
                    wake = not ap.sender.wake_scheduled
                    ap.sender.wake_scheduled = True
            if fut is not None:
                if wake:
                    self._loop.token.run_sync_soon(ap.sender.wake)
                return fut
        return self._send(topic, value, key, headers, partition, timestamp_ms)

    def _send(
        self,
        topic: str,
        value: Any,
        key: Any,
        headers: Sequence[tuple[str, bytes]] | None,
        partition: int | None,
        timestamp_ms: int | None,
    ) -> FutureRecordMetadata:
        ap = self._ap
        kb, vb, hdrs, ts = ap.prepare(topic, value, key, headers, timestamp_ms)
        meta = ap.topics.get(topic)
        if meta is None:
            meta = self._loop.run(ap.topic_metadata, topic)
        acc = ap.accumulator
        sender = ap.sender
        with ap.lock:
            tp, sticky = ap.choose_partition(topic, meta, kb, partition)
            if acc.memory_full(tp):
                self._wait_for_memory(tp)
                tp, sticky = ap.choose_partition(topic, meta, kb, partition)
            fut, wake = acc.append(tp, vb, kb, hdrs, ts, sticky)
            wake = wake and self._claim_wake()
        if wake:
            self._loop.token.run_sync_soon(sender.wake)
        return fut

    def _wait_for_memory(self, tp: TopicPartition) -> None:
        """Block (holding ``lock`` via its condition) until a batch for ``tp`` fits
        buffer_memory, at most max_block_ms."""
        ap = self._ap
        deadline = time.monotonic() + self._max_block
        while ap.accumulator.memory_full(tp):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutExpiredError(
                    f"buffer_memory stayed full for {ap.config.max_block_ms} ms"
                )
            ap.memory_cond.wait(remaining)

    def _claim_wake(self) -> bool:
        """Under ``lock``: True if this caller must schedule the sender's wake-up."""
        sender = self._ap.sender
        if sender.wake_scheduled:
            return False
        sender.wake_scheduled = True
        return True

    def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        *,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFutures:
        """Queue one record per value, all with the same key (or none), partition choice
        and timestamp; returns one future per record, in order.

        The bulk path: records are packed into batches a batch at a time, so the cost per
        record is a fraction of ``send()``'s. Keyless values follow the sticky partitioner
        (one partition per batch), a key sends them all to that key's partition.
        """
        ap = self._ap
        vals, kb, ts, largest = ap.prepare_many(values, key, timestamp_ms)
        meta = ap.topics.get(topic)
        if meta is None:
            meta = self._loop.run(ap.topic_metadata, topic)
        acc = ap.accumulator
        sender = ap.sender
        futures = RecordFutures()
        done = 0
        while done < len(vals):
            with ap.lock:
                tp, sticky = ap.choose_partition(topic, meta, kb, partition)
                if acc.memory_full(tp):
                    self._wait_for_memory(tp)
                    continue
                result, first, taken, wake = acc.append_many(
                    tp, vals, done, kb, ts, largest, sticky
                )
                futures.add(result, first, taken, ts)
                wake = wake and self._claim_wake()
            done += taken
            if wake:
                self._loop.token.run_sync_soon(sender.wake)
        return futures

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait for it (``timeout`` in seconds)."""
        ap = self._ap
        acc = ap.accumulator
        with ap.lock:
            results = list(acc.incomplete)
            acc.flushing += 1
        try:
            self._loop.token.run_sync_soon(ap.sender.wake)
            deadline = math.inf if timeout is None else time.monotonic() + timeout
            for r in results:
                remaining = None if timeout is None else max(0.0, deadline - time.monotonic())
                if not r.done and not r.wait_blocking(remaining):
                    raise TimeoutExpiredError(f"flush did not complete within {timeout} s")
        finally:
            with ap.lock:
                acc.flushing -= 1

    def partitions_for(self, topic: str) -> set[int]:
        return self._loop.run(self._ap.partitions_for, topic)

    def close(self, timeout: float | None = None) -> None:
        self._loop.close(lambda: self._ap.close(timeout))


class Consumer:
    """Blocking consumer; same settings as ``client.aio.AsyncConsumer``."""

    def __init__(self, *topics: str, **configs: Any) -> None:
        self._ac = AsyncConsumer(*topics, _blocking=True, **configs)
        self._loop = _LoopThread(self._ac, "minibroker-consumer")
        self._iter_buffer: deque[ConsumerRecord] = deque()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def config(self) -> Any:
        return self._ac.config

    def _sync(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self._loop.run(call)

    def subscribe(
        self,
        topics: Iterable[str] | str | None = None,
        pattern: str | re.Pattern[str] | None = None,
        listener: object | None = None,
    ) -> None:
        """Join the group for ``topics`` or a ``pattern``. The listener's callbacks run in
        a worker thread during poll(); they may call this consumer (commit() ...)."""
        self._sync(lambda: self._ac.subscribe(topics, pattern, listener))

    def unsubscribe(self) -> None:
        self._iter_buffer.clear()
        self._loop.run(self._ac.unsubscribe)

    def subscription(self) -> set[str]:
        return self._sync(self._ac.subscription)

    def commit(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None
    ) -> None:
        """Commit (default: every consumed position) and wait for the acknowledgement."""
        self._loop.run(self._ac.commit, offsets)

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None,
        callback: Callable[[dict[TopicPartition, OffsetAndMetadata], Exception | None], Any]
        | None = None,
    ) -> None:
        """Queue a commit; ``callback`` runs in a worker thread during a later poll()."""
        self._sync(lambda: self._ac.commit_async(offsets, callback))

    @overload
    def committed(self, partitions: TopicPartition) -> OffsetAndMetadata | None: ...

    @overload
    def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]: ...

    def committed(
        self, partitions: TopicPartition | Iterable[TopicPartition]
    ) -> OffsetAndMetadata | dict[TopicPartition, OffsetAndMetadata | None] | None:
        if isinstance(partitions, TopicPartition):
            return self._loop.run(self._ac.committed, partitions)
        return self._loop.run(self._ac.committed, list(partitions))

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        tps = list(partitions)
        self._sync(lambda: self._ac.assign(tps))

    def assignment(self) -> set[TopicPartition]:
        return self._sync(self._ac.assignment)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._iter_buffer = deque(
            r for r in self._iter_buffer if (r.topic, r.partition) != partition
        )
        self._sync(lambda: self._ac.seek(partition, offset))

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._iter_buffer.clear()
        self._loop.run(self._ac.seek_to_beginning, *partitions)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._iter_buffer.clear()
        self._loop.run(self._ac.seek_to_end, *partitions)

    def position(self, partition: TopicPartition) -> int:
        return self._loop.run(self._ac.position, partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._sync(lambda: self._ac.highwater(partition))

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._loop.run(self._ac.beginning_offsets, list(partitions))

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._loop.run(self._ac.end_offsets, list(partitions))

    def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return self._loop.run(self._ac.offsets_for_times, dict(timestamps))

    def topics(self) -> set[str]:
        return self._loop.run(self._ac.topics)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self._loop.run(self._ac.partitions_for_topic, topic)

    def poll(
        self, timeout_ms: float = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        return self._loop.run(self._ac.poll, timeout_ms, max_records)

    def __iter__(self) -> Consumer:
        return self

    def __next__(self) -> ConsumerRecord:
        """The next record; StopIteration after consumer_timeout_ms without one."""
        if self._iter_buffer:
            return self._iter_buffer.popleft()
        timeout = self._ac.config.consumer_timeout_ms
        deadline = time.monotonic() + timeout / 1000
        while True:
            remaining = (deadline - time.monotonic()) * 1000
            if remaining <= 0:
                raise StopIteration
            # Poll in slices so that KeyboardInterrupt is seen between them.
            records = self.poll(timeout_ms=min(remaining, 1000))
            if records:
                for recs in records.values():
                    self._iter_buffer.extend(recs)
                return self._iter_buffer.popleft()

    def close(self) -> None:
        self._loop.close(self._ac.close)


class Admin:
    """Blocking admin client; same methods as ``client.aio.AsyncAdmin``."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **configs: Any):
        self._aa = AsyncAdmin(bootstrap_servers, **configs)
        self._loop = _LoopThread(self._aa, "minibroker-admin")

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_topics(
        self, new_topics: Sequence[NewTopic], timeout_ms: int = 30_000, validate_only: bool = False
    ) -> None:
        self._loop.run(self._aa.create_topics, list(new_topics), timeout_ms, validate_only)

    def delete_topics(self, topics: Sequence[str], timeout_ms: int = 30_000) -> None:
        self._loop.run(self._aa.delete_topics, list(topics), timeout_ms)

    def list_topics(self) -> list[str]:
        return self._loop.run(self._aa.list_topics)

    def describe_topics(self, topics: Sequence[str] | None = None) -> list[TopicDescription]:
        return self._loop.run(self._aa.describe_topics, topics)

    def describe_cluster(self) -> ClusterDescription:
        return self._loop.run(self._aa.describe_cluster)

    def elect_leaders(
        self,
        election_type: int = PREFERRED_ELECTION,
        partitions: Sequence[TopicPartition] | None = None,
        timeout_ms: int = 30_000,
    ) -> dict[TopicPartition, BrokerResponseError | None]:
        return self._loop.run(self._aa.elect_leaders, election_type, partitions, timeout_ms)

    def describe_configs(
        self, topics: Sequence[str], *, overrides_only: bool = False
    ) -> dict[str, dict[str, str]]:
        return self._loop.run(
            functools.partial(self._aa.describe_configs, overrides_only=overrides_only),
            list(topics),
        )

    # consumer groups (client.group_admin)

    def list_consumer_groups(
        self, states: Iterable[str] | None = None
    ) -> list[ConsumerGroupListing]:
        return self._loop.run(self._aa.list_consumer_groups, states)

    def describe_consumer_groups(self, group_ids: Sequence[str]) -> list[ConsumerGroupDescription]:
        return self._loop.run(self._aa.describe_consumer_groups, list(group_ids))

    def list_consumer_group_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return self._loop.run(self._aa.list_consumer_group_offsets, group_id, partitions)

    def alter_consumer_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        self._loop.run(self._aa.alter_consumer_group_offsets, group_id, dict(offsets))

    def delete_consumer_groups(
        self, group_ids: Sequence[str]
    ) -> dict[str, BrokerResponseError | None]:
        return self._loop.run(self._aa.delete_consumer_groups, list(group_ids))

    def close(self) -> None:
        self._loop.close(self._aa.close)
