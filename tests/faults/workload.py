"""The queue workload of the fault tests: producer and poller threads recording a history,
the final read, the check, and the replica comparison.

Sync, like the tests: each worker is a thread with a blocking client. Every value is unique
(``p<process>-<n>``) so the checker can trace each read back to its send. A send that fails
after it was queued is recorded as unknown (it may have been written: a timeout, a lost
connection, a leader deposed while waiting); only a send refused before it was queued is
recorded as failed.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from client.errors import ClientError, OffsetOutOfRangeError
from proto.errors import MinibrokerError
from tests.checkers.queue import AnomalyKind, QueueHistory, QueueReport, check
from tests.faults.known_bugs import wait_isr_full
from tests.integration.cluster import LocalCluster
from tests.integration.test_replication import log_batches

REPLICAS = 3
MIN_INSYNC = 2
# Tolerated until the idempotent producer lands: a retried send of unknown outcome may be
# written twice. Every other anomaly kind must be absent.
TOLERATED: frozenset[AnomalyKind] = frozenset()  # idempotent producers: none
# The producers' defaults in these tests: fail a request over in seconds, not Kafka's 30 s,
# and retry for as long as a fault can last.
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "request_timeout_ms": 3_000,
    "retries": 1_000,
    "retry_backoff_ms": 100,
    "delivery_timeout_ms": 60_000,
    "max_block_ms": 20_000,
}


def fault_cluster(root: Any, *, proxies: bool = False, **settings: str) -> LocalCluster:
    """3 brokers, 3 coordinator members, 2 s broker sessions (the floor of failover time),
    a 500 ms coordinator tick (so the ensemble grants 2 s sessions)."""
    base = {"zookeeper.session.timeout.ms": "2000", "replica.lag.time.max.ms": "3000"}
    return LocalCluster(
        root,
        brokers=3,
        settings={**base, **settings},
        coordinators=3,
        coordinator_tick_ms=500,
        proxies=proxies,
    )


def create_topic(cluster: LocalCluster, topic: str, partitions: int = 1) -> list[int]:
    """RF 3, min.insync.replicas 2; returns each partition's leader once its ISR is full."""
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics(
            [NewTopic(topic, partitions, REPLICAS, {"min.insync.replicas": str(MIN_INSYNC)})]
        )
    return [cluster.wait_isr_full(topic, p, REPLICAS).leader for p in range(partitions)]


