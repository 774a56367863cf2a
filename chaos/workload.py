"""The chaos workload: idempotent acks=all producers and a consumer group, recording a history.

Threads with the blocking clients, as in the fault tests. Every value is unique
(``<run>-p<process>-<n>``) so the checker can trace each read back to its send; keys
spread the records over the partitions. A send refused before it was queued is recorded as
failed; one that fails after (a delivery timeout, a lost connection) as unknown: it may
have been written. Group members poll, record each poll, and commit exactly the offsets
they read (synchronously; only acknowledged commits are recorded), with every rebalance
callback recorded as a marker, so the checker knows where a member may restart.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chaos.errors import ChaosRunError
from chaos.history import QueueHistory
from client import Consumer, Producer, TopicPartition
from client.errors import ClientError, MinibrokerError
from client.types import OffsetAndMetadata

__all__ = ["PRODUCER_CONFIG", "GroupMember", "ProducerWorker", "WorkerCrashedError"]

# Fail a request over in seconds, not Kafka's 30 s, and keep retrying for as long as a
# fault (plus a broker session) can last: an acknowledged record is what the check trusts.
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "request_timeout_ms": 5_000,
    "retry_backoff_ms": 100,
    "delivery_timeout_ms": 120_000,
    "max_block_ms": 30_000,
}
CONSUMER_CONFIG: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",  # a new group per run reads from offset 0
    "request_timeout_ms": 10_000,
}


class WorkerCrashedError(ChaosRunError):
    """A worker thread died of an exception it could not record (a bug, not a fault)."""


@dataclass
class ProducerWorker:
    """Sends unique values with acks=all at ``rate`` records/s (0: as fast as the window of
    ``window`` outstanding sends allows) until stopped."""

    history: QueueHistory
    bootstrap: str
    topic: str
    process: int
    run_tag: str
    rate: float = 0.0
    window: int = 32
    config: dict[str, Any] = field(default_factory=dict)
    acked: int = 0
    unknown: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _slots: threading.Semaphore = field(init=False)
    _thread: threading.Thread | None = None
    _crash: BaseException | None = None

    def __post_init__(self) -> None:
        self._slots = threading.Semaphore(self.window)

    def start(self) -> ProducerWorker:
        self._thread = threading.Thread(
            target=self._run, name=f"chaos-producer-{self.process}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with Producer(
                bootstrap_servers=self.bootstrap, **{**PRODUCER_CONFIG, **self.config}
            ) as p:
                n = 0
                interval = 1 / self.rate if self.rate > 0 else 0.0
                next_at = time.monotonic()
                while not self._stop.is_set():
                    if interval:
                        # Pacing to the requested rate, not a wait for a condition.
                        if self._stop.wait(max(next_at - time.monotonic(), 0)):
                            break
                        next_at = max(next_at + interval, time.monotonic() - 1)
                    if not self._slots.acquire(timeout=0.1):
                        continue
                    value = f"{self.run_tag}-p{self.process}-{n:08d}".encode()
                    key = b"k%d" % n
                    n += 1
                    handle = self.history.send(self.process, self.topic, key, value)
                    try:
                        future = p.send(self.topic, value=value, key=key)
                    except (ClientError, MinibrokerError) as exc:
                        self.history.send_failed(handle)  # refused before it was queued
                        self._done(exc, failed=True)
                        continue
                    future.add_callback(self._ok, handle)
                    future.add_errback(self._err, handle)
                p.flush()
        except BaseException as exc:
            self._crash = exc

    def _ok(self, handle: int, md: Any) -> None:
        self.history.send_ok(handle, partition=md.partition, offset=md.offset)
        with self._lock:
            self.acked += 1
        self._slots.release()

    def _err(self, handle: int, exc: BaseException) -> None:
        self.history.send_unknown(handle)
        self._done(exc, failed=False)

    def _done(self, exc: BaseException, *, failed: bool) -> None:
        with self._lock:
            if failed:
                self.failed += 1
            else:
                self.unknown += 1
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        self._slots.release()

    def check_alive(self) -> None:
        if self._crash is not None:
            raise WorkerCrashedError(f"producer {self.process} crashed: {self._crash!r}")

    def stop(self, timeout_s: float = 180.0) -> None:
        """Stop sending and wait for every outstanding send to complete (flush)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise WorkerCrashedError(f"producer {self.process} did not stop in {timeout_s} s")
        self.check_alive()


class _Listener:
    """Records each rebalance callback as a history marker for its partitions."""

    def __init__(self, member: GroupMember) -> None:
        self.member = member

    def _mark(self, tps: set[TopicPartition]) -> None:
        m = self.member
        m.history.rebalance(m.process, [(tp.topic, tp.partition) for tp in tps], m.group)
        m.rebalances += 1

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._mark(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._mark(assigned)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._mark(lost)


@dataclass
class GroupMember:
    """One member of the run's consumer group: poll, record, commit what it read."""

    history: QueueHistory
    bootstrap: str
    topic: str
    group: str
    process: int
    polled: int = 0
    commits: int = 0
    commit_failures: int = 0
    poll_errors: int = 0
    rebalances: int = 0
    errors: list[str] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    """partition -> the highest offset this member committed (acknowledged)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _crash: BaseException | None = None

    def start(self) -> GroupMember:
        self._thread = threading.Thread(
            target=self._run, name=f"chaos-member-{self.process}", daemon=True
        )
        self._thread.start()
        return self

    def _note(self, exc: BaseException) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        try:
            with Consumer(
                bootstrap_servers=self.bootstrap, group_id=self.group, **CONSUMER_CONFIG
            ) as consumer:
                consumer.subscribe([self.topic], listener=_Listener(self))
                while not self._stop.is_set():
                    invoked = self.history.clock()
                    try:
                        batch = consumer.poll(timeout_ms=200, max_records=2_000)
                    except (ClientError, MinibrokerError) as exc:
                        self.poll_errors += 1
                        self._note(exc)
                        continue
                    if not batch:
                        continue
                    self.history.poll(self.process, invoked, batch)
                    self.polled += sum(len(r) for r in batch.values())
                    last = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
                    self._commit(consumer, last)
        except BaseException as exc:
            self._crash = exc

    def _commit(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        invoked = self.history.clock()
        try:
            consumer.commit({tp: OffsetAndMetadata(o) for tp, o in offsets.items()})
        except (ClientError, MinibrokerError) as exc:
            self.commit_failures += 1  # a rebalance or a fault: the next owner re-reads
            self._note(exc)
            return
        self.history.commit(self.process, self.group, invoked, offsets)
        self.commits += 1
        for tp, offset in offsets.items():
            self.committed[tp.partition] = max(offset, self.committed.get(tp.partition, 0))

    def check_alive(self) -> None:
        if self._crash is not None:
            raise WorkerCrashedError(f"group member {self.process} crashed: {self._crash!r}")

    def halt(self) -> None:
        """Ask the member to leave (its thread closes the consumer); ``stop`` also waits."""
        self._stop.set()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise WorkerCrashedError(f"member {self.process} did not stop in {timeout_s} s")
        self.check_alive()
