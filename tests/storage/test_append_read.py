"""Append and read: offsets, rolls, fetch limits, timestamps, size and corruption checks."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest

from broker.log import Log, LogConfig
from broker.log import segment as segment_module
from proto.batch import read_header, records_of
from proto.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaStorageError,
    MessageSizeTooLargeError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
)

from .helpers import SMALL, batch_positions, file_bytes, make_batch, read_all, segment_logs


def open_log(tmp_path: Path, config: LogConfig = SMALL) -> Log:
    return Log.open(tmp_path / "t-0", "t", 0, config, clean=True)


def test_offsets_contiguous_across_batches_in_one_append(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    info = log.append(make_batch(3) + make_batch(5) + make_batch(2), leader_epoch=7, now_ms=1)
    assert (info.first_offset, info.last_offset, info.batch_count) == (0, 9, 3)
    assert info.bytes == len(make_batch(3) + make_batch(5) + make_batch(2))
    assert info.log_append_time_ms == -1
    info2 = log.append(make_batch(4), now_ms=2)
    assert (info2.first_offset, info2.last_offset) == (10, 13)
    assert log.log_end_offset == 14
    res = log.read(0, 1 << 20)
    assert res.records is not None
    data = file_bytes(res.records.fd, res.records.position, res.records.size)
    headers = [read_header(data, pos) for pos, _, _ in batch_positions(log.dir / f"{0:020d}.log")]
    assert [h.base_offset for h in headers] == [0, 3, 8, 10]
    assert [h.leader_epoch for h in headers] == [7, 7, 7, 0]
    assert [r.offset for r in records_of(data)] == list(range(14))
    log.close()


def test_round_trip_across_segment_rolls(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for tag in range(60):
        log.append(make_batch(10, tag=tag), now_ms=tag)
    assert log.segment_count >= 4
    assert len(segment_logs(log.dir)) == log.segment_count
    expected = [f"{tag}:{i}".encode().ljust(20, b".") for tag in range(60) for i in range(10)]
    assert read_all(log) == expected
    assert read_all(log, start=333) == expected[333:]
    # every segment stays under segment.bytes (no single append is larger)
    assert all(p.stat().st_size <= SMALL.segment_bytes for p in segment_logs(log.dir))
    log.close()


def test_read_never_crosses_a_segment(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for tag in range(20):
        log.append(make_batch(10, tag=tag))
    second = log.segment_base_offsets[1]
    res = log.read(0, 1 << 30)
    assert res.records is not None
    data = file_bytes(res.records.fd, res.records.position, res.records.size)
    assert [r.offset for r in records_of(data)][-1] == second - 1
    log.close()


def test_max_bytes_smaller_than_a_batch_returns_one_whole_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(10) + make_batch(10))
    batch_size = len(make_batch(10))
    for max_bytes in (0, 1, batch_size - 1, batch_size, 2 * batch_size - 1):
        res = log.read(3, max_bytes)
        assert res.records is not None
        assert (res.records.position, res.records.size) == (0, batch_size)
    res = log.read(3, 2 * batch_size)
    assert res.records is not None and res.records.size == 2 * batch_size
    log.close()


def test_read_stops_at_max_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for _ in range(3):
        log.append(make_batch(10))
    res = log.read(0, 1 << 20, max_offset=20)
    assert res.records is not None
    data = file_bytes(res.records.fd, res.records.position, res.records.size)
    assert [r.offset for r in records_of(data)] == list(range(20))
    # a high watermark inside a batch excludes that whole batch
    res = log.read(0, 1 << 20, max_offset=15)
    assert res.records is not None and res.records.size == len(make_batch(10))
    # at or above the high watermark: nothing, but no error
    empty = log.read(20, 1 << 20, max_offset=20)
    assert empty.records is None and empty.log_end_offset == 30
    log.close()


def test_out_of_range_and_end_of_log(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(5))
    assert log.read(5, 100).records is None
    with pytest.raises(OffsetOutOfRangeError):
        log.read(6, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    res = log.read(0, 100)
    assert (res.log_start_offset, res.log_end_offset) == (0, 5)
    log.close()


def test_empty_log_reads_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert log.read(0, 100).records is None
    assert log.offset_for_timestamp(0) is None
    info = log.append(b"")
    assert (info.first_offset, info.batch_count) == (-1, 0)
    log.close()


def test_offset_for_timestamp(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    # batch k has timestamps 1000*k .. 1000*k+9; one non-monotonic batch in the middle
    for k in range(1, 40):
        ts = 500 if k == 20 else 1000 * k
        log.append(make_batch(10, ts=ts))
    assert log.segment_count > 2
    # the first *record* at or after the time (Kafka's ListOffsets), not its batch
    assert log.offset_for_timestamp(0) == (0, 1000)
    assert log.offset_for_timestamp(1005) == (5, 1005)
    assert log.offset_for_timestamp(1009) == (9, 1009)
    assert log.offset_for_timestamp(1010) == (10, 2000)
    assert log.offset_for_timestamp(25_003) == (243, 25_003)
    assert log.offset_for_timestamp(39_009) == (389, 39_009)
    assert log.offset_for_timestamp(39_010) is None
    log.close()
    reopened = Log.open(log.dir, "t", 0, SMALL, clean=True)
    assert reopened.offset_for_timestamp(25_005) == (245, 25_005)
    reopened.close()


def test_message_too_large_and_record_list_too_large(tmp_path: Path) -> None:
    batch = make_batch(10)
    log = open_log(tmp_path, dataclasses.replace(SMALL, max_message_bytes=len(batch) - 1))
    with pytest.raises(MessageSizeTooLargeError):
        log.append(batch)
    with pytest.raises(RecordListTooLargeError):
        log.append(make_batch(5) * 100)
    assert log.log_end_offset == 0 and log.size_bytes == 0
    log.close()


def test_corrupt_input_is_rejected_whole(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    good = make_batch(5)
    bad = bytearray(make_batch(5))
    bad[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError):
        log.append(good + bytes(bad))
    with pytest.raises(CorruptRecordError):
        log.append(good + good[:30])
    assert log.log_end_offset == 0 and log.size_bytes == 0
    log.close()


def test_log_append_time_stamps_batches(tmp_path: Path) -> None:
    log = open_log(tmp_path, dataclasses.replace(SMALL, message_timestamp_type="LogAppendTime"))
    info = log.append(make_batch(3, ts=5), now_ms=123_456)
    assert info.log_append_time_ms == 123_456
    res = log.read(0, 1000)
    assert res.records is not None
    data = file_bytes(res.records.fd, res.records.position, res.records.size)
    assert read_header(data).max_timestamp == 123_456
    assert len(list(records_of(data))) == 3  # the CRC was recomputed
    assert log.offset_for_timestamp(123_000) == (0, 123_456)
    log.close()


def test_follower_append_keeps_offsets(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "a")
    leader.append(make_batch(4, tag=1) + make_batch(3, tag=2))
    res = leader.read(0, 1 << 20)
    assert res.records is not None
    copied = file_bytes(res.records.fd, res.records.position, res.records.size)
    follower = open_log(tmp_path / "b")
    info = follower.append(copied, assign_offsets=False)
    assert (info.first_offset, info.last_offset) == (0, 6)
    with pytest.raises(InvalidRecordError):
        follower.append(copied, assign_offsets=False)
    assert read_all(follower) == read_all(leader)
    leader.close()
    follower.close()


def test_roll_by_segment_ms(tmp_path: Path) -> None:
    log = Log.open(tmp_path, "t", 0, dataclasses.replace(SMALL, segment_ms=1000), now_ms=0)
    log.append(make_batch(1), now_ms=0)
    log.append(make_batch(1), now_ms=1000)
    assert log.segment_count == 1
    log.append(make_batch(1), now_ms=1001)
    assert log.segment_base_offsets == [0, 2]
    log.roll(now_ms=1002)
    log.roll(now_ms=1003)  # the active segment is empty: no-op
    assert log.segment_base_offsets == [0, 2, 3]
    log.close()


def test_roll_when_index_is_full(tmp_path: Path) -> None:
    config = dataclasses.replace(
        SMALL, segment_bytes=1 << 20, index_interval_bytes=0, segment_index_bytes=24
    )
    log = open_log(tmp_path, config)
    for _ in range(12):
        log.append(make_batch(1))
    assert log.segment_count > 1
    assert read_all(log) == [b"0:0".ljust(20, b".")] * 12
    log.close()


def test_storage_error_leaves_log_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(5))
    size = log.size_bytes

    def short_then_enospc_all(fd: int, data: bytes | bytearray) -> None:
        os.write(fd, bytes(data[:20]))  # a partial write lands before the failure
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_module, "_write_all", short_then_enospc_all)
    with pytest.raises(KafkaStorageError) as excinfo:
        log.append(make_batch(5))
    assert isinstance(excinfo.value.__cause__, OSError)
    monkeypatch.undo()
    assert log.log_end_offset == 5 and log.size_bytes == size
    assert (log.dir / f"{0:020d}.log").stat().st_size == size
    info = log.append(make_batch(5, tag=1))
    assert info.first_offset == 5
    assert len(read_all(log)) == 10
    log.close()


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.close()
    log.close()
    with pytest.raises(KafkaStorageError):
        log.append(make_batch(1))
