"""Shared helpers of the storage tests: building batches, simulating a crash."""

from __future__ import annotations

import os
from pathlib import Path

from broker.log import Log, LogConfig
from proto.batch import BatchBuilder, iter_batches, records_of

SMALL = LogConfig(segment_bytes=4096, index_interval_bytes=256, file_delete_delay_ms=1000)


def make_batch(count: int = 10, *, value_size: int = 20, ts: int = 1_000, tag: int = 0) -> bytes:
    """A batch of ``count`` records; value i is ``tag:i`` padded to ``value_size`` bytes."""
    b = BatchBuilder()
    for i in range(count):
        b.append(f"{tag}:{i}".encode().ljust(value_size, b"."), key=None, timestamp_ms=ts + i)
    return b.build()


def crash(log: Log) -> None:
    """Drop the log as a killed process would: close fds, no seal, no flush, no marker."""
    log._close_files(unlink_pending=False)


def read_all(log: Log, start: int | None = None, max_bytes: int = 1 << 20) -> list[bytes | None]:
    """Every record value from ``start`` to the end, following segment boundaries."""
    offset = log.log_start_offset if start is None else start
    values: list[bytes | None] = []
    while offset < log.log_end_offset:
        res = log.read(offset, max_bytes)
        assert res.records is not None
        data = file_bytes(res.records.fd, res.records.position, res.records.size)
        recs = [r for r in records_of(data) if r.offset >= offset]
        assert recs and recs[0].offset == offset
        values.extend(r.value for r in recs)
        offset = recs[-1].offset + 1
    return values


def file_bytes(fd: int, position: int, size: int) -> bytes:
    data = os.pread(fd, size, position)
    assert len(data) == size
    return data


def batch_positions(path: Path) -> list[tuple[int, int, int]]:
    """(position, base offset, size) of every batch in a segment file, by brute force."""
    data = path.read_bytes()
    return [(pos, h.base_offset, h.size) for pos, h in iter_batches(data, validate=True)]


def segment_logs(dir: Path) -> list[Path]:
    return sorted(dir.glob("*.log"))
