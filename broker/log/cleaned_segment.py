"""The files of a cleaned segment and how they replace the segments they came from.

Kafka's protocol (``LogCleaner.cleanSegments`` / ``UnifiedLog.replaceSegments``), for one
group of old segments whose first base offset is ``B``:

1. write ``B.log.cleaned``, ``B.index.cleaned``, ``B.timeindex.cleaned`` and fsync them;
2. rename the two indexes to ``.swap``, fsync the directory, then ``B.log.cleaned`` to
   ``B.log.swap`` and fsync the directory again: the existence of ``B.log.swap`` is the
   commit point;
3. rename the old segments' files to ``*.deleted`` (their fds stay open for readers);
4. rename the ``.swap`` files to their final names (the log last) and fsync the directory.

``complete_swaps``, run when a partition is opened and before its segments are loaded,
finishes whatever a crash interrupted: ``*.cleaned`` files, and index ``.swap`` files
without their ``.log.swap``, are removed (the old segments are intact, the cleaning
simply did not happen); for each ``B.log.swap`` the indexes are
rebuilt from it (whatever state the index renames were in), the old segments it replaces
(base offsets from ``B`` to its last offset, Kafka's rule) are removed and the swap is
renamed into place. Either way the log that is loaded is consistent: the old segments, or
the cleaned one, never a mix that loses or repeats an offset.

This module never decides what to keep; ``compaction.py`` does that.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broker.log.checkpoint import fsync_dir
from broker.log.config import LogConfig
from broker.log.index import OffsetIndex, TimeIndex
from broker.log.segment import LogSegment, segment_name
from proto.batch import BATCH_OVERHEAD, BatchHeader, read_header, validate_batch
from proto.errors import CorruptRecordError, KafkaStorageError

__all__ = [
    "CLEANED_SUFFIX",
    "SWAP_SUFFIX",
    "CleanedSegmentWriter",
    "commit_swap",
    "complete_swaps",
    "install_swap",
    "iter_file_batches",
    "open_installed",
]

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
_KINDS = (".log", ".index", ".timeindex")
_WRITE_CHUNK = 1024 * 1024
_READ_CHUNK = 4 * 1024 * 1024
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _path(dir: Path, base: int, kind: str, suffix: str = "") -> Path:
    return dir / f"{segment_name(base)}{kind}{suffix}"


class _Indexer:
    """Sparse offset and time index entries for batches written in order: the same rule
    as ``LogSegment._index_batch`` (Kafka's), so a cleaned segment loads like any other."""

    __slots__ = (
        "base",
        "interval",
        "max_timestamp",
        "offset_index",
        "since",
        "time_index",
        "ts_at",
    )

    def __init__(self, base: int, interval: int, offset_index: OffsetIndex, time_index: TimeIndex):
        self.base, self.interval = base, interval
        self.offset_index, self.time_index = offset_index, time_index
        self.max_timestamp = -1
        self.ts_at = base  # offset of the batch that first reached max_timestamp
        self.since = 0

    def add(self, position: int, h: BatchHeader) -> None:
        if h.max_timestamp > self.max_timestamp:
            self.max_timestamp, self.ts_at = h.max_timestamp, h.base_offset
        if self.since > self.interval:
            if not self.offset_index.is_full:
                self.offset_index.append(h.base_offset - self.base, position)
            self.time_index.maybe_append(self.max_timestamp, self.ts_at - self.base)
            self.since = 0
        self.since += h.size

    def seal(self) -> None:
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.ts_at - self.base, force=True)
        self.offset_index.write_pending()
        self.time_index.write_pending()