@dataclass
class ProducerWorker:
    """Sends unique values with acks=all, at most ``window`` outstanding, until stopped."""

    history: QueueHistory
    bootstrap: str
    topic: str
    process: int
    config: dict[str, Any] = field(default_factory=dict)
    window: int = 16
    ack_times: list[float] = field(default_factory=list)
    acked: int = 0
    unknown: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _slots: threading.Semaphore = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _crash: BaseException | None = None

    def __post_init__(self) -> None:
        self._slots = threading.Semaphore(self.window)

    def start(self) -> ProducerWorker:
        self._thread = threading.Thread(target=self._run, name=f"producer-{self.process}")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            config = {**PRODUCER_CONFIG, **self.config}
            with Producer(bootstrap_servers=self.bootstrap, **config) as p:
                n = 0
                while not self._stop.is_set():
                    if not self._slots.acquire(timeout=0.1):
                        continue
                    value = b"p%d-%07d" % (self.process, n)
                    n += 1
                    handle = self.history.send(self.process, self.topic, None, value)
                    try:
                        future = p.send(self.topic, value=value)
                    except (ClientError, MinibrokerError) as exc:
                        self.history.send_failed(handle)  # refused before it was queued
                        self._done(exc, failed=True)
                        continue
                    future.add_callback(self._ok, handle)
                    future.add_errback(self._err, handle)
                p.flush()
        except BaseException as exc:
            self._crash = exc
            raise

    def _ok(self, handle: int, md: Any) -> None:
        self.history.send_ok(handle, partition=md.partition, offset=md.offset)
        with self._lock:
            self.acked += 1
            self.ack_times.append(time.monotonic())
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

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` more sends than now are acknowledged."""
        target = self.acked + count
        deadline = time.monotonic() + timeout
        while self.acked < target:
            if self._crash is not None:
                raise RuntimeError("producer thread crashed") from self._crash
            if time.monotonic() > deadline:
                raise TimeoutError(f"producer {self.process}: {self.acked}/{target} acked")
            threading.Event().wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)
            assert not self._thread.is_alive(), "producer did not finish in 120 s"
        if self._crash is not None:
            raise RuntimeError("producer thread crashed") from self._crash

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time in [start, end] with no acknowledgement: how long writes were
        unavailable around a fault."""
        with self._lock:
            times = list(self.ack_times)
        i = bisect.bisect_left(times, start)
        inside = [start, *times[i : bisect.bisect_right(times, end)], end]
        return max(b - a for a, b in itertools.pairwise(inside))


@dataclass
class PollerWorker:
    """A consumer polling the topic's partitions from offset 0 until stopped, every poll
    recorded. ``auto_offset_reset='none'``: a position out of range is an error it records
    and answers with an explicit seek, never a silent reset."""

    history: QueueHistory
    bootstrap: str
    topic: str
    partitions: int
    process: int
    polled: int = 0
    out_of_range: list[str] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _crash: BaseException | None = None

    def start(self) -> PollerWorker:
        self._thread = threading.Thread(target=self._run, name=f"poller-{self.process}")
        self._thread.start()
        return self

    def _run(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        next_offset = {tp: 0 for tp in tps}
        try:
            with Consumer(bootstrap_servers=self.bootstrap, auto_offset_reset="none") as c:
                c.assign(tps)
                self.history.assign(self.process, [(tp.topic, tp.partition) for tp in tps])
                for tp in tps:
                    c.seek(tp, 0)
                    self.history.seek(self.process, tp.topic, tp.partition, 0)
                while not self._stop.is_set():
                    invoked = self.history.clock()
                    try:
                        batch = c.poll(timeout_ms=200, max_records=5_000)
                    except OffsetOutOfRangeError as exc:
                        self.out_of_range.append(str(exc))
                        for tp in tps:
                            c.seek(tp, next_offset[tp])
                            self.history.seek(self.process, tp.topic, tp.partition, next_offset[tp])
                        continue
                    except (ClientError, MinibrokerError):
                        self.errors += 1
                        continue
                    if batch:
                        self.history.poll(self.process, invoked, batch)
                        for tp, records in batch.items():
                            self.polled += len(records)
                            next_offset[tp] = records[-1].offset + 1
        except BaseException as exc:
            self._crash = exc
            raise

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        if self._crash is not None:
            raise RuntimeError("poller thread crashed") from self._crash


def final_read(
    cluster: LocalCluster, history: QueueHistory, topic: str, partitions: int, process: int
) -> dict[TopicPartition, list[Any]]:
    """Every partition read from offset 0 up to its high watermark, once the ISR is full
    again and the high watermark stopped moving; recorded as the history's final read."""
    for p in range(partitions):
        wait_isr_full(cluster, topic, p)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    got: dict[TopicPartition, list[Any]] = {tp: [] for tp in tps}
    invoked = history.clock()
    with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="none") as c:
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        deadline = time.monotonic() + 60
        end: dict[TopicPartition, int] = {}
        while True:
            latest = c.end_offsets(tps)
            if latest == end and all(
                (got[tp][-1].offset + 1 if got[tp] else 0) >= end[tp] for tp in tps
            ):
                break
            end = latest
            while any((got[tp][-1].offset + 1 if got[tp] else 0) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"final read stuck below {end}:\n{cluster.logs()}")
                for tp, records in c.poll(timeout_ms=500, max_records=50_000).items():
                    got[tp] += records
            threading.Event().wait(0.5)  # the end offset must hold still across a look
    history.final_read(process, invoked, {(tp.topic, tp.partition): got[tp] for tp in tps})
    return got


def check_history(
    history: QueueHistory, tolerated: Iterable[AnomalyKind] = TOLERATED
) -> QueueReport:
    """Run the checker; fail with its examples on any anomaly not ``tolerated``."""
    report = check(history.history())
    assert report.workload_error_count == 0, report.workload_errors
    allowed = frozenset(tolerated)
    bad = {kind: n for kind, n in report.counts.items() if n and kind not in allowed}
    assert not bad, report.summary()
    return report


def assert_replicas_identical(cluster: LocalCluster, topic: str, partitions: int) -> int:
    """After ``cluster.stop()``: every replica's log holds the same batches, byte for byte.
    Returns the number of batches of partition 0."""
    counts = []
    for p in range(partitions):
        logs = {b: log_batches(cluster.root / f"broker-{b}", topic, p) for b in cluster.brokers}
        lengths = {b: len(batches) for b, batches in logs.items()}
        first = next(iter(logs.values()))
        assert all(batches == first for batches in logs.values()), (
            f"{topic}-{p} replicas diverge (batches per broker: {lengths})"
        )
        counts.append(len(first))
    return counts[0]
