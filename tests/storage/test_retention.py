"""Retention by time and size, deferred file deletion, flushing, truncation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from broker.log import Log, LogConfig
from proto.errors import OffsetOutOfRangeError

from .helpers import SMALL, crash, file_bytes, make_batch, read_all, segment_logs

CONFIG = dataclasses.replace(SMALL, segment_bytes=1000, file_delete_delay_ms=5_000)


def fill(tmp_path: Path, config: LogConfig = CONFIG, batches: int = 20) -> Log:
    """Batch k has timestamps 1000*k..; roughly four batches per segment."""
    log = Log.open(tmp_path / "t-0", "t", 0, config, clean=True, now_ms=0)
    for k in range(batches):
        log.append(make_batch(5, tag=k, ts=1000 * k), now_ms=0)
    return log


def test_retention_by_time(tmp_path: Path) -> None:
    log = fill(tmp_path, dataclasses.replace(CONFIG, retention_ms=10_000))
    bases = log.segment_base_offsets
    assert len(bases) >= 4
    assert log.delete_old_segments(now_ms=0) == 0
    # the first segment's newest record is batch bases[1]//5 - 1, at 1000*(that)+4
    newest_first = 1000 * (bases[1] // 5 - 1) + 4
    assert log.delete_old_segments(now_ms=newest_first + 10_000) == 0
    assert log.delete_old_segments(now_ms=newest_first + 10_001) == 1
    assert log.log_start_offset == bases[1]
    with pytest.raises(OffsetOutOfRangeError):
        log.read(bases[1] - 1, 100)
    assert read_all(log)[0] == f"{bases[1] // 5}:0".encode().ljust(20, b".")
    # far future: everything but the active segment goes
    assert log.delete_old_segments(now_ms=10**9) == len(bases) - 2
    assert log.segment_count == 1 and log.log_start_offset == bases[-1]
    log.close()


def test_retention_forever_and_compact_policy_keep_everything(tmp_path: Path) -> None:
    log = fill(tmp_path, dataclasses.replace(CONFIG, retention_ms=-1))
    assert log.delete_old_segments(now_ms=10**12) == 0
    log.update_config(dataclasses.replace(CONFIG, retention_ms=0, cleanup_policy="compact"))
    assert log.delete_old_segments(now_ms=10**12) == 0
    log.close()


def test_retention_by_bytes(tmp_path: Path) -> None:
    log = fill(tmp_path, dataclasses.replace(CONFIG, retention_ms=-1))
    sizes = [p.stat().st_size for p in segment_logs(log.dir)]
    total = sum(sizes)
    log.update_config(dataclasses.replace(log.config, retention_bytes=total - sizes[0]))
    assert log.delete_old_segments(now_ms=0) == 1
    # like Kafka, a segment goes only if the log stays at or above retention.bytes
    log.update_config(dataclasses.replace(log.config, retention_bytes=total - sizes[0] - 1))
    assert log.delete_old_segments(now_ms=0) == 0
    log.update_config(dataclasses.replace(log.config, retention_bytes=total - sizes[0] - sizes[1]))
    assert log.delete_old_segments(now_ms=0) == 1
    assert log.size_bytes == total - sizes[0] - sizes[1]
    log.update_config(dataclasses.replace(log.config, retention_bytes=0))
    log.delete_old_segments(now_ms=0)
    assert log.segment_count == 1  # never the active one
    log.close()


def test_deleted_segments_stay_readable_until_the_delay(tmp_path: Path) -> None:
    log = fill(tmp_path, dataclasses.replace(CONFIG, retention_ms=0))
    in_flight = log.read(0, 1 << 20).records  # a sendfile that has not run yet
    assert in_flight is not None
    expected = file_bytes(in_flight.fd, in_flight.position, in_flight.size)
    deleted = log.delete_old_segments(now_ms=100_000)
    assert deleted >= 3 and log.pending_deletes == deleted
    names = sorted(p.name for p in log.dir.iterdir())
    assert f"{0:020d}.log.deleted" in names and f"{0:020d}.log" not in names
    assert file_bytes(in_flight.fd, in_flight.position, in_flight.size) == expected
    assert log.delete_expired_files(now_ms=104_999) == 0
    assert log.delete_expired_files(now_ms=105_000) == deleted
    assert not [p for p in log.dir.iterdir() if p.name.endswith(".deleted")]
    log.close()


def test_flush_messages_moves_the_recovery_point(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", "t", 0, dataclasses.replace(CONFIG, flush_messages=12))
    log.append(make_batch(5))
    log.append(make_batch(5))
    assert log.recovery_point == 0
    log.append(make_batch(5))
    assert log.recovery_point == 15
    log.close()


def test_flush_ms_and_rolled_segments(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", "t", 0, dataclasses.replace(CONFIG, flush_ms=1000), now_ms=0)
    log.append(make_batch(5), now_ms=0)
    log.maybe_flush(999)
    assert log.recovery_point == 0
    log.maybe_flush(1000)
    assert log.recovery_point == 5
    # with flush.ms never, a roll still lets the next maybe_flush flush the old segment
    log.update_config(CONFIG)
    for k in range(8):
        log.append(make_batch(5, tag=k), now_ms=2000)
    assert log.segment_count > 1
    log.maybe_flush(2000)
    assert log.recovery_point == log.segment_base_offsets[-1]
    log.close()


def test_truncate_to(tmp_path: Path) -> None:
    log = fill(tmp_path)
    before = read_all(log)
    bases = log.segment_base_offsets
    log.truncate_to(bases[1] + 7)  # inside a batch: the whole batch goes
    assert log.log_end_offset == bases[1] + 5
    assert log.segment_base_offsets == bases[:2]
    assert read_all(log) == before[: bases[1] + 5]
    assert log.append(make_batch(5, tag=99)).first_offset == bases[1] + 5
    log.truncate_to(bases[1])
    assert log.log_end_offset == bases[1] and log.segment_count == 2
    log.truncate_to(0)
    assert log.log_end_offset == 0 and log.log_start_offset == 0 and log.size_bytes == 0
    log.append(make_batch(5, tag=5))
    assert read_all(log) == [f"5:{i}".encode().ljust(20, b".") for i in range(5)]
    # the truncated log survives an unclean restart
    crash(log)
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG)
    assert log.log_end_offset == 5
    log.close()


def test_delete_removes_the_directory(tmp_path: Path) -> None:
    log = fill(tmp_path, batches=3)
    log.delete()
    assert not (tmp_path / "t-0").exists()
