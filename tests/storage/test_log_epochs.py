"""Log and the leader-epoch cache: stamping, followers, truncation, retention, restarts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log import Log, LogManager
from broker.log.epoch_cache import LEADER_EPOCH_CHECKPOINT, EpochEntry
from proto.batch import iter_batches

from .helpers import SMALL, batch_positions, crash, make_batch, segment_logs

CONFIG = dataclasses.replace(SMALL, segment_bytes=2000)
UNDEFINED = (-1, -1)


def pairs(log: Log) -> list[tuple[int, int]]:
    return [(e.epoch, e.start_offset) for e in log.leader_epoch_cache.entries]


def epochs_log(dir: Path, plan: list[int], *, count: int = 5) -> Log:
    """A log with one batch of ``count`` records per element of ``plan`` (its epoch)."""
    log = Log.open(dir, "t", 0, CONFIG, clean=True)
    for tag, epoch in enumerate(plan):
        log.append(make_batch(count, tag=tag), leader_epoch=epoch)
    return log


def stored_epochs(log: Log) -> list[int]:
    """The leader epoch stamped on every batch, read back from the segment files."""
    out = []
    for path in segment_logs(log.dir):
        out += [h.leader_epoch for _pos, h in iter_batches(path.read_bytes())]
    return out


def test_leader_appends_stamp_and_assign_epochs(tmp_path: Path) -> None:
    log = epochs_log(tmp_path / "t-0", [0, 0, 1, 1, 3, 3, 3])
    assert stored_epochs(log) == [0, 0, 1, 1, 3, 3, 3]
    assert pairs(log) == [(0, 0), (1, 10), (3, 20)]
    assert log.leader_epoch_cache.latest_epoch == 3
    assert log.end_offset_for_epoch(3) == (3, 35)
    assert log.end_offset_for_epoch(2) == (1, 20)
    assert log.end_offset_for_epoch(1) == (1, 20)
    assert log.end_offset_for_epoch(0) == (0, 10)
    assert log.end_offset_for_epoch(4) == UNDEFINED
    assert log.end_offset_for_epoch(-1) == UNDEFINED
    assert (log.dir / LEADER_EPOCH_CHECKPOINT).read_text() == "0\n3\n0 0\n1 10\n3 20\n"
    log.close()


def test_an_older_leader_epoch_does_not_rewrite_the_cache(tmp_path: Path) -> None:
    log = epochs_log(tmp_path / "t-0", [2, 1])
    assert pairs(log) == [(2, 0)]
    log.close()


def test_follower_appends_take_the_batches_own_epochs(tmp_path: Path) -> None:
    leader = epochs_log(tmp_path / "leader-0", [0, 2, 2, 5])
    data = b"".join(p.read_bytes() for p in segment_logs(leader.dir))
    follower = Log.open(tmp_path / "follower-0", "t", 0, CONFIG, clean=True)
    info = follower.append(data, assign_offsets=False, leader_epoch=99)
    assert (info.first_offset, info.last_offset) == (0, 19)
    assert pairs(follower) == pairs(leader) == [(0, 0), (2, 5), (5, 15)]
    assert stored_epochs(follower) == [0, 2, 2, 5]  # unchanged bytes, no stamping
    leader.close()
    follower.close()


def test_follower_keeps_the_leaders_bytes_under_log_append_time(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, message_timestamp_type="LogAppendTime")
    leader = Log.open(tmp_path / "leader-0", "t", 0, config, clean=True)
    leader.append(make_batch(5) + make_batch(3), leader_epoch=2, now_ms=7_000)
    data = b"".join(p.read_bytes() for p in segment_logs(leader.dir))
    follower = Log.open(tmp_path / "follower-0", "t", 0, config, clean=True)
    info = follower.append(data, assign_offsets=False, now_ms=9_000)
    assert info.log_append_time_ms == -1
    assert b"".join(p.read_bytes() for p in segment_logs(follower.dir)) == data
    leader.close()
    follower.close()


def test_follower_batches_without_an_epoch_leave_the_cache_alone(tmp_path: Path) -> None:
    follower = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    follower.append(make_batch(5), assign_offsets=False)  # built with leader_epoch -1
    assert pairs(follower) == []
    assert not (follower.dir / LEADER_EPOCH_CHECKPOINT).exists()
    follower.close()


def test_truncate_to_trims_the_cache(tmp_path: Path) -> None:
    log = epochs_log(tmp_path / "t-0", [0, 1, 1, 2, 3])
    assert pairs(log) == [(0, 0), (1, 5), (2, 15), (3, 20)]
    log.truncate_to(17)  # inside epoch 2's batch: the whole batch goes
    assert log.log_end_offset == 15
    assert pairs(log) == [(0, 0), (1, 5)]
    assert log.end_offset_for_epoch(1) == (1, 15)
    assert log.end_offset_for_epoch(2) == UNDEFINED
    log.append(make_batch(5), leader_epoch=4)
    assert pairs(log) == [(0, 0), (1, 5), (4, 15)]
    log.close()
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert pairs(log) == [(0, 0), (1, 5), (4, 15)]
    log.truncate_to(0)
    assert pairs(log) == [] and log.log_end_offset == 0
    log.close()


def test_truncate_below_the_log_start_clears_the_cache(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, retention_ms=0)
    log = Log.open(tmp_path / "t-0", "t", 0, config, clean=True)
    for tag in range(30):
        log.append(make_batch(5, tag=tag), leader_epoch=1)
    assert log.delete_old_segments(now_ms=10**13) > 0
    start = log.log_start_offset
    log.truncate_to(start - 3)
    assert log.log_start_offset == log.log_end_offset == start - 3
    assert pairs(log) == [] and log.end_offset_for_epoch(1) == UNDEFINED
    log.append(make_batch(5), leader_epoch=2)
    assert pairs(log) == [(2, start - 3)]
    log.close()


def test_retention_moves_the_first_epochs_start(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, retention_ms=0)
    log = Log.open(tmp_path / "t-0", "t", 0, config, clean=True)
    for tag in range(40):
        log.append(make_batch(5, tag=tag), leader_epoch=tag // 10)
    assert pairs(log) == [(0, 0), (1, 50), (2, 100), (3, 150)]
    deleted = log.delete_old_segments(now_ms=10**13)
    assert deleted > 0
    start = log.log_start_offset
    expected = [(e, o) for e, o in [(0, 0), (1, 50), (2, 100), (3, 150)] if o > start]
    covering = max(e for e, o in [(0, 0), (1, 50), (2, 100), (3, 150)] if o <= start)
    assert pairs(log) == [(covering, start), *expected]
    log.close()
    reopened = Log.open(tmp_path / "t-0", "t", 0, config, clean=True)
    assert pairs(reopened) == [(covering, start), *expected]
    reopened.close()


# --- restarts ---------------------------------------------------------------------------

PLAN = [0, 0, 1, 1, 1, 4, 4, 7, 7, 7, 7, 9]
EXPECTED = [(0, 0), (1, 10), (4, 25), (7, 35), (9, 55)]


def test_epochs_survive_a_clean_restart(tmp_path: Path) -> None:
    epochs_log(tmp_path / "t-0", PLAN).close()
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert log.recovered_bytes_scanned == 0
    assert pairs(log) == EXPECTED
    assert log.end_offset_for_epoch(5) == (4, 35)
    log.close()


def test_epochs_survive_an_unclean_restart(tmp_path: Path) -> None:
    log = epochs_log(tmp_path / "t-0", PLAN)
    crash(log)
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG)
    assert pairs(log) == EXPECTED
    log.close()


def test_unclean_restart_rebuilds_from_the_recovery_point(tmp_path: Path) -> None:
    log = epochs_log(tmp_path / "t-0", PLAN[:6])
    log.flush()
    recovery_point = log.recovery_point
    for tag, epoch in enumerate(PLAN[6:]):
        log.append(make_batch(5, tag=tag), leader_epoch=epoch)
    crash(log)
    assert recovery_point == 30
    # Entries from the recovery point on are dropped and rebuilt from headers (the bogus
    # "8 40" goes); those below it are trusted: prove it by marking one ("1 11").
    path = tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT
    path.write_text("0\n4\n0 0\n1 11\n4 25\n8 40\n")
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, recovery_point=recovery_point)
    expected = [(0, 0), (1, 11), (4, 25), (7, 35), (9, 55)]
    assert pairs(log) == expected
    assert path.read_text() == "0\n5\n" + "".join(f"{e} {o}\n" for e, o in expected)
    log.close()


def test_unclean_restart_that_cuts_a_torn_tail_trims_the_epochs(tmp_path: Path) -> None:
    log = epochs_log(tmp_path / "t-0", PLAN)
    crash(log)
    last = segment_logs(tmp_path / "t-0")[-1]
    positions = batch_positions(last)
    os.truncate(last, positions[-1][0] + 10)  # tear the last batch (epoch 9's only one)
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG)
    assert log.log_end_offset == 55
    assert pairs(log) == EXPECTED[:-1]
    assert log.end_offset_for_epoch(7) == (7, 55)
    log.close()


@pytest.mark.parametrize("clean", [True, False])
def test_missing_checkpoint_is_rebuilt_from_batch_headers(tmp_path: Path, clean: bool) -> None:
    epochs_log(tmp_path / "t-0", PLAN).close()
    (tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT).unlink()
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=clean)
    assert pairs(log) == EXPECTED
    assert (tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT).exists()
    log.close()


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "0\n2\n0 0\n1 10\n",  # stale: lacks the latest epochs
        "0\n5\n0 0\n1 10\n4 25\n7 35\n8 55\n",  # disagrees with the last batch
    ],
)
def test_bad_checkpoint_after_a_clean_stop_is_rebuilt(tmp_path: Path, text: str) -> None:
    epochs_log(tmp_path / "t-0", PLAN).close()
    (tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT).write_text(text)
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert pairs(log) == EXPECTED
    log.close()


def test_checkpoint_past_the_log_end_is_trimmed_on_a_clean_open(tmp_path: Path) -> None:
    epochs_log(tmp_path / "t-0", PLAN).close()
    path = tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT
    path.write_text(path.read_text().replace("0\n5\n", "0\n6\n") + "12 60\n")
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert pairs(log) == EXPECTED
    log.close()


def test_epochs_through_the_log_manager(tmp_path: Path) -> None:
    manager = LogManager(tmp_path, CONFIG, now_ms=lambda: 1_000)
    manager.startup()
    log = manager.get_or_create_log("orders", 0, CONFIG)
    log.append(make_batch(5), leader_epoch=3)
    log.append(make_batch(5), leader_epoch=6)
    manager.shutdown()
    manager = LogManager(tmp_path, CONFIG, now_ms=lambda: 2_000)
    manager.startup()
    reopened = manager.get_log("orders", 0)
    assert reopened is not None
    assert reopened.leader_epoch_cache.entries == [EpochEntry(3, 0), EpochEntry(6, 5)]
    assert reopened.end_offset_for_epoch(3) == (3, 5)
    manager.shutdown()


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(st.integers(0, 2), min_size=1, max_size=25),
    cut=st.floats(0, 1),
    truncate=st.integers(0, 130),
)
def test_cache_always_matches_the_stored_batches(
    tmp_path_factory: pytest.TempPathFactory, plan: list[int], cut: float, truncate: int
) -> None:
    dir = tmp_path_factory.mktemp("p") / "t-0"
    epochs = [sum(plan[: i + 1]) for i in range(len(plan))]
    log = epochs_log(dir, epochs)
    log.truncate_to(truncate)
    crash(log)
    last = segment_logs(dir)[-1]
    os.truncate(last, int(last.stat().st_size * cut))
    log = Log.open(dir, "t", 0, CONFIG)
    expected: list[tuple[int, int]] = []
    offset = log.log_start_offset
    for path in segment_logs(dir):
        for _pos, h in iter_batches(path.read_bytes()):
            if not expected or h.leader_epoch > expected[-1][0]:
                expected.append((h.leader_epoch, h.base_offset))
            offset = h.next_offset
    assert offset == log.log_end_offset
    assert pairs(log) == expected
    log.close()