class CleanedSegmentWriter:
    """Writes ``<base>.log.cleaned`` and its two indexes; ``finish`` fsyncs and closes them,
    ``abort`` removes them. Batches must come in offset order."""

    def __init__(self, dir: Path, base_offset: int, config: LogConfig) -> None:
        self.dir = dir
        self.base_offset = base_offset
        self.paths = [_path(dir, base_offset, kind, CLEANED_SUFFIX) for kind in _KINDS]
        for path in self.paths:
            path.unlink(missing_ok=True)  # a leftover of an interrupted cleaning
        self._fd = os.open(self.paths[0], _CREATE, 0o644)
        self._offset_index: OffsetIndex | None = None
        self._time_index: TimeIndex | None = None
        try:
            self._offset_index = OffsetIndex(self.paths[1], config.segment_index_bytes)
            self._time_index = TimeIndex(self.paths[2], config.segment_index_bytes)
        except OSError:
            self.abort()
            raise
        self._indexer = _Indexer(
            base_offset, config.index_interval_bytes, self._offset_index, self._time_index
        )
        self._buf = bytearray()
        self.size = 0
        self.batches = 0

    def append(self, batch: bytes | memoryview, h: BatchHeader) -> None:
        self._indexer.add(self.size, h)
        self._buf += batch
        self.size += h.size
        self.batches += 1
        if len(self._buf) >= _WRITE_CHUNK:
            self._write_buffer()

    def _write_buffer(self) -> None:
        with memoryview(self._buf) as view:
            written = 0
            while written < len(view):
                written += os.write(self._fd, view[written:])
        self._buf.clear()

    def finish(self, *, mtime_ms: int) -> None:
        """Write the rest, seal the time index, fsync and close all three files. The log
        file's mtime becomes ``mtime_ms`` (its sources' age, as Kafka does), which is the
        age retention sees if the segment ends up with no timestamps at all."""
        assert self._offset_index is not None and self._time_index is not None
        self._write_buffer()
        self._indexer.seal()
        os.fsync(self._fd)
        self._offset_index.fsync()
        self._time_index.fsync()
        self._close()
        if mtime_ms >= 0:
            os.utime(self.paths[0], ns=(mtime_ms * 1_000_000, mtime_ms * 1_000_000))

    def close(self) -> None:
        """Close the files without removing them (``abort`` removes them too)."""
        self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for index in (self._offset_index, self._time_index):
            if index is not None:
                index.close()

    def abort(self) -> None:
        self._close()
        for path in self.paths:
            path.unlink(missing_ok=True)


def commit_swap(dir: Path, base: int) -> None:
    """Step 2: ``.cleaned`` -> ``.swap``, the log file last (the commit point)."""
    for kind in (".index", ".timeindex"):
        os.replace(_path(dir, base, kind, CLEANED_SUFFIX), _path(dir, base, kind, SWAP_SUFFIX))
    fsync_dir(dir)
    os.replace(_path(dir, base, ".log", CLEANED_SUFFIX), _path(dir, base, ".log", SWAP_SUFFIX))
    fsync_dir(dir)


def install_swap(dir: Path, base: int) -> None:
    """Step 4, after the old segments' files were renamed away: ``.swap`` -> final names."""
    for kind in (".index", ".timeindex", ".log"):
        os.replace(_path(dir, base, kind, SWAP_SUFFIX), _path(dir, base, kind))
    fsync_dir(dir)


def iter_file_batches(fd: int, size: int) -> Iterator[tuple[int, BatchHeader, memoryview]]:
    """``(position, header, bytes)`` of every batch of a segment file, CRC-checked, read in
    4 MiB chunks. A torn or corrupt batch raises ``CorruptRecordError``."""
    chunk = b""
    chunk_start = 0
    pos = 0
    while pos < size:
        rel = pos - chunk_start
        if len(chunk) - rel < BATCH_OVERHEAD:
            chunk, chunk_start, rel = os.pread(fd, min(_READ_CHUNK, size - pos), pos), pos, 0
        h = read_header(chunk, rel)
        if h.size < BATCH_OVERHEAD or pos + h.size > size:
            raise CorruptRecordError(f"bad batch of {h.size} bytes at {pos} of {size}")
        if len(chunk) - rel < h.size:
            chunk, chunk_start, rel = os.pread(fd, max(_READ_CHUNK, h.size), pos), pos, 0
        view = memoryview(chunk)[rel : rel + h.size]
        validate_batch(view)
        yield pos, h, view
        pos += h.size


