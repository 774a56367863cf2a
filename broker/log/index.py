"""The sparse offset index and time index of one segment, in memory and in their files.

Both indexes live in ``array`` columns (bisect works on them) and are appended to their
files as they grow, so a clean restart loads them with one read and no scan of the log.
Entries are big-endian like Kafka's:

* ``.index``: relative offset u32 + file position u32 (of a batch start);
* ``.timeindex``: timestamp i64 + relative offset u32 (the batch where the segment's max
  timestamp so far was first reached).

Index files carry no checksum: after an unclean shutdown they are rebuilt from the log,
never trusted. ``sane()`` is the cheap structural check used after a clean shutdown.
This module never reads the log file.
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
from array import array
from bisect import bisect_right
from pathlib import Path

__all__ = ["OffsetIndex", "TimeIndex"]

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_BIG_ENDIAN = sys.byteorder == "big"


def _offset_columns(data: bytes) -> tuple[array[int], array[int]]:
    """Split packed ``>II`` entries into two columns without a per-entry Python loop."""
    both = array("I")
    both.frombytes(data)
    if not _BIG_ENDIAN:
        both.byteswap()
    return both[0::2], both[1::2]


def _time_columns(data: bytes) -> tuple[array[int], array[int]]:
    ts, rel = array("q"), array("I")
    for t, r in TimeIndex.ENTRY.iter_unpack(data):
        ts.append(t)
        rel.append(r)
    return ts, rel


class _IndexFile:
    __slots__ = ("_fd", "_pending", "max_entries", "path")

    ENTRY: struct.Struct

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self._fd = os.open(path, _OPEN_FLAGS, 0o644)
        self._pending = bytearray()
        self.max_entries = max_bytes // self.ENTRY.size

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def is_full(self) -> bool:
        return len(self) >= self.max_entries

    def read_file(self) -> bytes | None:
        """The file's entries, or None when its size is not a whole number of entries."""
        size = os.fstat(self._fd).st_size
        if size % self.ENTRY.size:
            return None
        return os.pread(self._fd, size, 0)

    def write_pending(self) -> None:
        """Append the entries added since the last call to the file (no fsync)."""
        if self._pending:
            data = bytes(self._pending)
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            self._pending.clear()

    def discard_pending(self) -> None:
        self._pending.clear()

    def truncate_file(self, entries: int) -> None:
        self._pending.clear()
        os.ftruncate(self._fd, entries * self.ENTRY.size)

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OffsetIndex(_IndexFile):
    """Relative offset -> position of the batch starting there; sparse."""

    __slots__ = ("positions", "relative_offsets")

    ENTRY = struct.Struct(">II")

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.relative_offsets = array("I")
        self.positions = array("I")

    def __len__(self) -> int:
        return len(self.relative_offsets)

    def append(self, relative_offset: int, position: int) -> None:
        self.relative_offsets.append(relative_offset)
        self.positions.append(position)
        self._pending += self.ENTRY.pack(relative_offset, position)

    def lookup(self, relative_offset: int) -> int:
        """Position of the last indexed batch starting at or before ``relative_offset``."""
        i = bisect_right(self.relative_offsets, relative_offset) - 1
        return self.positions[i] if i >= 0 else 0

    def truncate_to_entries(self, count: int) -> None:
        del self.relative_offsets[count:]
        del self.positions[count:]
        self.truncate_file(count)

    def load(self, log_size: int) -> bool:
        """Read the file into memory; False (and empty) if it fails the sanity check."""
        data = self.read_file()
        if data is not None:
            rel, pos = _offset_columns(data)
            if _increasing(rel) and _increasing(pos) and (not pos or pos[-1] < log_size):
                self.relative_offsets, self.positions = rel, pos
                return True
        self.relative_offsets, self.positions = array("I"), array("I")
        return False


class TimeIndex(_IndexFile):
    """Max timestamp so far -> relative offset of the batch that first reached it."""

    __slots__ = ("relative_offsets", "timestamps")

    ENTRY = struct.Struct(">qI")

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.timestamps = array("q")
        self.relative_offsets = array("I")

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def last_timestamp(self) -> int:
        return self.timestamps[-1] if self.timestamps else -1

    def maybe_append(self, timestamp: int, relative_offset: int, *, force: bool = False) -> None:
        """Add an entry if ``timestamp`` grows the index (and, unless forced, it has room)."""
        if timestamp <= self.last_timestamp or (self.is_full and not force):
            return
        self.timestamps.append(timestamp)
        self.relative_offsets.append(relative_offset)
        self._pending += self.ENTRY.pack(timestamp, relative_offset)

    def lookup(self, timestamp: int) -> int:
        """Relative offset to start a search for ``timestamp`` from (0 if before every entry)."""
        i = bisect_right(self.timestamps, timestamp) - 1
        return self.relative_offsets[i] if i >= 0 else 0

    def truncate_to_entries(self, count: int) -> None:
        del self.timestamps[count:]
        del self.relative_offsets[count:]
        self.truncate_file(count)

    def load(self) -> bool:
        data = self.read_file()
        if data is not None:
            ts, rel = _time_columns(data)
            if _increasing(ts) and all(a <= b for a, b in itertools.pairwise(rel)):
                self.timestamps, self.relative_offsets = ts, rel
                return True
        self.timestamps, self.relative_offsets = array("q"), array("I")
        return False


def _increasing(values: array[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))
