"""Snapshots of the whole tree, and recovery: newest valid snapshot + the log after it.

A snapshot file ``snapshot.<zxid>`` (16 hex digits: the tree's last zxid) is::

    magic   4 bytes  b"MBZS"
    crc     u32      CRC-32C of body
    body    msgpack of DataTree.to_snapshot()

It is written to a temp file, fsynced and renamed, so a crash leaves either the old set of
snapshots or the new one. The server takes a snapshot between write groups (the tree is
consistent then; ZooKeeper's fuzzy snapshots are not needed on one node). Blocking file
I/O, no trio.
"""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import crc32c

from coordinator.tree import DataTree
from coordinator.txnlog import LOG_PREFIX, TxnLog, file_zxid, fsync_dir, list_logs, read_log
from proto.codec import packb, unpackb
from proto.errors import RemoteProtocolError

__all__ = ["SNAPSHOT_PREFIX", "Storage", "list_snapshots", "load_snapshot", "write_snapshot"]

SNAPSHOT_PREFIX = "snapshot."
MAGIC = b"MBZS"
HEADER = struct.Struct(">4sI")


def list_snapshots(data_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in data_dir.iterdir():
        zxid = file_zxid(entry.name, SNAPSHOT_PREFIX)
        if zxid is not None:
            found.append((zxid, entry))
    return sorted(found)


def write_snapshot(data_dir: Path, tree: DataTree) -> Path:
    body = packb(tree.to_snapshot())
    final = data_dir / f"{SNAPSHOT_PREFIX}{tree.last_zxid:016x}"
    tmp = data_dir / f".{final.name}.tmp"
    with tmp.open("wb") as f:
        f.write(HEADER.pack(MAGIC, crc32c.crc32c(body)))
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(data_dir)
    return final


def load_snapshot(path: Path) -> DataTree | None:
    """The tree in a snapshot file, or None if it is damaged."""
    buf = path.read_bytes()
    if len(buf) < HEADER.size:
        return None
    magic, crc = HEADER.unpack_from(buf)
    body = buf[HEADER.size :]
    if magic != MAGIC or crc32c.crc32c(body) != crc:
        return None
    try:
        return DataTree.from_snapshot(unpackb(body))
    except (RemoteProtocolError, ValueError, TypeError, KeyError):
        return None


@dataclass(slots=True)
class RecoveryInfo:
    snapshot_zxid: int
    replayed: int


class Storage:
    """ZooKeeper's FileTxnSnapLog: recovery, the txn log, and the snapshot policy."""

    __slots__ = ("_since_snapshot", "data_dir", "log", "snap_retain_count", "snapshot_count")

    def __init__(
        self,
        data_dir: Path,
        *,
        snapshot_count: int = 10_000,
        snap_retain_count: int = 3,
        force_sync: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.snapshot_count = snapshot_count
        self.snap_retain_count = snap_retain_count
        self.log = TxnLog(data_dir, force_sync=force_sync)
        self._since_snapshot = 0

    def recover(self) -> tuple[DataTree, RecoveryInfo]:
        """Newest loadable snapshot, plus every logged txn after it (torn tail truncated)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.data_dir.glob(f".{SNAPSHOT_PREFIX}*.tmp"):
            leftover.unlink()
        tree = DataTree()
        for _, path in reversed(list_snapshots(self.data_dir)):
            loaded = load_snapshot(path)
            if loaded is not None:
                tree = loaded
                break
        snapshot_zxid = tree.last_zxid
        replayed = 0
        for txn in read_log(self.data_dir, tree.last_zxid):
            tree.apply(txn)
            replayed += 1
        self.log.last_zxid = tree.last_zxid
        self._since_snapshot = replayed
        return tree, RecoveryInfo(snapshot_zxid, replayed)

    def commit(self) -> int:
        count = self.log.commit()
        self._since_snapshot += count
        return count

    def snapshot_due(self) -> bool:
        return self._since_snapshot >= self.snapshot_count

    def snapshot(self, tree: DataTree) -> Path:
        """Snapshot the tree (all appended txns must be committed), roll the log, purge."""
        self.log.roll()
        path = write_snapshot(self.data_dir, tree)
        self._since_snapshot = 0
        self.purge()
        return path

    def purge(self) -> None:
        """Keep the newest ``snap_retain_count`` snapshots and the logs they need."""
        snaps = list_snapshots(self.data_dir)
        if len(snaps) <= self.snap_retain_count:
            return
        keep_from = snaps[-self.snap_retain_count][0]
        for _, path in snaps[: -self.snap_retain_count]:
            path.unlink()
        logs = list_logs(self.data_dir)
        # A log is still needed if it may hold txns after the oldest kept snapshot.
        for (_, path), (next_start, _) in itertools.pairwise(logs):
            if next_start <= keep_from + 1 and path.name.startswith(LOG_PREFIX):
                path.unlink()

    def close(self) -> None:
        self.log.commit()
        self.log.close()
