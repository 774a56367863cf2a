"""The application: run as many identical copies as you like, all in one consumer group.

Each copy consumes the partitions the group gives it, applies every order event to the
shared database (``order_store.py``: idempotent, so a redelivered record changes nothing),
and commits the offsets of what it has applied: every ``--commit-interval-ms``, in
``on_partitions_revoked`` before a partition moves to another copy, and on the way out.
That is at-least-once processing: a record is committed only once it has been applied,
never before, so a copy that dies loses nothing; what it applied but had not committed
yet is read again by the partition's next owner and skipped by the store.

It commits explicit offsets (the next record after the last one applied, per partition)
rather than "everything poll() returned", so that stopping in the middle of a batch on
SIGTERM or Ctrl-C commits exactly what was applied. SIGTERM and Ctrl-C stop it cleanly:
finish the current record, commit, leave the group (the others take over at once instead
of after ``session_timeout_ms``). ``kill -9`` is the crash case the store is built for.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType

import structlog
from order_store import OrderStore
from orders import (
    DEFAULT_GROUP,
    DEFAULT_PARTITIONS,
    BadEventError,
    OrderEvent,
    add_common_args,
    ensure_topic,
    positive_int,
)

from client import (
    Consumer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    OffsetAndMetadata,
    TopicPartition,
)
from client.errors import (
    BrokerResponseError,
    ClientError,
    CommitFailedError,
    MinibrokerError,
    RebalanceInProgressError,
)

PROGRESS_EVERY_S = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="One copy of the order processor; run several with the same --group."
    )
    add_common_args(parser)
    parser.add_argument("--group", default=DEFAULT_GROUP, help=f"default: {DEFAULT_GROUP}")
    parser.add_argument(
        "--name",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="this copy's name in logs, in the database and as client id (default: host-pid)",
    )
    parser.add_argument(
        "--instance-id",
        help="static membership (group_instance_id): a restart within the session timeout "
        "gets its partitions back without a rebalance",
    )
    parser.add_argument(
        "--assignor",
        default="cooperative-sticky",
        choices=("cooperative-sticky", "range", "roundrobin"),
        help="cooperative-sticky (default) moves only what must move; range and roundrobin "
        "stop every member during a rebalance",
    )
    parser.add_argument(
        "--session-timeout-ms",
        type=positive_int,
        default=10_000,
        help="how long the group waits for a silent (crashed) copy before handing its "
        "partitions to the others (default 10000; the brokers allow 6000 and up by default)",
    )
    parser.add_argument(
        "--work-ms",
        type=float,
        default=10.0,
        help="simulated work per event, in ms (default 10)",
    )
    parser.add_argument(
        "--commit-interval-ms",
        type=float,
        default=1000.0,
        help="commit the offsets of what was applied at most this often (default 1000; "
        "0: after every poll). Everything applied since the last commit is redelivered "
        "after a crash: the store skips it",
    )
    parser.add_argument(
        "--max-poll-records", type=positive_int, default=50, help="records per poll (default 50)"
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions if this copy creates the topic (default {DEFAULT_PARTITIONS})",
    )
    args = parser.parse_args(argv)
    for name in ("work_ms", "commit_interval_ms"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, not {getattr(args, name)}")
    return args


def names(partitions: set[TopicPartition]) -> str:
    """``order-events-0,order-events-3``: Kafka's way of naming a partition."""
    return ",".join(f"{tp.topic}-{tp.partition}" for tp in sorted(partitions))


