"""Fetched data on the consumer side: per-partition state and the tight record decoder.

``decode_batch`` turns one validated record batch into ConsumerRecord tuples. It is
~4x faster than ``proto.batch.decode_records``: one ``msgpack.unpackb`` call over the
records section behind a synthetic array header, and tuples built with
``tuple.__new__`` rather than a dataclass per record (measured: ~175 vs ~765 ns/record
for 100-byte values). ``CompletedFetch`` holds the raw bytes of one partition's fetch
response and decodes them a batch at a time as ``poll()`` asks for records.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

import msgpack
import zstandard

from client.errors import CorruptRecordError, MinibrokerError
from client.types import ConsumerRecord, TopicPartition
from proto.batch import BATCH_OVERHEAD, CODEC_ZSTD, BatchHeader, read_header, validate_batch

__all__ = ["CompletedFetch", "PartitionState", "decode_batch", "scan_batches"]

_ARRAY32 = struct.Struct(">BI")
_ZSTD_D = zstandard.ZstdDecompressor()
_new = tuple.__new__


def decode_batch(
    buf: bytes, pos: int, h: BatchHeader, topic: str, partition: int
) -> list[ConsumerRecord]:
    """The records of the (validated) batch at ``pos`` as ConsumerRecords."""
    body = buf[pos + BATCH_OVERHEAD : pos + h.size]
    if h.codec == CODEC_ZSTD:
        try:
            body = _ZSTD_D.decompress(body)
        except zstandard.ZstdError as exc:
            raise CorruptRecordError(f"zstd: {exc}") from exc
    try:
        items = msgpack.unpackb(
            _ARRAY32.pack(0xDD, h.record_count) + body, raw=False, use_list=False
        )
        base, ts = h.base_offset, h.first_timestamp
        cr = ConsumerRecord
        return [
            _new(cr, (topic, partition, base + od, ts + td, k, v, hd)) for od, td, k, v, hd in items
        ]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptRecordError(f"bad record in batch at offset {h.base_offset}: {exc}") from exc


def scan_batches(buf: bytes) -> int:
    """The offset after the last whole batch in ``buf`` (-1 if none is whole)."""
    pos, n, end = 0, len(buf), -1
    while n - pos >= BATCH_OVERHEAD:
        h = read_header(buf, pos)
        if pos + h.size > n or h.size < BATCH_OVERHEAD:
            break
        end = h.next_offset
        pos += h.size
    return end


class CompletedFetch:
    """One partition's records from one fetch response, decoded lazily."""

    __slots__ = ("_buf", "_pos", "_rec_idx", "_records", "end_offset", "epoch", "tp")

    def __init__(self, tp: TopicPartition, buf: bytes, epoch: int, end_offset: int) -> None:
        self.tp = tp
        self.epoch = epoch
        self.end_offset = end_offset
        self._buf = buf
        self._pos = 0
        self._records: list[ConsumerRecord] = []
        self._rec_idx = 0

    def take(self, n: int, position: int) -> list[ConsumerRecord]:
        """Up to ``n`` records at or after ``position``; fewer when exhausted."""
        out: list[ConsumerRecord] = []
        while len(out) < n:
            idx = self._rec_idx
            if idx < len(self._records):
                chunk = self._records[idx : idx + n - len(out)]
                self._rec_idx = idx + len(chunk)
                if out:
                    out.extend(chunk)
                else:
                    out = chunk
                continue
            if not self._next_batch(position):
                break
        return out

    @property
    def exhausted(self) -> bool:
        return self._rec_idx >= len(self._records) and self._pos >= len(self._buf)

    def _next_batch(self, position: int) -> bool:
        buf, pos = self._buf, self._pos
        while len(buf) - pos >= BATCH_OVERHEAD:
            h = read_header(buf, pos)
            if pos + h.size > len(buf):
                break  # a partial batch at the end of a size-limited fetch
            validate_batch(buf, pos)
            self._pos = pos = pos + h.size
            if h.next_offset <= position:
                continue
            records = decode_batch(buf, pos - h.size, h, self.tp.topic, self.tp.partition)
            if len(records) != h.record_count:
                raise CorruptRecordError(
                    f"batch says {h.record_count} records, found {len(records)}"
                )
            if records[0].offset < position:
                records = [r for r in records if r.offset >= position]
            self._records = records
            self._rec_idx = 0
            return True
        self._pos = len(buf)
        return False


class PartitionState:
    """What the consumer knows about one assigned partition.

    ``position`` is the next offset ``poll()`` returns (None: reset per
    auto_offset_reset before fetching); ``fetch_offset`` is the next offset to fetch,
    ahead of ``position`` while fetched data waits in ``completed``. ``epoch`` changes
    on every seek, so responses to fetches sent before it are dropped.
    """

    __slots__ = (
        "completed",
        "epoch",
        "error",
        "fetch_offset",
        "high_watermark",
        "in_flight",
        "log_start_offset",
        "paused",
        "position",
        "reset_to",
        "retry_at",
    )

    def __init__(self) -> None:
        self.position: int | None = None
        self.fetch_offset = -1
        self.epoch = 0
        self.completed: deque[CompletedFetch] = deque()
        self.in_flight = False
        self.high_watermark = -1
        self.log_start_offset = -1
        self.error: MinibrokerError | None = None
        self.paused = False
        self.reset_to: Any = None  # a timestamp sentinel, or None: use auto_offset_reset
        self.retry_at = 0.0

    def seek(self, offset: int) -> None:
        self.position = offset
        self.fetch_offset = offset
        self.epoch += 1
        self.completed.clear()
        self.error = None

    def reset(self) -> None:
        """Forget the position: it is looked up again per auto_offset_reset."""
        self.position = None
        self.epoch += 1
        self.completed.clear()
