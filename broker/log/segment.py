"""One log segment: a ``.log`` file of record batches plus its two sparse indexes.

The segment owns its file descriptor for as long as it exists (reads hand out slices of it
as ``FileRecords`` for ``sendfile``). It works per batch, never per record: appends write
already-validated bytes with one ``write``, reads walk batch headers with small ``pread``
calls from the nearest index entry, and recovery validates batch by batch. It never
decides *when* to roll, flush or delete: that is the ``Log``'s job.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.log.index import OffsetIndex, TimeIndex
from proto.batch import (
    BATCH_OVERHEAD,
    LOG_OVERHEAD,
    BatchHeader,
    decode_records,
    read_header,
    validate_batch,
)
from proto.codec import FileRecords
from proto.errors import CorruptRecordError, KafkaStorageError

__all__ = [
    "BatchMeta",
    "LogSegment",
    "ScanResult",
    "headers_from",
    "last_header",
    "segment_name",
]

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_OFFSET_AND_LENGTH = struct.Struct(">qi")
# base offset, length, leader epoch, magic, crc, attributes, last offset delta
_HEAD = struct.Struct(">qiibIhi")
_MIN_LENGTH = BATCH_OVERHEAD - LOG_OVERHEAD
_SCAN_CHUNK = 4 * 1024 * 1024
_HEADER_CHUNK = 64 * 1024
MAX_RELATIVE_OFFSET = 2**32 - 1
DELETED_SUFFIX = ".deleted"


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


@dataclass(frozen=True, slots=True)
class BatchMeta:
    """What the segment needs to know about one batch it appends (position in the buffer)."""

    position: int
    base_offset: int
    size: int
    max_timestamp: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    valid_bytes: int  # file position after the last good batch
    truncated_bytes: int  # bytes cut from the file (0 when the whole file was good)
    scanned_bytes: int
    reason: str | None  # why the scan stopped early, None when it reached the end


class LogSegment:
    __slots__ = (
        "_bytes_since_index",
        "base_offset",
        "created_ms",
        "dir",
        "fd",
        "index_files_existed",
        "index_interval_bytes",
        "max_timestamp",
        "next_offset",
        "offset_index",
        "offset_of_max_timestamp",
        "size",
        "time_index",
    )

    def __init__(
        self,
        dir: Path,
        base_offset: int,
        *,
        index_bytes: int,
        index_interval_bytes: int,
        now_ms: int,
    ) -> None:
        self.dir = dir
        self.base_offset = base_offset
        name = segment_name(base_offset)
        self.fd = os.open(dir / f"{name}.log", _OPEN_FLAGS, 0o644)
        self.index_files_existed = all(
            (dir / f"{name}{suffix}").exists() for suffix in (".index", ".timeindex")
        )
        try:
            self.offset_index = OffsetIndex(dir / f"{name}.index", index_bytes)
            self.time_index = TimeIndex(dir / f"{name}.timeindex", index_bytes)
        except OSError:
            os.close(self.fd)
            raise
        self.size = os.fstat(self.fd).st_size
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = now_ms
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.next_offset = base_offset  # exact once loaded, recovered or appended to
        self._bytes_since_index = 0

    def __repr__(self) -> str:
        return f"<LogSegment {self.dir.name}/{segment_name(self.base_offset)} size={self.size}>"

    @property
    def largest_timestamp(self) -> int:
        """The age retention.ms uses: the max batch timestamp, or (when batches carry no
        timestamps, -1) the file's modification time, as in Kafka."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        return os.fstat(self.fd).st_mtime_ns // 1_000_000

    @property
    def log_path(self) -> Path:
        return self.dir / f"{segment_name(self.base_offset)}.log"

    def paths(self) -> list[Path]:
        return [self.log_path, self.offset_index.path, self.time_index.path]

    # --- appending ----------------------------------------------------------------------

    def append(self, buf: bytes | bytearray, batches: list[BatchMeta], next_offset: int) -> None:
        """Write ``buf`` (whole batches, offsets assigned) and index them.

        On an I/O error the file and indexes are cut back to where they were and the
        OSError propagates; the segment stays consistent.
        """
        old_size, old_offsets, old_times = self.size, len(self.offset_index), len(self.time_index)
        old_state = (self.max_timestamp, self.offset_of_max_timestamp, self._bytes_since_index)
        try:
            _write_all(self.fd, buf)
            for b in batches:
                self._index_batch(old_size + b.position, b.base_offset, b.size, b.max_timestamp)
            self.offset_index.write_pending()
            self.time_index.write_pending()
        except OSError:
            self.max_timestamp, self.offset_of_max_timestamp, self._bytes_since_index = old_state
            self.offset_index.truncate_to_entries(old_offsets)
            self.time_index.truncate_to_entries(old_times)
            os.ftruncate(self.fd, old_size)
            raise
        self.size = old_size + len(buf)
        self.next_offset = next_offset

    def _index_batch(self, position: int, base_offset: int, size: int, max_ts: int) -> None:
        # Kafka's LogSegment.append: an entry once more than index.interval.bytes were
        # written since the last one, pointing at the batch that crosses the interval.
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self.offset_of_max_timestamp = base_offset
        if self._bytes_since_index > self.index_interval_bytes:
            if not self.offset_index.is_full:
                self.offset_index.append(base_offset - self.base_offset, position)
            self.time_index.maybe_append(
                self.max_timestamp, self.offset_of_max_timestamp - self.base_offset
            )
            self._bytes_since_index = 0
        self._bytes_since_index += size

    def seal(self) -> None:
        """Record the max timestamp in the time index (on roll and close), as Kafka does."""
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(
                self.max_timestamp, self.offset_of_max_timestamp - self.base_offset, force=True
            )
            self.time_index.write_pending()

    # --- reading ------------------------------------------------------------------------

    def _head(self, position: int) -> tuple[int, int, int]:
        """(base offset, total size, next offset) of the batch at ``position``: one
        27-byte pread (up to the last offset delta)."""
        raw = os.pread(self.fd, _HEAD.size, position)
        if len(raw) < _HEAD.size:
            raise KafkaStorageError(f"{self!r}: short batch header at {position}")
        base, length, _epoch, _magic, _crc, _attrs, last_delta = _HEAD.unpack(raw)
        if length < _MIN_LENGTH:
            raise KafkaStorageError(f"{self!r}: bad batch length {length} at {position}")
        return base, length + LOG_OVERHEAD, base + last_delta + 1

    def read(self, offset: int, max_bytes: int, max_offset: int) -> FileRecords | None:
        """Whole batches from the first one ending after ``offset``, within ``max_bytes``
        (but at least one batch), none reaching ``max_offset`` (exclusive). A compacted
        segment has offset gaps: ``offset`` may fall between two batches or after the last
        one (then None: the next segment has it)."""
        end = self.size
        pos = self.offset_index.lookup(offset - self.base_offset)
        if pos >= end:
            return None
        _base, size, batch_end = self._head(pos)
        nxt = pos + size
        while batch_end <= offset:
            if nxt >= end:
                return None
            pos = nxt
            _base, size, batch_end = self._head(pos)
            nxt = pos + size
        start, total = pos, 0
        while batch_end <= max_offset and (total == 0 or total + size <= max_bytes):
            total += size
            if nxt >= end:
                break
            pos = nxt
            _base, size, batch_end = self._head(pos)
            nxt = pos + size
        return FileRecords(self.fd, start, total) if total else None

    def find_timestamp(self, timestamp: int, *, per_record: bool = True) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``, as
        Kafka's ListOffsets answers: the time index finds the batch, then that one batch is
        decoded (the only place outside compaction where the broker reads records, and off
        the produce/fetch path). ``per_record`` False (LogAppendTime: every record has the
        batch's max timestamp): the batch's base offset and max timestamp."""
        rel = self.time_index.lookup(timestamp)
        for pos, h in self._walk_headers(self.offset_index.lookup(rel)):
            if h.max_timestamp < timestamp:
                continue
            if per_record and h.record_count > 1:
                buf = os.pread(self.fd, h.size, pos)
                for record in decode_records(buf):
                    if record.timestamp >= timestamp:
                        return record.offset, record.timestamp
            return h.base_offset, h.max_timestamp
        return None

    def last_header(self) -> BatchHeader | None:
        """The last batch's header (walked from the last index entry), None when empty."""
        positions = self.offset_index.positions
        last = None
        for _pos, h in self._walk_headers(positions[-1] if positions else 0):
            last = h
        return last

    def walk_headers(self, position: int) -> Iterator[tuple[int, BatchHeader]]:
        """Like ``_walk_headers`` but reading ``_HEADER_CHUNK`` bytes at a time, for long
        walks (recovery of the epoch cache and producer state): small batches then cost
        a fraction of a syscall each, big ones one ``pread`` each as before."""
        buf = b""
        buf_start = position
        while position < self.size:
            rel = position - buf_start
            if len(buf) - rel < BATCH_OVERHEAD:
                buf = os.pread(self.fd, min(_HEADER_CHUNK, self.size - position), position)
                buf_start, rel = position, 0
            h = read_header(buf, rel)
            if h.length < _MIN_LENGTH:
                raise KafkaStorageError(f"{self!r}: bad batch length {h.length} at {position}")
            yield position, h
            position += h.size

    def _walk_headers(self, position: int) -> Iterator[tuple[int, BatchHeader]]:
        """Full headers (61 bytes each, no CRC check) from ``position`` to the end."""
        while position < self.size:
            raw = os.pread(self.fd, BATCH_OVERHEAD, position)
            h = read_header(raw)
            if h.length < _MIN_LENGTH:
                raise KafkaStorageError(f"{self!r}: bad batch length {h.length} at {position}")
            yield position, h
            position += h.size

    # --- loading and recovery -----------------------------------------------------------

    def load_indexes(self) -> bool:
        """Load both index files into memory; False if either fails its sanity check."""
        ok_offsets = self.offset_index.load(self.size)
        ok_times = self.time_index.load()
        if self.time_index.timestamps:
            self.max_timestamp = self.time_index.timestamps[-1]
            self.offset_of_max_timestamp = self.base_offset + self.time_index.relative_offsets[-1]
        # A closed non-empty segment always has a time index entry (``seal``).
        sealed = self.size == 0 or bool(self.time_index.timestamps)
        return ok_offsets and ok_times and sealed and self.index_files_existed

    def first_batch_timestamp(self) -> int | None:
        """Max timestamp of the segment's first batch (one pread), None when empty."""
        for _pos, h in self._walk_headers(0):
            return h.max_timestamp
        return None

    def check_tail(self) -> bool:
        """Cheap check of a cleanly closed segment: walk headers from the last index entry
        to the end (they must land exactly on it) and validate the last batch's CRC. Sets
        ``next_offset``, the max timestamp and the index cursor from what it saw."""
        positions = self.offset_index.positions
        start = positions[-1] if positions else 0
        last: tuple[int, BatchHeader] | None = None
        bytes_after_index = 0
        try:
            for pos, h in self._walk_headers(start):
                if pos + h.size > self.size:
                    return False
                if h.max_timestamp > self.max_timestamp:
                    self.max_timestamp = h.max_timestamp
                    self.offset_of_max_timestamp = h.base_offset
                bytes_after_index += h.size
                last = pos, h
        except (KafkaStorageError, CorruptRecordError):
            return False
        if last is None:
            self.next_offset = self.base_offset
            return self.size == 0
        pos, h = last
        try:
            validate_batch(os.pread(self.fd, h.size, pos))
        except CorruptRecordError:
            return False
        self.next_offset = h.next_offset
        # Bytes since the last index entry (its batch included), as _index_batch counts.
        self._bytes_since_index = bytes_after_index
        return True

    def recover(self, *, validate: bool = True, allow_gaps: bool = False) -> ScanResult:
        """Rebuild both indexes by scanning every batch; cut the file at the first torn or
        corrupt batch (or, with ``validate`` False, only at a torn one)."""
        self.offset_index.truncate_to_entries(0)
        self.time_index.truncate_to_entries(0)
        self.max_timestamp = -1
        self.offset_of_max_timestamp = self.base_offset
        self._bytes_since_index = 0
        expected = self.base_offset
        scan = _Scanner(self.fd, self.size, validate)
        for pos, h in scan:
            # Offsets are contiguous, except in a compacted (closed) segment: they only grow.
            if h.base_offset < expected or (h.base_offset != expected and not allow_gaps):
                scan.reason = f"batch at {pos} has base offset {h.base_offset}, expected {expected}"
                scan.valid_bytes = pos
                break
            self._index_batch(pos, h.base_offset, h.size, h.max_timestamp)
            expected = h.next_offset
        self.next_offset = expected
        self.offset_index.write_pending()
        self.time_index.write_pending()
        truncated = self.size - scan.valid_bytes
        if truncated:
            os.ftruncate(self.fd, scan.valid_bytes)
            self.size = scan.valid_bytes
        return ScanResult(scan.valid_bytes, truncated, scan.scanned_bytes, scan.reason)

    def truncate_to_offset(self, offset: int) -> int:
        """Drop every batch from the one containing ``offset`` on; returns bytes cut."""
        cut = self.size
        for pos, h in self._walk_headers(self.offset_index.lookup(offset - self.base_offset)):
            if h.next_offset > offset:
                cut = pos
                break
        removed = self.size - cut
        os.ftruncate(self.fd, cut)
        self.size = cut
        self.recover(validate=False, allow_gaps=True)
        return removed

    # --- lifecycle ----------------------------------------------------------------------

    def fsync(self) -> None:
        os.fsync(self.fd)
        self.offset_index.fsync()
        self.time_index.fsync()

    def rename_for_delete(self) -> None:
        """Rename the files to ``*.deleted``; the fd stays open for in-flight readers."""
        for path in self.paths():
            os.replace(path, path.with_name(path.name + DELETED_SUFFIX))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.offset_index.close()
        self.time_index.close()

    def unlink(self, *, deleted: bool) -> None:
        for path in self.paths():
            target = path.with_name(path.name + DELETED_SUFFIX) if deleted else path
            target.unlink(missing_ok=True)


def headers_from(segments: Sequence[LogSegment], offset: int) -> Iterator[BatchHeader]:
    """Headers of the batches of ``segments`` (sorted, contiguous) from the one containing
    ``offset`` on: a 61-byte ``pread`` each, from the offset index floor."""
    first = max(0, bisect.bisect_right([s.base_offset for s in segments], offset) - 1)
    for i, seg in enumerate(segments[first:]):
        start = seg.offset_index.lookup(offset - seg.base_offset) if i == 0 else 0
        for _pos, h in seg.walk_headers(start):
            if h.next_offset > offset:
                yield h


def last_header(segments: Sequence[LogSegment]) -> BatchHeader | None:
    """The header of the last batch of ``segments``, None when they are all empty."""
    for seg in reversed(segments):
        h = seg.last_header()
        if h is not None:
            return h
    return None


class _Scanner:
    """Iterate ``(position, header)`` over the batches of a file with large chunked reads,
    stopping at the first torn (or, when validating, corrupt) batch."""

    def __init__(self, fd: int, size: int, validate: bool) -> None:
        self.fd, self.size, self.validate = fd, size, validate
        self.valid_bytes = 0
        self.scanned_bytes = 0
        self.reason: str | None = None

    def __iter__(self) -> Iterator[tuple[int, BatchHeader]]:
        chunk = b""
        chunk_start = 0
        pos = 0
        while pos < self.size:
            rel = pos - chunk_start
            if len(chunk) - rel < BATCH_OVERHEAD:
                chunk, chunk_start, rel = os.pread(self.fd, _SCAN_CHUNK, pos), pos, 0
                self.scanned_bytes += len(chunk)
            if len(chunk) - rel < BATCH_OVERHEAD:
                self.reason = f"torn batch header at {pos}"
                return
            h = read_header(chunk, rel)
            if h.length < _MIN_LENGTH:
                self.reason = f"bad batch length {h.length} at {pos}"
                return
            if pos + h.size > self.size:
                self.reason = f"torn batch of {h.size} bytes at {pos}"
                return
            if self.validate:
                if len(chunk) - rel < h.size:
                    chunk = os.pread(self.fd, max(_SCAN_CHUNK, h.size), pos)
                    chunk_start, rel = pos, 0
                    self.scanned_bytes += len(chunk)
                try:
                    validate_batch(memoryview(chunk)[rel : rel + h.size])
                except CorruptRecordError as exc:
                    self.reason = f"corrupt batch at {pos}: {exc.message}"
                    return
            yield pos, h
            pos += h.size
            self.valid_bytes = pos


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.write(fd, view[written:])
