"""The record batch: minibroker's unit of storage and transfer. Sans-IO.

A batch is a fixed 61-byte big-endian header followed by the records section::

    offset  size  field
    0       8     base_offset          written by the broker
    8       4     length               bytes after this field (header rest + records)
    12      4     leader_epoch         written by the broker
    16      1     magic                = MAGIC
    17      4     crc                  CRC-32C of bytes 21..end (attributes to the end)
    21      2     attributes           bits 0-2: compression codec (0 none, 4 zstd)
    23      4     last_offset_delta    record_count - 1
    27      8     first_timestamp      ms
    35      8     max_timestamp        ms
    43      8     producer_id          -1 when not idempotent
    51      2     producer_epoch
    53      4     base_sequence
    57      4     record_count
    61            records              msgpack objects, one per record, maybe zstd-compressed

Each record is the msgpack array ``[offset_delta, timestamp_delta, key, value, headers]``
with ``headers`` a list of ``[str, bytes]`` pairs. Because the CRC skips base offset and
leader epoch, a broker assigns offsets by patching those two fields in place and never
recomputes the CRC, never decompresses, never looks at a record. That is the whole point:
the broker's cost is per batch, not per record.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import crc32c
import msgpack
import zstandard

from proto.errors import CorruptRecordError

__all__ = [
    "BATCH_OVERHEAD",
    "CODEC_NONE",
    "CODEC_ZSTD",
    "HEADER",
    "MAGIC",
    "BatchBuilder",
    "BatchHeader",
    "Record",
    "decode_records",
    "iter_batches",
    "read_header",
    "set_base_offset",
    "set_leader_epoch",
    "validate_batch",
]

MAGIC = 1
CODEC_NONE = 0
CODEC_ZSTD = 4
CODEC_MASK = 0x07
CODECS = {"none": CODEC_NONE, "zstd": CODEC_ZSTD}

HEADER = struct.Struct(">qiibIhiqqqhii")
BATCH_OVERHEAD = HEADER.size  # 61
LOG_OVERHEAD = 12  # base_offset + length: what precedes the length-counted part
CRC_START = 21
_BASE_OFFSET = struct.Struct(">q")
_LENGTH = struct.Struct(">i")
_EPOCH = struct.Struct(">i")
_EPOCH_POS = 12
_MIN_LENGTH = BATCH_OVERHEAD - LOG_OVERHEAD

_ZSTD_C = zstandard.ZstdCompressor(level=3)
_ZSTD_D = zstandard.ZstdDecompressor()
_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024  # a records section, once decompressed


class BatchHeader(NamedTuple):
    base_offset: int
    length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies, header included."""
        return self.length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header at ``pos`` without validating anything but its presence."""
    if len(buf) - pos < BATCH_OVERHEAD:
        raise CorruptRecordError(f"batch header needs {BATCH_OVERHEAD} bytes at {pos}")
    return BatchHeader._make(HEADER.unpack_from(buf, pos))


def validate_batch(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Check one batch at ``pos``: length, magic, counts and CRC. Never looks at records."""
    h = read_header(buf, pos)
    if h.length < _MIN_LENGTH:
        raise CorruptRecordError(f"batch length {h.length} below minimum {_MIN_LENGTH}")
    end = pos + LOG_OVERHEAD + h.length
    if end > len(buf):
        raise CorruptRecordError(f"batch of {h.size} bytes truncated at {len(buf) - pos}")
    if h.magic != MAGIC:
        raise CorruptRecordError(f"unknown batch magic {h.magic}")
    if h.record_count <= 0 or h.last_offset_delta != h.record_count - 1:
        raise CorruptRecordError(
            f"record count {h.record_count} disagrees with last offset delta {h.last_offset_delta}"
        )
    if h.codec not in (CODEC_NONE, CODEC_ZSTD):
        raise CorruptRecordError(f"unknown compression codec {h.codec}")
    view = memoryview(buf)[pos + CRC_START : end]
    if crc32c.crc32c(view) != h.crc:
        raise CorruptRecordError("batch CRC mismatch")
    return h


