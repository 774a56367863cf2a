"""Index lookups agree with a brute-force scan of the segment files (hypothesis)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log import Log
from proto.batch import records_of

from .helpers import SMALL, batch_positions, file_bytes, make_batch

appends = st.lists(
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=3),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(appends=appends, interval=st.sampled_from([0, 100, 300, 1000, 10_000]), data=st.data())
def test_read_and_timestamp_lookup_match_brute_force(
    appends: list[list[int]], interval: int, data: st.DataObject
) -> None:
    config = dataclasses.replace(SMALL, index_interval_bytes=interval, segment_bytes=3000)
    with tempfile.TemporaryDirectory() as tmp:
        log = Log.open(Path(tmp) / "t-0", "t", 0, config, clean=True, now_ms=0)
        ts = 0
        for batches in appends:
            chunk = b""
            for count in batches:
                # timestamps mostly grow, sometimes step back
                ts += data.draw(st.integers(min_value=-30, max_value=50))
                chunk += make_batch(count, value_size=8, ts=ts)
            log.append(chunk, now_ms=0)
        # brute force: every batch of every segment, from the files
        truth: list[tuple[int, int, int, int]] = []  # base, next, segment base, position
        for seg_base in log.segment_base_offsets:
            path = log.dir / f"{seg_base:020d}.log"
            raw = path.read_bytes()
            for pos, base, size in batch_positions(path):
                recs = list(records_of(raw[pos : pos + size]))
                truth.append((base, recs[-1].offset + 1, seg_base, pos))
        assert truth[0][0] == 0 and truth[-1][1] == log.log_end_offset
        for offset in range(log.log_end_offset):
            base, _next, _seg, pos = next(t for t in truth if t[0] <= offset < t[1])
            res = log.read(offset, 1)
            assert res.records is not None
            assert res.records.position == pos
            got = records_of(file_bytes(res.records.fd, res.records.position, res.records.size))
            assert next(iter(got)).offset == base
        # offset_for_timestamp: the first record, in log order, whose timestamp >= t
        stamps: list[tuple[int, int]] = []
        for seg_base in log.segment_base_offsets:
            raw = (log.dir / f"{seg_base:020d}.log").read_bytes()
            for pos, _base, size in batch_positions(log.dir / f"{seg_base:020d}.log"):
                stamps += [(r.offset, r.timestamp) for r in records_of(raw[pos : pos + size])]
        lo, hi = min(t for _, t in stamps), max(t for _, t in stamps)
        for target in range(lo - 1, hi + 2, 7):
            expected = next(((o, t) for o, t in stamps if t >= target), None)
            assert log.offset_for_timestamp(target) == expected
        log.close()
