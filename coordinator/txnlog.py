"""The transaction log on disk. Blocking file I/O, no trio: the server calls it inline.

A data dir holds log files ``log.<zxid>`` (16 hex digits: the zxid of the file's first
txn) and snapshots ``snapshot.<zxid>`` (see ``coordinator.snapshot``). A log file is a
sequence of records::

    length  u32 big-endian   bytes of body
    crc     u32 big-endian   CRC-32C of body
    body    encode_txn(txn)

``append`` only buffers; ``commit`` writes everything buffered and fsyncs once, so the txns
of one write group share one fsync (group commit). A crash can leave a torn last record:
``read_log`` stops at the first short or bad record and reports where the valid prefix
ends, and recovery truncates the newest file there. A bad record in an older file is real
corruption and raises ``CorruptLogError``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import crc32c

from coordinator.txn import Txn, decode_txn, encode_txn
from proto.errors import MinibrokerError, RemoteProtocolError

__all__ = [
    "LOG_PREFIX",
    "CorruptLogError",
    "TxnLog",
    "encode_record",
    "list_logs",
    "read_log",
]

LOG_PREFIX = "log."
RECORD_HEADER = struct.Struct(">II")


class CorruptLogError(MinibrokerError):
    """A txn log or snapshot is damaged somewhere other than a torn tail."""


def encode_record(body: bytes) -> bytes:
    return RECORD_HEADER.pack(len(body), crc32c.crc32c(body)) + body


def decode_records(buf: bytes) -> tuple[list[Txn], int]:
    """Txns of a whole log file and the length of its valid prefix."""
    txns: list[Txn] = []
    pos = 0
    while pos + RECORD_HEADER.size <= len(buf):
        length, crc = RECORD_HEADER.unpack_from(buf, pos)
        end = pos + RECORD_HEADER.size + length
        if end > len(buf):
            break
        body = buf[pos + RECORD_HEADER.size : end]
        if crc32c.crc32c(body) != crc:
            break
        try:
            txns.append(decode_txn(body))
        except RemoteProtocolError:
            break
        pos = end
    return txns, pos


def file_zxid(name: str, prefix: str) -> int | None:
    if not name.startswith(prefix):
        return None
    try:
        return int(name[len(prefix) :], 16)
    except ValueError:
        return None


def list_logs(data_dir: Path) -> list[tuple[int, Path]]:
    """(start zxid, path) of every log file, oldest first."""
    found = []
    for entry in data_dir.iterdir():
        zxid = file_zxid(entry.name, LOG_PREFIX)
        if zxid is not None:
            found.append((zxid, entry))
    return sorted(found)


def read_log(data_dir: Path, after_zxid: int) -> Iterator[Txn]:
    """Every logged txn with zxid > after_zxid, in order; truncates a torn newest file."""
    logs = list_logs(data_dir)
    # The newest file starting at or before after_zxid may hold txns after it.
    first = 0
    for i, (start, _) in enumerate(logs):
        if start <= after_zxid:
            first = i
    for i, (_, path) in enumerate(logs[first:], start=first):
        buf = path.read_bytes()
        txns, valid = decode_records(buf)
        if valid != len(buf):
            if i != len(logs) - 1:
                raise CorruptLogError(f"{path.name}: bad record at byte {valid}")
            _truncate(path, valid)
        for txn in txns:
            if txn.zxid > after_zxid:
                yield txn


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TxnLog:
    """Appends txns to the current log file; ``roll`` starts a new file at the next txn."""

    __slots__ = ("_buffer", "_buffered", "_fd", "data_dir", "force_sync", "last_zxid")

    def __init__(self, data_dir: Path, *, force_sync: bool = True) -> None:
        self.data_dir = data_dir
        self.force_sync = force_sync
        self._fd: int | None = None
        self._buffer = bytearray()
        self._buffered: list[Txn] = []
        self.last_zxid = 0

    @property
    def pending(self) -> int:
        return len(self._buffered)

    def append(self, txn: Txn) -> None:
        if txn.zxid <= self.last_zxid:
            raise ValueError(f"txn {txn.zxid:#x} is not after {self.last_zxid:#x}")
        if self._fd is None:
            if self._buffered:
                raise AssertionError("buffered txns without an open file")
            path = self.data_dir / f"{LOG_PREFIX}{txn.zxid:016x}"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fsync_dir(self.data_dir)
        self._buffer += encode_record(encode_txn(txn))
        self._buffered.append(txn)
        self.last_zxid = txn.zxid

    def commit(self) -> int:
        """Write and fsync everything appended since the last commit; returns how many."""
        if self._fd is None or not self._buffered:
            return 0
        data = bytes(self._buffer)
        pos = 0
        while pos < len(data):
            pos += os.write(self._fd, data[pos:])
        if self.force_sync:
            os.fsync(self._fd)
        count = len(self._buffered)
        self._buffer.clear()
        self._buffered.clear()
        return count

    def roll(self) -> None:
        """Commit, then make the next append start a new file (after a snapshot)."""
        self.commit()
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
