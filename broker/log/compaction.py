"""Log compaction's per-record decisions: the offset map and the rewriting of one batch. Sans-IO.

This is the only place in the storage engine that looks inside record batches; the log
cleaner (``cleaner.py``) feeds it batches read from closed segments and writes what it
returns. Kafka's rules (``LogCleaner.shouldRetainRecord``, KIP-534):

* a record is kept if no later record of the same key is in the offset map (the map holds,
  for each key of the dirty section, the offset of its latest record);
* a record without a key is removed (Kafka counts it as invalid: a compacted topic needs
  keys; refusing them at produce time is the produce path's job, not this module's);
* a tombstone (value ``None``) that is the latest of its key is kept until its batch's
  *delete horizon* has passed. The horizon is set, to ``now + delete.retention.ms``, by the
  first cleaning that keeps the tombstone: the batch is rewritten with attribute bit 6
  (``DELETE_HORIZON_FLAG``) set and the horizon in ``first_timestamp`` (record timestamp
  deltas are rebased on it, so record timestamps do not change). A later cleaning at or
  after the horizon removes the tombstone.

Rewritten batches keep every record's offset. The batch format has no room for holes
(``validate_batch`` wants ``last_offset_delta == record_count - 1``), so a batch that loses
records becomes one batch per run of consecutive surviving offsets, each carrying the
source's leader epoch, producer id and epoch, max timestamp, codec and the base sequence
of its first record (``base_sequence + delta``): sequence arithmetic and the producer
state rebuilt from headers stay right. A batch that loses every record disappears (no
empty batch is kept: the format forbids it; the producer snapshots, taken at each roll
and never in the cleaned range, carry the producer state instead).

A batch whose records are not in the canonical form this project writes (msgpack
``[offset_delta, timestamp_delta, key, value, headers]`` with offset deltas 0..n-1, key
and value bytes or nil) is *opaque*: it is neither indexed nor changed. The broker never
validated records at produce time, so such a batch may exist; it must not stop the
cleaner.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard

from broker.log.producer_state import increment_sequence
from proto.batch import BATCH_OVERHEAD, CODEC_ZSTD, BatchHeader, build_raw

__all__ = [
    "DELETE_HORIZON_FLAG",
    "CleaningCounts",
    "OffsetMap",
    "RawRecord",
    "decode_records",
    "delete_horizon",
    "filter_batch",
]

# Kafka's DefaultRecordBatch DELETE_HORIZON_FLAG_MASK (attribute bit 6, KIP-534).
DELETE_HORIZON_FLAG = 0x40
_ARRAY32 = struct.Struct(">BI")
# Not thread-safe: one cleaning builds at a time (Kafka's default log.cleaner.threads=1).
_ZSTD_C = zstandard.ZstdCompressor(level=3)
_ZSTD_D = zstandard.ZstdDecompressor()
_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024

# (offset delta, timestamp delta, key, value, headers) as msgpack decodes them.
RawRecord = tuple[int, int, bytes | None, bytes | None, Any]


class OffsetMap:
    """Key -> offset of its latest record in the dirty section (Kafka's SkimpyOffsetMap).

    Kafka hashes keys into a fixed buffer and accepts rare collisions; this map keeps the
    keys themselves (exact). ``capacity`` is a soft bound: the cleaner adds no segment
    once the map holds that many keys (so it may pass it by one segment's new keys), and
    cleans the rest in a later pass.
    """

    __slots__ = ("_offsets", "capacity", "latest_offset")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"offset map capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._offsets: dict[bytes, int] = {}
        self.latest_offset = -1

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def full(self) -> bool:
        return len(self._offsets) >= self.capacity

    def put_batch(self, base_offset: int, records: Sequence[RawRecord]) -> None:
        """Record the keys of one batch (records in offset order, the first at ``base_offset``)."""
        n = len(records)
        offsets = self._offsets
        keys: list[Any] = [r[2] for r in records]
        offsets.update(zip(keys, range(base_offset, base_offset + n), strict=True))
        offsets.pop(None, None)  # type: ignore[call-overload]  # keyless records
        if n:
            self.latest_offset = max(self.latest_offset, base_offset + n - 1)

    def get(self, key: bytes) -> int:
        """The latest offset of ``key`` in the dirty section, -1 when it has none there."""
        return self._offsets.get(key, -1)

    @property
    def lookup(self) -> Callable[[bytes, int], int]:
        """``get`` as the dict's own bound method (``lookup(key, -1)``): per-record speed."""
        return self._offsets.get


@dataclass(slots=True)
class CleaningCounts:
    """What a cleaning did to records (Kafka's CleanerStats, the record part)."""

    records_read: int = 0
    records_kept: int = 0
    superseded_removed: int = 0  # an older record of a key with a later one
    tombstones_removed: int = 0  # tombstones past their delete horizon
    keyless_removed: int = 0
    opaque_batches: int = 0  # batches kept as they were: records not decodable
    batches_rewritten: int = 0
    earliest_delete_horizon: int | None = None  # of the tombstones kept, for the next run

    def keep_horizon(self, horizon: int) -> None:
        if self.earliest_delete_horizon is None or horizon < self.earliest_delete_horizon:
            self.earliest_delete_horizon = horizon


def delete_horizon(h: BatchHeader) -> int | None:
    """The batch's delete horizon (ms), None when no cleaning has set one."""
    return h.first_timestamp if h.attributes & DELETE_HORIZON_FLAG else None


def decode_records(buf: bytes | bytearray | memoryview, h: BatchHeader) -> list[RawRecord] | None:
    """The records of the (CRC-checked) batch ``buf``, or None if they are not in canonical
    form: undecodable, the wrong count, offset deltas other than 0..n-1, a key or value
    that is neither bytes nor nil, or a timestamp delta that is not an integer."""
    body: bytes | memoryview = memoryview(buf)[BATCH_OVERHEAD : h.size]
    try:
        if h.codec == CODEC_ZSTD:
            size = zstandard.frame_content_size(body)
            if size > _MAX_DECOMPRESSED_SIZE:
                return None
            body = _ZSTD_D.decompress(body)
        items = msgpack.unpackb(
            _ARRAY32.pack(0xDD, h.record_count) + bytes(body), raw=False, use_list=False
        )
    except (ValueError, TypeError, msgpack.UnpackException, zstandard.ZstdError):
        return None
    if type(items) is not tuple or _types_of(items) != _TUPLE:
        return None
    try:
        # Columns of the records: every record must have the same five fields.
        columns = list(zip(*items, strict=True))
    except ValueError:
        return None
    if len(columns) != 5 or columns[0] != tuple(range(len(items))):
        return None
    if not _types_of(columns[1]) <= _INT or not _types_of(columns[2]) <= _BYTES_OR_NIL:
        return None
    if not _types_of(columns[3]) <= _BYTES_OR_NIL:
        return None
    records: list[RawRecord] = list(items)
    return records


_TUPLE = frozenset({tuple})
_INT = frozenset({int})
_BYTES_OR_NIL = frozenset({bytes, type(None)})


def _types_of(column: tuple[Any, ...]) -> set[type]:
    return set(map(type, column))


def filter_batch(
    h: BatchHeader,
    records: list[RawRecord] | None,
    offsets: OffsetMap,
    *,
    now_ms: int,
    delete_retention_ms: int,
    counts: CleaningCounts,
) -> list[bytes] | None:
    """What replaces the batch with header ``h`` (records as ``decode_records`` gave them)
    in the cleaned log: None to keep it unchanged, else the batches to write instead (an
    empty list when every record goes). Updates ``counts``."""
    if records is None:
        counts.opaque_batches += 1
        return None
    counts.records_read += len(records)
    old_horizon = delete_horizon(h)
    tombstones_expired = old_horizon is not None and now_ms >= old_horizon
    base = h.base_offset
    kept: list[int] = []
    kept_tombstone = False
    latest = offsets.lookup
    for i, rec in enumerate(records):
        key = rec[2]
        if key is None:
            counts.keyless_removed += 1
        elif latest(key, -1) > base + i:
            counts.superseded_removed += 1
        elif rec[3] is None:
            if tombstones_expired:
                counts.tombstones_removed += 1
            else:
                kept.append(i)
                kept_tombstone = True
        else:
            kept.append(i)
    counts.records_kept += len(kept)
    horizon = old_horizon
    if kept_tombstone:
        if horizon is None:
            horizon = now_ms + delete_retention_ms
        counts.keep_horizon(horizon)
    if len(kept) == len(records) and (old_horizon is not None or not kept_tombstone):
        return None  # nothing removed, and every tombstone already carries its horizon
    counts.batches_rewritten += 1
    out: list[bytes] = []
    start = 0
    for j in range(1, len(kept) + 1):
        if j == len(kept) or kept[j] != kept[j - 1] + 1:
            out.append(_build_run(h, records, kept[start:j], horizon))
            start = j
    return out


def _build_run(
    h: BatchHeader, records: list[RawRecord], run: list[int], horizon: int | None
) -> bytes:
    """One batch holding ``records[run]`` (consecutive offsets) at their own offsets."""
    src_first = h.first_timestamp
    has_tombstone = any(records[i][3] is None for i in run)
    flagged = horizon is not None and has_tombstone
    first_ts = horizon if flagged and horizon is not None else src_first + records[run[0]][1]
    shift = src_first - first_ts
    items = [
        [j, rec[1] + shift, rec[2], rec[3], rec[4]] for j, rec in enumerate(records[i] for i in run)
    ]
    n = len(items)
    packed = msgpack.packb(items, use_bin_type=True)
    # One msgpack array of n records is its header followed by the n records.
    body = packed[1 if n < 16 else 3 if n < 0x10000 else 5 :]
    if h.codec == CODEC_ZSTD:
        body = _ZSTD_C.compress(body)
    attributes = h.attributes & ~DELETE_HORIZON_FLAG
    if flagged:
        attributes |= DELETE_HORIZON_FLAG
    first = run[0]
    return build_raw(
        body,
        n,
        first_ts,
        h.max_timestamp,  # kept: under LogAppendTime it is the append time of every record
        codec=attributes,
        producer_id=h.producer_id,
        producer_epoch=h.producer_epoch,
        base_sequence=(
            increment_sequence(h.base_sequence, first) if h.base_sequence >= 0 else h.base_sequence
        ),
        base_offset=h.base_offset + first,
        leader_epoch=h.leader_epoch,
    )
