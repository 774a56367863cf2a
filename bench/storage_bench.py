"""Micro-benchmark of the partition storage engine (broker.log.Log).

Appends pre-built batches of 100-byte records to a Log in a temporary directory, then reads
the whole log back with fetch-sized reads, and prints records/s and MB/s for each phase.
The read phase is measured three ways: ``Log.read`` alone (what a broker does before
``sendfile``), ``Log.read`` + ``os.sendfile`` to /dev/null (the zero-copy path), and
``Log.read`` + ``os.pread`` (bytes copied into Python).

    .venv/bin/python bench/storage_bench.py [--batches 2000] [--records 1000] [--size 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from broker.log import Log, LogConfig
from proto.batch import BatchBuilder


def build_batches(count: int, records: int, size: int) -> list[bytes]:
    value = b"x" * size
    out = []
    for _ in range(count):
        b = BatchBuilder()
        for _ in range(records):
            b.append(value, timestamp_ms=1_700_000_000_000)
        out.append(b.build())
    return out


def report(name: str, seconds: float, records: int, nbytes: int) -> None:
    print(
        f"{name:<28} {records / seconds:>14,.0f} records/s {nbytes / seconds / 1e6:>10,.1f} MB/s"
        f"   ({seconds * 1000:,.1f} ms)"
    )


def read_phase(log: Log, fetch_bytes: int, consume: Callable[[int, int, int], None]) -> int:
    offset, total = 0, 0
    end = log.log_end_offset
    while offset < end:
        res = log.read(offset, fetch_bytes)
        assert res.records is not None
        fr = res.records
        consume(fr.fd, fr.position, fr.size)
        total += fr.size
        # the broker does not parse records; it learns the next offset from the index walk.
        # Here the next offset is found the same way a consumer would: from the last batch.
        offset = _next_offset(fr.fd, fr.position, fr.size)
    return total


def _next_offset(fd: int, position: int, size: int) -> int:
    # walk the 12-byte headers of the slice to its last batch, then read its offset delta
    pos, end, last = position, position + size, position
    while pos < end:
        head = os.pread(fd, 12, pos)
        last = pos
        pos += 12 + int.from_bytes(head[8:12], "big")
    head = os.pread(fd, 27, last)
    return int.from_bytes(head[0:8], "big") + int.from_bytes(head[23:27], "big") + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--records", type=int, default=1000, help="records per batch")
    parser.add_argument("--size", type=int, default=100, help="value bytes per record")
    parser.add_argument("--segment-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--fetch-bytes", type=int, default=1024 * 1024)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    batches = build_batches(args.batches, args.records, args.size)
    total_records = args.batches * args.records
    total_bytes = sum(len(b) for b in batches)
    print(
        f"{args.batches} batches x {args.records} records x {args.size} B values "
        f"= {total_records:,} records, {total_bytes / 1e6:,.1f} MB of batches"
    )
    config = LogConfig(segment_bytes=args.segment_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        log = Log.open(Path(tmp) / "bench-0", "bench", 0, config, clean=True)
        t0 = time.perf_counter()
        for batch in batches:
            log.append(batch)
        report("append (1 batch/append)", time.perf_counter() - t0, total_records, total_bytes)

        def nothing(fd: int, pos: int, size: int) -> None:
            pass

        null = os.open(os.devnull, os.O_WRONLY)

        def sendfile(fd: int, pos: int, size: int) -> None:
            sent = 0
            while sent < size:
                sent += os.sendfile(null, fd, pos + sent, size - sent)

        def pread(fd: int, pos: int, size: int) -> None:
            os.pread(fd, size, pos)

        for name, consume in (
            ("read (Log.read only)", nothing),
            ("read + sendfile(/dev/null)", sendfile),
            ("read + pread copy", pread),
        ):
            t0 = time.perf_counter()
            nbytes = read_phase(log, args.fetch_bytes, consume)
            report(name, time.perf_counter() - t0, total_records, nbytes)
        os.close(null)
        print(f"segments: {log.segment_count}, log size {log.size_bytes / 1e6:,.1f} MB")
        t0 = time.perf_counter()
        log.flush()
        print(f"flush (fsync everything)     {(time.perf_counter() - t0) * 1000:,.1f} ms")
        log.close()
        t0 = time.perf_counter()
        log = Log.open(Path(tmp) / "bench-0", "bench", 0, config, clean=True)
        print(f"clean open                   {(time.perf_counter() - t0) * 1000:,.1f} ms")
        log.close()
        t0 = time.perf_counter()
        log = Log.open(Path(tmp) / "bench-0", "bench", 0, config, clean=False)
        print(
            f"unclean open (CRC scan)      {(time.perf_counter() - t0) * 1000:,.1f} ms, "
            f"{log.recovered_bytes_scanned / 1e6:,.1f} MB scanned"
        )
        log.close()


if __name__ == "__main__":
    main()
