"""Helpers of the log cleaner tests: keyed batches, a model of the log, a consumer's read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from broker.log import Log, LogConfig
from proto.batch import CODEC_NONE, BatchBuilder, BatchHeader, iter_batches, records_of

from .helpers import file_bytes

COMPACT = LogConfig(
    segment_bytes=1024,
    index_interval_bytes=128,
    file_delete_delay_ms=0,
    cleanup_policy="compact",
    min_cleanable_dirty_ratio=0.0,
)

Entry = tuple[bytes | None, bytes | None]  # key, value (None: a tombstone)
Row = tuple[int, bytes | None, bytes | None]  # offset, key, value


def open_log(
    dir: Path, config: LogConfig = COMPACT, *, clean: bool = True, recovery_point: int = 0
) -> Log:
    return Log.open(
        dir / "t-0", "t", 0, config, clean=clean, recovery_point=recovery_point, now_ms=0
    )


def keyed_batch(
    entries: Sequence[Entry],
    *,
    ts: int = 1_000,
    codec: int = CODEC_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    b = BatchBuilder(
        codec, producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence
    )
    for i, (key, value) in enumerate(entries):
        b.append(value, key=key, timestamp_ms=ts + i)
    return b.build()


def append_entries(
    log: Log, entries: Sequence[Entry], model: list[Row], *, ts: int = 1_000, per_batch: int = 3
) -> None:
    """Append ``entries`` in batches of ``per_batch`` records; extend ``model`` with them."""
    for i in range(0, len(entries), per_batch):
        chunk = entries[i : i + per_batch]
        info = log.append(keyed_batch(chunk, ts=ts + i), now_ms=ts)
        model.extend((info.first_offset + j, k, v) for j, (k, v) in enumerate(chunk))


def read_rows(log: Log, *, max_bytes: int = 1 << 20, start: int | None = None) -> list[Row]:
    """Every record from ``start`` (the log start) to the log end through ``Log.read``, as a
    consumer reads: the next read asks for the offset after the last record seen.

    ``Log.read`` does not yet move past an offset gap: asked for an offset inside one, it
    returns the batch before the gap (``test_consumer_read_inside_a_gap``, xfail), which
    holds nothing new when ``max_bytes`` admits only that batch or the gap ends a segment.
    Then this reader asks for the next offset, as if ``Log.read`` had skipped the gap.
    """
    offset = log.log_start_offset if start is None else start
    rows: list[Row] = []
    while offset < log.log_end_offset:
        res = log.read(offset, max_bytes)
        if res.records is None:
            break  # only offset gaps up to the log end
        data = file_bytes(res.records.fd, res.records.position, res.records.size)
        recs = [r for r in records_of(data) if r.offset >= offset]
        if not recs:
            offset += 1
            continue
        rows.extend((r.offset, r.key, r.value) for r in recs)
        offset = recs[-1].offset + 1
    return rows


def compacted(model: Sequence[Row], end: int, *, drop_tombstones: bool = False) -> list[Row]:
    """The model after compacting ``[0, end)``: the last record of each key, keyless records
    gone, tombstones too if ``drop_tombstones``; records from ``end`` on untouched."""
    latest = {k: o for o, k, _v in model if o < end and k is not None}
    return [
        (o, k, v)
        for o, k, v in model
        if o >= end or (k is not None and latest[k] == o and not (drop_tombstones and v is None))
    ]


def all_headers(log: Log) -> list[tuple[int, BatchHeader]]:
    """(segment base, header) of every batch of every segment, from the files."""
    out: list[tuple[int, BatchHeader]] = []
    for base in log.segment_base_offsets:
        data = (log.dir / f"{base:020d}.log").read_bytes()
        out.extend((base, h) for _pos, h in iter_batches(data, validate=True))
    return out
