"""Restart: clean loads skip the scan; unclean ones cut torn or corrupt tails."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log import Log

from .helpers import SMALL, batch_positions, crash, make_batch, read_all, segment_logs

CONFIG = dataclasses.replace(SMALL, segment_bytes=2000)


def fill(dir: Path, batches: int, *, count: int = 5) -> tuple[Log, list[bytes | None]]:
    log = Log.open(dir, "t", 0, CONFIG, clean=True)
    for tag in range(batches):
        log.append(make_batch(count, tag=tag))
    return log, read_all(log)


def values(tags: range, count: int = 5) -> list[bytes | None]:
    return [f"{t}:{i}".encode().ljust(20, b".") for t in tags for i in range(count)]


@settings(max_examples=30, deadline=None)
@given(batches=st.integers(min_value=1, max_value=25), cut=st.floats(min_value=0, max_value=1))
def test_torn_tail_keeps_exactly_the_whole_batches(batches: int, cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dir = Path(tmp) / "t-0"
        log, before = fill(dir, batches)
        crash(log)
        last = segment_logs(dir)[-1]
        size = last.stat().st_size
        cut_at = int(size * cut)
        positions = batch_positions(last)
        survivors_in_last = sum(1 for pos, _b, s in positions if pos + s <= cut_at)
        first_in_last = positions[0][1] if positions else int(last.name[:20])
        os.truncate(last, cut_at)
        log = Log.open(dir, "t", 0, CONFIG)  # unclean: no marker, recovery point 0
        expected_end = first_in_last + 5 * survivors_in_last
        assert log.log_end_offset == expected_end
        assert read_all(log) == before[:expected_end]
        assert last.stat().st_size == sum(s for p, _b, s in positions[:survivors_in_last])
        info = log.append(make_batch(5, tag=999))
        assert info.first_offset == expected_end
        assert read_all(log)[-5:] == values(range(999, 1000))
        log.close()


def test_corrupt_byte_in_the_middle_truncates_there(tmp_path: Path) -> None:
    log, before = fill(tmp_path / "t-0", 20)
    crash(log)
    first = segment_logs(tmp_path / "t-0")[0]
    positions = batch_positions(first)
    pos, base, size = positions[2]
    with open(first, "r+b") as f:  # flip a byte inside batch 2's CRC-covered body
        f.seek(pos + size - 3)
        byte = f.read(1)
        f.seek(pos + size - 3)
        f.write(bytes([byte[0] ^ 0x55]))
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG)
    assert log.log_end_offset == base == 10
    assert read_all(log) == before[:10]
    assert len(segment_logs(tmp_path / "t-0")) == 1  # later segments deleted
    assert log.segments_recovered >= 1
    log.close()


def test_corrupt_base_offset_is_caught_by_continuity(tmp_path: Path) -> None:
    log, before = fill(tmp_path / "t-0", 6)
    crash(log)
    first = segment_logs(tmp_path / "t-0")[0]
    pos, _base, _size = batch_positions(first)[3]
    with open(first, "r+b") as f:  # base offset is outside the CRC
        f.seek(pos)
        f.write((12345).to_bytes(8, "big"))
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG)
    assert log.log_end_offset == 15
    assert read_all(log) == before[:15]
    log.close()


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate"])
def test_index_files_rebuilt_after_unclean_restart(tmp_path: Path, damage: str) -> None:
    config = dataclasses.replace(CONFIG, segment_bytes=1 << 20, index_interval_bytes=100)
    dir = tmp_path / "t-0"
    log = Log.open(dir, "t", 0, config, clean=True)
    for tag in range(30):
        log.append(make_batch(5, tag=tag, ts=10_000 + 10 * tag))
    before = read_all(log)
    crash(log)
    index = dir / f"{0:020d}.index"
    timeindex = dir / f"{0:020d}.timeindex"
    good_index, good_time = index.read_bytes(), timeindex.read_bytes()
    assert len(good_index) > 8 * 5
    for path in (index, timeindex):
        if damage == "delete":
            path.unlink()
        elif damage == "garbage":
            path.write_bytes(os.urandom(len(path.read_bytes()) + 5))
        else:
            path.write_bytes(path.read_bytes()[:-3])
    log = Log.open(dir, "t", 0, config)
    assert index.read_bytes() == good_index
    assert timeindex.read_bytes()[: len(good_time)] == good_time
    assert read_all(log) == before
    assert log.offset_for_timestamp(10_152) == (77, 10_152)
    log.close()


def test_clean_restart_skips_the_scan(tmp_path: Path) -> None:
    log, before = fill(tmp_path / "t-0", 30)
    segments = log.segment_count
    log.close()
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert log.recovered_bytes_scanned == 0 and log.segments_recovered == 0
    assert log.segment_count == segments
    assert read_all(log) == before
    assert log.append(make_batch(5, tag=77)).first_offset == len(before)
    crash(log)
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG)  # unclean: scans
    assert log.recovered_bytes_scanned > 0
    assert read_all(log) == [*before, *values(range(77, 78))]
    log.close()


def test_clean_restart_with_missing_index_rebuilds_that_segment(tmp_path: Path) -> None:
    log, before = fill(tmp_path / "t-0", 30)
    log.close()
    (tmp_path / "t-0" / f"{0:020d}.index").unlink()
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert log.segments_recovered == 1
    assert read_all(log) == before
    log.close()


def test_clean_flag_but_torn_active_segment_is_recovered(tmp_path: Path) -> None:
    log, before = fill(tmp_path / "t-0", 3)
    log.close()
    active = segment_logs(tmp_path / "t-0")[-1]
    os.truncate(active, active.stat().st_size - 1)
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert log.log_end_offset == 10
    assert read_all(log) == before[:10]
    log.close()


def test_recovery_point_limits_the_scan(tmp_path: Path) -> None:
    log, before = fill(tmp_path / "t-0", 30)
    log.flush()
    assert log.recovery_point == log.log_end_offset
    log.append(make_batch(5, tag=50))
    rp = log.recovery_point
    crash(log)
    full = sum(p.stat().st_size for p in segment_logs(tmp_path / "t-0"))
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, recovery_point=rp)
    assert 0 < log.recovered_bytes_scanned < full
    assert read_all(log) == [*before, *values(range(50, 51))]
    log.close()


def test_leftover_deleted_files_are_removed_at_open(tmp_path: Path) -> None:
    dir = tmp_path / "t-0"
    dir.mkdir()
    (dir / f"{0:020d}.log.deleted").write_bytes(b"junk")
    (dir / f"{5:020d}.index").write_bytes(b"")  # orphan index
    log = Log.open(dir, "t", 0, CONFIG)
    assert sorted(p.name for p in dir.iterdir()) == [
        f"{0:020d}.index",
        f"{0:020d}.log",
        f"{0:020d}.timeindex",
    ]
    log.close()


def test_crash_right_after_a_roll(tmp_path: Path) -> None:
    log, before = fill(tmp_path / "t-0", 3)
    log.roll()
    assert log.segment_count == 2
    crash(log)
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG)
    assert log.segment_base_offsets == [0, 15] and log.log_end_offset == 15
    assert log.append(make_batch(5, tag=9)).first_offset == 15
    assert read_all(log) == [*before, *values(range(9, 10))]
    log.close()