def complete_swaps(dir: Path, config: LogConfig, log: Any) -> int:
    """Finish or roll back cleanings a crash interrupted in ``dir`` (before loading its
    segments); returns how many swaps were completed. ``log``: a bound structlog logger."""
    names = os.listdir(dir)
    for name in names:
        if name.endswith(CLEANED_SUFFIX):
            os.unlink(dir / name)
    bases = sorted(_segment_bases(names, ".log"))
    swaps = sorted(_segment_bases(names, ".log" + SWAP_SUFFIX))
    for kind in (".index", ".timeindex"):
        for base in _segment_bases(names, kind + SWAP_SUFFIX):
            if base not in swaps:  # renamed before a crash, but the log was not: no commit
                _path(dir, base, kind, SWAP_SUFFIX).unlink()
    for base in swaps:
        last = _rebuild_swap_indexes(dir, base, config)
        if last is None:
            # A swap that fails its CRC was never committed intact: keep the old segments
            # if they are all still there, else there is nothing consistent to load.
            if base not in bases:
                raise KafkaStorageError(f"{dir}: corrupt {segment_name(base)}.log.swap")
            for kind in _KINDS:
                _path(dir, base, kind, SWAP_SUFFIX).unlink(missing_ok=True)
            log.warning("cleaned_segment_discarded", base_offset=base)
            continue
        replaced = [b for b in bases if base <= b <= max(base, last)]
        for old in replaced:
            for kind in _KINDS:
                _path(dir, old, kind).unlink(missing_ok=True)
        install_swap(dir, base)
        log.info("cleaned_segment_swapped_in", base_offset=base, replaced=len(replaced))
    if swaps:
        fsync_dir(dir)
    return len(swaps)


def _segment_bases(names: list[str], suffix: str) -> Iterator[int]:
    for name in names:
        stem = name[:20]
        if len(name) == 20 + len(suffix) and name.endswith(suffix) and stem.isdigit():
            yield int(stem)


def _rebuild_swap_indexes(dir: Path, base: int, config: LogConfig) -> int | None:
    """Rewrite ``B.index.swap`` / ``B.timeindex.swap`` from ``B.log.swap``; the swap's last
    offset (``base - 1`` when empty), or None when it is corrupt."""
    for kind in (".index", ".timeindex"):
        _path(dir, base, kind, SWAP_SUFFIX).unlink(missing_ok=True)
    offset_index = OffsetIndex(_path(dir, base, ".index", SWAP_SUFFIX), config.segment_index_bytes)
    time_index = TimeIndex(_path(dir, base, ".timeindex", SWAP_SUFFIX), config.segment_index_bytes)
    fd = os.open(_path(dir, base, ".log", SWAP_SUFFIX), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        indexer = _Indexer(base, config.index_interval_bytes, offset_index, time_index)
        last = base - 1
        try:
            for pos, h, _view in iter_file_batches(fd, os.fstat(fd).st_size):
                if h.base_offset <= last:
                    raise CorruptRecordError(f"offset {h.base_offset} not above {last}")
                indexer.add(pos, h)
                last = h.last_offset
        except CorruptRecordError:
            return None
        indexer.seal()
        offset_index.fsync()
        time_index.fsync()
        return last
    finally:
        os.close(fd)
        offset_index.close()
        time_index.close()


def open_installed(dir: Path, base: int, config: LogConfig) -> LogSegment:
    """The ``LogSegment`` of a cleaned segment just renamed into place (the ``Log`` sets its
    ``next_offset``: the next segment's base offset)."""
    seg = LogSegment(
        dir,
        base,
        index_bytes=config.segment_index_bytes,
        index_interval_bytes=config.index_interval_bytes,
        now_ms=0,  # a closed segment: never rolled, its creation time is unused
    )
    seg.load_indexes()  # False only for a segment without timestamps: in memory it is fine
    return seg
