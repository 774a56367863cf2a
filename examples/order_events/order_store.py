"""The application's state: one SQLite file that every worker of the group writes to.

This is where processing becomes idempotent. The group delivers each record *at least*
once: a worker killed after handling a record but before committing its offset leaves the
record to the partition's next owner, which reads it again. So the store keeps, per
partition, the offset of the next record to apply (``partition_progress``) and changes it
in the same transaction as the order itself: a record below that offset was applied
already and is skipped, and a crash can never leave one change without the other.

The offset is a sound deduplication key because the producer is idempotent (``acks=all``):
a retried send never puts a second copy of an event in the log. ``applied_events`` is an
audit trail for ``check.py`` (who applied what, in which order); ``skipped_redeliveries``
counts what the deduplication caught; ``rejected_events`` holds records that are not order
events. SQLite's write lock (``BEGIN IMMEDIATE``) serialises the workers' transactions, so
even two workers that briefly both believe they own a partition cannot apply a record twice.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from orders import OrderEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    version INTEGER NOT NULL          -- events applied; the next one must have seq = version
);
CREATE TABLE IF NOT EXISTS partition_progress (
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,     -- a record below this offset was applied already
    PRIMARY KEY (topic, partition_id)
);
CREATE TABLE IF NOT EXISTS applied_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- the order things were applied in
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    order_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    worker TEXT NOT NULL,
    applied_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS skipped_redeliveries (
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    worker TEXT NOT NULL,
    skipped_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected_events (
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    reason TEXT NOT NULL,
    worker TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    topic: str
    partition: int
    offset: int
    order_id: str
    seq: int
    worker: str
    applied_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything check.py compares with the log."""

    applied: list[AppliedEvent]  # in the order they were applied
    orders: dict[str, tuple[str, int]]  # order id -> (status, version)
    rejected: list[tuple[str, int, int]]  # (topic, partition, offset)
    skipped: dict[str, int]  # worker -> redeliveries it skipped


class OrderStore:
    def __init__(self, path: str | Path, worker: str = "") -> None:
        self.worker = worker
        # isolation_level=None: transactions are opened explicitly with BEGIN IMMEDIATE.
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (check.py) never block writers
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _already_applied(self, topic: str, partition: int, offset: int) -> bool:
        row = self._db.execute(
            "SELECT next_offset FROM partition_progress WHERE topic = ? AND partition_id = ?",
            (topic, partition),
        ).fetchone()
        return row is not None and offset < int(row[0])

    def _advance(self, topic: str, partition: int, offset: int) -> None:
        self._db.execute(
            "INSERT INTO partition_progress VALUES (?, ?, ?) ON CONFLICT (topic, partition_id)"
            " DO UPDATE SET next_offset = excluded.next_offset",
            (topic, partition, offset + 1),
        )

    def apply(self, topic: str, partition: int, offset: int, event: OrderEvent) -> bool:
        """Apply one event unless this record was applied before: True if applied, False
        if it was a redelivery (then nothing changes but the skip counter)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._already_applied(topic, partition, offset):
                db.execute(
                    "INSERT INTO skipped_redeliveries VALUES (?, ?, ?, ?, ?)",
                    (topic, partition, offset, self.worker, time.time()),
                )
                db.execute("COMMIT")
                return False
            db.execute(
                "INSERT INTO orders VALUES (?, ?, 1) ON CONFLICT (order_id)"
                " DO UPDATE SET status = excluded.status, version = version + 1",
                (event.order_id, event.step),
            )
            db.execute(
                "INSERT INTO applied_events (topic, partition_id, record_offset, order_id, seq,"
                " worker, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (topic, partition, offset, event.order_id, event.seq, self.worker, time.time()),
            )
            self._advance(topic, partition, offset)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return True

    def reject(self, topic: str, partition: int, offset: int, reason: str) -> bool:
        """Set a record that is not an order event aside (once) and move past it."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._already_applied(topic, partition, offset):
                db.execute("COMMIT")
                return False
            db.execute(
                "INSERT INTO rejected_events VALUES (?, ?, ?, ?, ?)",
                (topic, partition, offset, reason, self.worker),
            )
            self._advance(topic, partition, offset)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return True

    def snapshot(self) -> Snapshot:
        db = self._db
        db.execute("BEGIN")  # one consistent read across the tables
        try:
            applied = [
                AppliedEvent(*row)
                for row in db.execute(
                    "SELECT topic, partition_id, record_offset, order_id, seq, worker, applied_at"
                    " FROM applied_events ORDER BY id"
                )
            ]
            orders = {
                str(oid): (str(status), int(version))
                for oid, status, version in db.execute("SELECT * FROM orders")
            }
            rejected = [
                (str(t), int(p), int(o))
                for t, p, o in db.execute(
                    "SELECT topic, partition_id, record_offset FROM rejected_events"
                )
            ]
            skipped = {
                str(w): int(n)
                for w, n in db.execute(
                    "SELECT worker, COUNT(*) FROM skipped_redeliveries GROUP BY worker"
                )
            }
        finally:
            db.execute("COMMIT")
        return Snapshot(applied, orders, rejected, skipped)
