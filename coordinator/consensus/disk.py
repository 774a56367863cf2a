"""An ensemble member's durable Raft state. Blocking file I/O, no trio: called inline
(``save``) or, by the server, from one writer thread at a time (``run``: the log and
snapshots; the event loop then only writes ``raft.state``, a file of its own).

A data dir of an ensemble member holds:

* ``raft.state``: msgpack ``[term, voted_for]``, replaced atomically (tmp, fsync, rename);
* ``raftlog.<16 hex: first index>``: log segments, records as in ``coordinator.txnlog``
  (``u32 length | u32 CRC-32C | body``) with body msgpack ``[term, index, data]``;
* ``raftsnap.<16 hex: index>``: ``b"MBRS" | u32 CRC-32C | msgpack [index, term, data]``
  where ``data`` is the tree snapshot (``DataTree.to_snapshot`` in msgpack).

``save(ready)`` persists one ``Ready`` with one fsync of the log (group commit); ``run(jobs)``
writes a group of ``DiskJob``s with one fsync at the end. A new
segment starts after every snapshot; segments wholly covered by the newest snapshot are
deleted, so disk use and restart time stay bounded by ``snapshot_count``. A torn record at
the end of the newest segment (a crash mid-write) is cut off on load.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import crc32c

from coordinator.consensus.node import HardState, Ready, Snapshot
from coordinator.consensus.writes import DiskJob
from coordinator.txnlog import CorruptLogError, encode_record, file_zxid, fsync_dir
from proto.codec import packb, unpackb
from proto.errors import RemoteProtocolError
from proto.zk_peer import Entry

__all__ = ["RaftDisk"]

STATE = "raft.state"
SEG_PREFIX = "raftlog."
SNAP_PREFIX = "raftsnap."
MAGIC = b"MBRS"
HEADER = struct.Struct(">II")
SNAP_HEADER = struct.Struct(">4sI")


def _decode_segment(buf: bytes) -> tuple[list[tuple[Entry, int]], int]:
    """(entry, offset of its record) for each valid record, and the valid prefix length."""
    out: list[tuple[Entry, int]] = []
    pos = 0
    while pos + HEADER.size <= len(buf):
        length, crc = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + length
        if end > len(buf):
            break
        body = buf[pos + HEADER.size : end]
        if crc32c.crc32c(body) != crc:
            break
        try:
            term, index, data = unpackb(body)
        except (RemoteProtocolError, ValueError, TypeError):
            break
        out.append((Entry(term, index, data), pos))
        pos = end
    return out, pos


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class RaftDisk:
    __slots__ = ("_dirty", "_fd", "_seg_start", "data_dir", "force_sync", "last_index")

    def __init__(self, data_dir: Path, *, force_sync: bool = True) -> None:
        self.data_dir = data_dir
        self.force_sync = force_sync
        self._fd: int | None = None
        self._dirty = False  # written to _fd since its last fdatasync
        self._seg_start = 0
        self.last_index = 0

    def _files(self, prefix: str) -> list[tuple[int, Path]]:
        found = []
        for entry in self.data_dir.iterdir():
            n = file_zxid(entry.name, prefix)
            if n is not None:
                found.append((n, entry))
        return sorted(found)

    # --- load ---------------------------------------------------------------------------

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        hs = HardState()
        state = self.data_dir / STATE
        if state.exists():
            term, voted_for = unpackb(state.read_bytes())
            hs = HardState(term, voted_for)
        snap = None
        for _, path in reversed(self._files(SNAP_PREFIX)):
            snap = self._load_snapshot(path)
            if snap is not None:
                break
        base = 0 if snap is None else snap.index
        entries: list[Entry] = []
        segs = self._files(SEG_PREFIX)
        for i, (_, path) in enumerate(segs):
            buf = path.read_bytes()
            decoded, valid = _decode_segment(buf)
            if valid != len(buf):
                if i != len(segs) - 1:
                    raise CorruptLogError(f"{path.name}: bad record at byte {valid}")
                with path.open("r+b") as f:
                    f.truncate(valid)
            for e, _ in decoded:
                if e.index <= base:
                    continue
                expected = entries[-1].index + 1 if entries else base + 1
                if e.index != expected:
                    raise CorruptLogError(f"{path.name}: entry {e.index} out of sequence")
                entries.append(e)
        self.last_index = entries[-1].index if entries else base
        return hs, snap, entries

    @staticmethod
    def _load_snapshot(path: Path) -> Snapshot | None:
        buf = path.read_bytes()
        if len(buf) < SNAP_HEADER.size:
            return None
        magic, crc = SNAP_HEADER.unpack_from(buf)
        body = buf[SNAP_HEADER.size :]
        if magic != MAGIC or crc32c.crc32c(body) != crc:
            return None
        index, term, data = unpackb(body)
        return Snapshot(index, term, data)

    # --- save ---------------------------------------------------------------------------

    def save(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.save_hard_state(rd.hard_state)
        if rd.snapshot is not None:
            self.write_snapshot(rd.snapshot, drop_log=True)
        if rd.entries:
            self.append(rd.entries)

    def save_hard_state(self, hs: HardState) -> None:
        _atomic_write(self.data_dir / STATE, packb([hs.term, hs.voted_for]))

    def run(self, jobs: list[DiskJob]) -> None:
        """Write ``jobs`` in order, then one fdatasync. Packs compaction snapshots (filling
        ``job.compacted``): this runs off the event loop."""
        for job in jobs:
            if job.installed is not None:
                self.write_snapshot(job.installed, drop_log=True)
            if job.entries:
                self.append(job.entries, sync=False)
            if job.compaction is not None:
                index, term, rows = job.compaction
                job.compacted = Snapshot(index, term, packb(rows))
                self.write_snapshot(job.compacted)
        self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            if self.force_sync:
                os.fdatasync(self._fd)
            self._dirty = False

    def append(self, entries: list[Entry], *, sync: bool = True) -> None:
        first = entries[0].index
        if first <= self.last_index:
            self._truncate_from(first)
        if self._fd is None:
            path = self.data_dir / f"{SEG_PREFIX}{first:016x}"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._seg_start = first
            fsync_dir(self.data_dir)
        data = b"".join(encode_record(packb([e.term, e.index, e.data])) for e in entries)
        pos = 0
        while pos < len(data):
            pos += os.write(self._fd, data[pos:])
        self._dirty = True
        if sync:
            self.sync()
        self.last_index = entries[-1].index

    def _truncate_from(self, index: int) -> None:
        """Cut the log before entry ``index`` (a new leader overwrote our tail)."""
        self.close()
        for start, path in reversed(self._files(SEG_PREFIX)):
            if start >= index:
                path.unlink()
                continue
            decoded, _ = _decode_segment(path.read_bytes())
            cut = next((off for e, off in decoded if e.index >= index), None)
            if cut is not None:
                with path.open("r+b") as f:
                    f.truncate(cut)
                    f.flush()
                    os.fsync(f.fileno())
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._seg_start = start
            break
        fsync_dir(self.data_dir)
        self.last_index = index - 1

    def write_snapshot(self, snap: Snapshot, *, drop_log: bool = False) -> None:
        """Persist ``snap``; drop log segments it covers (all of them if ``drop_log``: an
        installed snapshot replaces our log) and older snapshots but the previous one."""
        body = packb([snap.index, snap.term, snap.data])
        path = self.data_dir / f"{SNAP_PREFIX}{snap.index:016x}"
        _atomic_write(path, SNAP_HEADER.pack(MAGIC, crc32c.crc32c(body)) + body)
        self.close()  # the next append starts a new segment
        segs = self._files(SEG_PREFIX)
        for n, (_, seg) in enumerate(segs):
            next_start = segs[n + 1][0] if n + 1 < len(segs) else None
            if drop_log or (next_start is not None and next_start <= snap.index + 1):
                seg.unlink()
        if drop_log:
            self.last_index = snap.index
        for _, old in self._files(SNAP_PREFIX)[:-2]:
            old.unlink()

    def close(self) -> None:
        """Close the current segment, durable: what was written to it stays acknowledged."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
