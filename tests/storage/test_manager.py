"""LogManager and the recovery-point checkpoint: startup, tick, shutdown, deletion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from broker.log import (
    CLEAN_SHUTDOWN_FILE,
    RECOVERY_POINT_CHECKPOINT,
    LogManager,
    read_checkpoint,
    write_checkpoint,
)
from proto.errors import InvalidTopicError, KafkaStorageError

from .helpers import SMALL, crash, make_batch, read_all


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / RECOVERY_POINT_CHECKPOINT
    assert read_checkpoint(path) == {}
    entries = {("orders", 0): 1234, ("orders", 1): 0, ("a.b-c_d", 17): 2**40}
    write_checkpoint(path, entries)
    assert read_checkpoint(path) == entries
    assert path.read_text().splitlines()[:3] == ["0", "3", "orders 0 1234"]
    assert not path.with_name(path.name + ".tmp").exists()
    write_checkpoint(path, {})
    assert read_checkpoint(path) == {}


@pytest.mark.parametrize("text", ["", "1\n0\n", "0\n2\nt 0 1\n", "0\n1\nt x 1\n", "0\n1\nt 0\n"])
def test_malformed_checkpoint(tmp_path: Path, text: str) -> None:
    path = tmp_path / RECOVERY_POINT_CHECKPOINT
    path.write_text(text)
    with pytest.raises(KafkaStorageError):
        read_checkpoint(path)


def test_clean_shutdown_and_restart(tmp_path: Path) -> None:
    clock = Clock()
    mgr = LogManager(tmp_path, SMALL, now_ms=clock)
    mgr.startup()
    assert mgr.clean_startup is False
    a = mgr.get_or_create_log("orders", 0, SMALL)
    b = mgr.get_or_create_log("orders-eu", 3, SMALL)
    assert mgr.get_or_create_log("orders", 0, SMALL) is a
    for k in range(30):
        a.append(make_batch(5, tag=k))
    b.append(make_batch(3))
    before = read_all(a)
    mgr.shutdown()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert read_checkpoint(tmp_path / RECOVERY_POINT_CHECKPOINT) == {
        ("orders", 0): 150,
        ("orders-eu", 3): 3,
    }
    mgr = LogManager(tmp_path, SMALL, now_ms=clock)
    mgr.startup()
    assert mgr.clean_startup is True
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    a2 = mgr.get_log("orders", 0)
    b2 = mgr.get_log("orders-eu", 3)
    assert a2 is not None and b2 is not None
    assert a2.recovered_bytes_scanned == 0 and b2.log_end_offset == 3
    assert read_all(a2) == before
    assert sorted((log.topic, log.partition) for log in mgr.all_logs()) == [
        ("orders", 0),
        ("orders-eu", 3),
    ]
    mgr.shutdown()


def test_unclean_restart_recovers_from_the_checkpoint(tmp_path: Path) -> None:
    clock = Clock()
    config = dataclasses.replace(SMALL, flush_ms=1000)
    mgr = LogManager(tmp_path, config, now_ms=clock)
    mgr.startup()
    log = mgr.get_or_create_log("t", 0, config)
    for k in range(30):
        log.append(make_batch(5, tag=k), now_ms=clock.now)
    clock.now += 1000
    mgr.tick(clock.now)  # flush.ms passed: flush and checkpoint
    assert read_checkpoint(tmp_path / RECOVERY_POINT_CHECKPOINT) == {("t", 0): 150}
    log.append(make_batch(5, tag=30), now_ms=clock.now)
    crash(log)  # killed: no marker
    mgr = LogManager(tmp_path, config, now_ms=clock)
    mgr.startup()
    assert mgr.clean_startup is False
    again = mgr.get_log("t", 0)
    assert again is not None and again.log_end_offset == 155
    assert 0 < again.recovered_bytes_scanned < again.size_bytes
    mgr.shutdown()


def test_tick_applies_retention_and_deferred_deletes(tmp_path: Path) -> None:
    clock = Clock()
    config = dataclasses.replace(
        SMALL, segment_bytes=1000, retention_ms=1000, file_delete_delay_ms=500
    )
    mgr = LogManager(tmp_path, config, now_ms=clock)
    mgr.startup()
    log = mgr.get_or_create_log("t", 0, config)
    for k in range(40):
        log.append(make_batch(5, tag=k, ts=clock.now), now_ms=clock.now)
    segments = log.segment_count
    assert segments > 2
    mgr.tick(clock.now + 5000)
    assert log.segment_count == 1 and log.pending_deletes == segments - 1
    mgr.tick(clock.now + 5499)
    assert log.pending_deletes == segments - 1
    mgr.tick(clock.now + 5500)
    assert log.pending_deletes == 0
    assert len(list(log.dir.glob("*.log"))) == 1
    mgr.shutdown()


def test_delete_log_is_deferred(tmp_path: Path) -> None:
    clock = Clock()
    mgr = LogManager(tmp_path, SMALL, now_ms=clock)
    mgr.startup()
    log = mgr.get_or_create_log("t", 0, SMALL)
    log.append(make_batch(5))
    in_flight = log.read(0, 100).records
    assert in_flight is not None
    mgr.delete_log("t", 0)
    assert mgr.get_log("t", 0) is None
    assert not (tmp_path / "t-0").exists()
    [renamed] = [p for p in tmp_path.iterdir() if p.name.endswith("-delete")]
    assert len(read_all(log)) == 5  # readers of the old log still work until the delay
    mgr.tick(clock.now + SMALL.file_delete_delay_ms)
    assert not renamed.exists()
    # a fresh partition of the same name starts empty
    assert mgr.get_or_create_log("t", 0, SMALL).log_end_offset == 0
    mgr.shutdown()


def test_leftover_delete_dirs_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "t-0.abc-delete").mkdir()
    (tmp_path / "not_a_partition").mkdir()
    mgr = LogManager(tmp_path, SMALL)
    mgr.startup()
    assert not (tmp_path / "t-0.abc-delete").exists()
    assert mgr.all_logs() == []
    with pytest.raises(InvalidTopicError):
        mgr.get_or_create_log("bad/name", 0, SMALL)
    mgr.shutdown()


def test_get_or_create_applies_a_new_config(tmp_path: Path) -> None:
    mgr = LogManager(tmp_path, SMALL)
    mgr.startup()
    mgr.get_or_create_log("t", 0, SMALL)
    newer = dataclasses.replace(SMALL, retention_ms=5)
    assert mgr.get_or_create_log("t", 0, newer).config == newer
    mgr.shutdown()


def test_malformed_checkpoint_at_startup_means_full_recovery(tmp_path: Path) -> None:
    mgr = LogManager(tmp_path, SMALL)
    mgr.startup()
    log = mgr.get_or_create_log("t", 0, SMALL)
    for k in range(10):
        log.append(make_batch(5, tag=k))
    log.flush()
    mgr.checkpoint_recovery_points()
    crash(log)
    (tmp_path / RECOVERY_POINT_CHECKPOINT).write_text("garbage\n")
    mgr = LogManager(tmp_path, SMALL)
    mgr.startup()
    again = mgr.get_log("t", 0)
    assert again is not None and again.log_end_offset == 50
    assert again.recovered_bytes_scanned >= again.size_bytes  # scanned from the start
    mgr.shutdown()
