"""Micro-benchmark of the log cleaner (broker.log.cleaner.LogCleaner): records/s compacted.

Fills a compacted Log in a temporary directory with keyed records (``--keys`` distinct
keys, round robin, ``--per-batch`` records per batch), rolls and flushes it, then runs
one cleaning and prints what each pass cost: pass 1 (offset map: read, CRC, decode) and
pass 2 (read, CRC, decode, filter, rewrite runs, write, fsync, swap). A second round
appends ``--dirty`` more of the records and cleans again: the whole clean section is
rewritten too (as Kafka does), so that is the steady-state cost.

    .venv/bin/python bench/cleaner_bench.py [--records 1000000] [--keys 10000] [--per-batch 100]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import structlog

from broker.log import Log, LogConfig
from broker.log.cleaner import CleanerStats, LogCleaner
from proto.batch import CODECS, BatchBuilder


def fill(log: Log, records: int, keys: int, per_batch: int, size: int, codec: int) -> float:
    value = b"x" * size
    t0 = time.perf_counter()
    built = []
    for start in range(0, records, per_batch):
        b = BatchBuilder(codec)
        for i in range(start, min(start + per_batch, records)):
            b.append(value, key=b"key-%08d" % (i % keys), timestamp_ms=1_700_000_000_000)
        built.append(b.build())
    build_s = time.perf_counter() - t0
    for batch in built:
        log.append(batch, now_ms=0)
    log.roll(0)
    log.flush()
    return build_s


def report(label: str, s: CleanerStats) -> None:
    c = s.counts
    print(f"{label}: {s.segments_before} -> {s.segments_after} segments, "
          f"{s.bytes_before / 1e6:,.1f} -> {s.bytes_after / 1e6:,.1f} MB, "
          f"{s.map_entries:,} keys in the map")  # fmt: skip
    print(f"  pass 1 (offset map) {s.map_records:>12,} records {s.map_seconds:8.2f} s "
          f"{s.map_records / s.map_seconds:>12,.0f} records/s")  # fmt: skip
    print(f"  pass 2 (rewrite)    {c.records_read:>12,} records {s.clean_seconds:8.2f} s "
          f"{c.records_read / s.clean_seconds:>12,.0f} records/s "
          f"({c.records_kept:,} kept, {c.batches_rewritten:,} batches rewritten)")  # fmt: skip
    print(f"  both passes         {s.records_per_second:>42,.0f} records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--per-batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=100, help="value bytes per record")
    parser.add_argument("--dirty", type=float, default=0.5, help="second round, share of --records")
    parser.add_argument("--segment-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--codec", default="none", choices=sorted(CODECS))
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    config = LogConfig(
        segment_bytes=args.segment_bytes, cleanup_policy="compact", min_cleanable_dirty_ratio=0.0
    )
    codec = CODECS[args.codec]
    with tempfile.TemporaryDirectory() as tmp:
        log = Log.open(Path(tmp) / "bench-0", "bench", 0, config, clean=True, now_ms=0)
        fill(log, args.records, args.keys, args.per_batch, args.size, codec)
        print(
            f"{args.records:,} records ({args.keys:,} keys, {args.per_batch} per batch, "
            f"{args.size} B values, codec {args.codec}): {log.size_bytes / 1e6:,.1f} MB "
            f"in {log.segment_count} segments"
        )
        cleaner = LogCleaner(Path(tmp))
        t0 = time.perf_counter()
        first = cleaner.clean(log, now_ms=0)
        wall = time.perf_counter() - t0
        assert first is not None
        report(f"first cleaning ({wall:.2f} s wall)", first)
        fill(log, int(args.records * args.dirty), args.keys, args.per_batch, args.size, codec)
        t0 = time.perf_counter()
        second = cleaner.clean(log, now_ms=0)
        wall = time.perf_counter() - t0
        assert second is not None
        report(f"second cleaning ({wall:.2f} s wall)", second)
        log.close()


if __name__ == "__main__":
    main()