class Worker(ConsumerRebalanceListener):
    """One copy of the application; it is also the group's rebalance listener, whose
    callbacks run inside ``poll()``, between two batches, never during one."""

    def __init__(self, args: argparse.Namespace, stop: threading.Event) -> None:
        self.args = args
        self.stop = stop
        self.log = structlog.get_logger().bind(worker=args.name)
        self.store = OrderStore(args.db, worker=args.name)
        self.consumer = Consumer(
            bootstrap_servers=args.bootstrap_servers,
            client_id=args.name,
            group_id=args.group,
            group_instance_id=args.instance_id,
            enable_auto_commit=False,  # commit what was applied, not what was polled
            auto_offset_reset="earliest",  # a new group starts with the oldest order event
            partition_assignment_strategy=args.assignor,
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=max(1, min(3_000, args.session_timeout_ms // 3)),
            max_poll_records=args.max_poll_records,
        )
        self.to_commit: dict[TopicPartition, int] = {}  # partition -> next offset to read
        self.applied = 0
        self.skipped = 0
        self.rejected = 0

    # --- the rebalance listener -----------------------------------------------------------

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # The last moment this copy owns them: commit what it applied, so that the next
        # owner starts right after it (a failed commit only means more redeliveries).
        self.commit(only=revoked)
        for tp in revoked:
            self.to_commit.pop(tp, None)
        self.log.info("partitions_revoked", partitions=names(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:  # the cooperative protocol also calls it with nothing added
            self.log.info(
                "partitions_assigned",
                added=names(assigned),
                owned=names(self.consumer.assignment()),
            )

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # Thrown out of the group (session expired): the partitions already belong to
        # another copy and a commit would be refused. The store keeps us from harm.
        for tp in lost:
            self.to_commit.pop(tp, None)
        self.log.warning("partitions_lost", partitions=names(lost))

    # --- processing -----------------------------------------------------------------------

    def handle(self, record: ConsumerRecord) -> bool:
        """Apply one record; False if the store had it already (a redelivery)."""
        try:
            event = OrderEvent.decode(record.key, record.value)
        except BadEventError as exc:
            if self.store.reject(record.topic, record.partition, record.offset, str(exc)):
                self.rejected += 1
                self.log.warning(
                    "event_rejected", partition=record.partition, offset=record.offset, error=exc
                )
            return True
        if self.args.work_ms:
            time.sleep(self.args.work_ms / 1000)  # the application's work, before it commits
        if self.store.apply(record.topic, record.partition, record.offset, event):
            self.applied += 1
            return True
        self.skipped += 1
        return False

    def process(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            skipped: list[int] = []
            for record in records:
                if self.stop.is_set():
                    break  # the rest is not committed: the partition's next owner reads it
                if not self.handle(record):
                    skipped.append(record.offset)
                self.to_commit[tp] = record.offset + 1
            if skipped:
                self.log.info(
                    "redeliveries_skipped",
                    partition=tp.partition,
                    offsets=f"{skipped[0]}-{skipped[-1]}",
                    count=len(skipped),
                )
            if self.stop.is_set():
                return

    def commit(self, only: set[TopicPartition] | None = None) -> None:
        offsets = {
            tp: OffsetAndMetadata(offset, self.args.name)
            for tp, offset in self.to_commit.items()
            if only is None or tp in only
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except RebalanceInProgressError:
            return  # the next poll() completes the rebalance; then commit what is still ours
        except CommitFailedError as exc:
            # The group moved on without us: those records are redelivered to their new
            # owners, and skipped there because the store has them.
            self.log.warning("commit_failed", error=str(exc))
            self.to_commit.clear()
            return
        except (BrokerResponseError, ClientError) as exc:
            if not exc.retriable:
                raise
            # The coordinator moved or timed out: keep the offsets, commit them next time.
            self.log.warning("commit_retried_later", error=repr(exc))
            return
        for tp, committed in offsets.items():
            if self.to_commit.get(tp) == committed.offset:
                del self.to_commit[tp]

    def run(self) -> None:
        self.consumer.subscribe([self.args.topic], listener=self)
        self.log.info("worker_started", group=self.args.group, topic=self.args.topic)
        interval = self.args.commit_interval_ms / 1000
        next_commit = time.monotonic() + interval
        next_progress = time.monotonic() + PROGRESS_EVERY_S
        reported = (0, 0)
        while not self.stop.is_set():
            batch = self.consumer.poll(timeout_ms=500)
            self.process(batch)
            now = time.monotonic()
            if now >= next_commit:
                next_commit = now + interval
                self.commit()
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_S
                if (self.applied, self.skipped) != reported:
                    reported = (self.applied, self.skipped)
                    self.log.info("progress", applied=self.applied, skipped=self.skipped)

    def close(self) -> None:
        try:
            self.commit()
            self.consumer.close()  # revokes (the listener commits again: nothing left) and leaves
        finally:
            self.store.close()
        self.log.info(
            "worker_stopped", applied=self.applied, skipped=self.skipped, rejected=self.rejected
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ]
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()  # checked between records and after each poll (at most 500 ms)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        ensure_topic(args.bootstrap_servers, args.topic, args.partitions)
        worker = Worker(args, stop)
    except MinibrokerError as exc:
        print(f"worker: cannot start: {exc!r}", file=sys.stderr)
        return 1
    status = 0
    try:
        worker.run()
    except MinibrokerError as exc:  # e.g. FencedInstanceIdError: another copy took our id
        worker.log.error("worker_failed", error=repr(exc))
        status = 1
    finally:
        worker.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