def iter_batches(
    buf: bytes | bytearray | memoryview, *, validate: bool = True
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` for each whole batch in ``buf``.

    A partial trailing batch (a fetch cut at max bytes) is ignored when ``validate`` is
    False and raises CorruptRecordError when it is True.
    """
    pos = 0
    n = len(buf)
    while pos < n:
        if validate:
            h = validate_batch(buf, pos)
        else:
            if n - pos < BATCH_OVERHEAD:
                return
            h = read_header(buf, pos)
            if h.length < _MIN_LENGTH or pos + h.size > n:
                return
        yield pos, h
        pos += h.size


def set_base_offset(buf: bytearray | memoryview, base_offset: int, pos: int = 0) -> None:
    _BASE_OFFSET.pack_into(buf, pos, base_offset)


def set_leader_epoch(buf: bytearray | memoryview, epoch: int, pos: int = 0) -> None:
    _EPOCH.pack_into(buf, pos + _EPOCH_POS, epoch)


def decode_records(buf: bytes | bytearray | memoryview, pos: int = 0) -> list[Record]:
    """Decode the records of the (already validated) batch at ``pos``."""
    h = read_header(buf, pos)
    body: bytes | memoryview = memoryview(buf)[pos + BATCH_OVERHEAD : pos + h.size]
    if h.codec == CODEC_ZSTD:
        body = _decompress(body)
    unpacker = msgpack.Unpacker(raw=False, use_list=True)
    unpacker.feed(body)
    base_offset, base_ts = h.base_offset, h.first_timestamp
    out = []
    try:
        for item in unpacker:
            out.append(_record(item, base_offset, base_ts))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptRecordError(f"bad record: {exc}") from exc
    if len(out) != h.record_count:
        raise CorruptRecordError(f"batch says {h.record_count} records, found {len(out)}")
    return out


def _decompress(body: bytes | memoryview) -> bytes:
    # zstd preallocates the content size its frame header declares: check it first, or a
    # 20-byte hostile batch asks for terabytes (MemoryError, not CorruptRecordError).
    try:
        size = zstandard.frame_content_size(body)
        if size > _MAX_DECOMPRESSED_SIZE:
            raise CorruptRecordError(f"zstd content of {size} bytes exceeds the limit")
        data: bytes = _ZSTD_D.decompress(body)
        return data
    except zstandard.ZstdError as exc:
        raise CorruptRecordError(f"zstd: {exc}") from exc


def _record(item: object, base_offset: int, base_ts: int) -> Record:
    """One record; anything but ``[int, int, bytes|nil, bytes|nil, [[str, bytes], ...]]``
    is corrupt, so a consumer never sees a record of the wrong types."""
    if type(item) is not list or len(item) != 5:
        raise CorruptRecordError(f"record must be a 5-element array, got {type(item).__name__}")
    od, td, key, value, headers = item
    if type(od) is not int or type(td) is not int:
        raise CorruptRecordError("record offset and timestamp deltas must be integers")
    if not (key is None or type(key) is bytes) or not (value is None or type(value) is bytes):
        raise CorruptRecordError("record key and value must be bytes or nil")
    if type(headers) is not list:
        raise CorruptRecordError("record headers must be an array")
    pairs = []
    for pair in headers:
        if not (
            type(pair) is list
            and len(pair) == 2
            and type(pair[0]) is str
            and type(pair[1]) is bytes
        ):
            raise CorruptRecordError("record header must be a [str, bytes] pair")
        pairs.append((pair[0], pair[1]))
    return Record(base_offset + od, base_ts + td, key, value, pairs)


class BatchBuilder:
    """Accumulates records for one partition and seals them into one batch.

    ``append`` costs one msgpack pack; ``build`` compresses (if asked) and computes the
    CRC once for the whole batch.
    """

    __slots__ = (
        "_chunks",
        "_codec",
        "_first_ts",
        "_max_ts",
        "_packer",
        "base_sequence",
        "count",
        "producer_epoch",
        "producer_id",
        "size",
    )

    def __init__(
        self,
        codec: int = CODEC_NONE,
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
    ) -> None:
        if codec not in (CODEC_NONE, CODEC_ZSTD):
            raise ValueError(f"unknown codec {codec}")
        self._codec = codec
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._chunks: list[bytes] = []
        self._first_ts = -1
        self._max_ts = -1
        self.count = 0
        self.size = BATCH_OVERHEAD
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence

    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        timestamp_ms: int | None = None,
    ) -> int:
        """Add a record; returns its offset delta within the batch."""
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        if self.count == 0:
            self._first_ts = self._max_ts = ts
        elif ts > self._max_ts:
            self._max_ts = ts
        delta = self.count
        chunk = self._packer.pack(
            [delta, ts - self._first_ts, key, value, [list(h) for h in headers] if headers else []]
        )
        self._chunks.append(chunk)
        self.count += 1
        self.size += len(chunk)
        return delta

    def append_values(
        self, values: Sequence[bytes | None], timestamp_ms: int, key: bytes | None = None
    ) -> int:
        """Add one record per value, all with ``key`` and ``timestamp_ms``, packed in one
        msgpack call. Returns the offset delta of the first."""
        first = self.count
        n = len(values)
        if not n:
            return first
        if first == 0:
            self._first_ts = self._max_ts = timestamp_ms
        elif timestamp_ms > self._max_ts:
            self._max_ts = timestamp_ms
        td = timestamp_ms - self._first_ts
        packed = self._packer.pack([[d, td, key, v, ()] for d, v in enumerate(values, first)])
        # One msgpack array of n records is its header followed by the n records.
        chunk = packed[1 if n < 16 else 3 if n < 0x10000 else 5 :]
        self._chunks.append(chunk)
        self.count += n
        self.size += len(chunk)
        return first

    def build(self) -> bytes:
        if not self.count:
            raise ValueError("cannot build an empty batch")
        body = b"".join(self._chunks)
        if self._codec == CODEC_ZSTD:
            body = _ZSTD_C.compress(body)
        return build_raw(
            body,
            self.count,
            self._first_ts,
            self._max_ts,
            codec=self._codec,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            base_sequence=self.base_sequence,
        )


def build_raw(
    body: bytes,
    record_count: int,
    first_timestamp: int,
    max_timestamp: int,
    *,
    codec: int = CODEC_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    leader_epoch: int = -1,
) -> bytes:
    """Seal an already-encoded (and maybe compressed) records section into a batch."""
    tail = struct.pack(
        ">hiqqqhii",
        codec,
        record_count - 1,
        first_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
    )
    crc = crc32c.crc32c(body, crc32c.crc32c(tail))
    length = BATCH_OVERHEAD - LOG_OVERHEAD + len(body)
    head = struct.pack(">qiibI", base_offset, length, leader_epoch, MAGIC, crc)
    return head + tail + body


def records_of(buf: bytes | bytearray | memoryview) -> Iterator[Record]:
    """Every record of every whole batch in ``buf`` (a fetch response's records)."""
    for pos, _h in iter_batches(buf, validate=True):
        yield from decode_records(buf, pos)
