"""Log and idempotent producers: duplicates, gaps, all-or-nothing appends, restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log import Log, LogManager
from broker.log.producer_snapshot import snapshot_offsets, snapshot_path
from proto.batch import BatchBuilder
from proto.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    OutOfOrderSequenceNumberError,
)

from .helpers import SMALL, crash, make_batch, read_all, segment_logs

CONFIG = dataclasses.replace(SMALL, segment_bytes=2000)
PID = 4242


def idem(seq: int, count: int = 5, *, pid: int = PID, epoch: int = 0, ts: int = 1_000) -> bytes:
    b = BatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for i in range(count):
        b.append(f"{pid}:{epoch}:{seq + i}".encode().ljust(20, b"."), timestamp_ms=ts + i)
    return b.build()


def open_log(dir: Path) -> Log:
    return Log.open(dir, "t", 0, CONFIG, clean=True)


def test_a_retried_batch_gets_its_original_offsets_and_is_not_written(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    first = log.append(idem(0))
    log.append(make_batch(3))  # someone else's records in between
    second = log.append(idem(5))
    size = log.size_bytes
    retry = log.append(idem(0))
    assert retry.duplicate and not first.duplicate
    assert (retry.first_offset, retry.last_offset) == (first.first_offset, first.last_offset)
    assert retry.batch_count == 0 and retry.bytes == 0
    assert log.size_bytes == size and log.log_end_offset == 13
    again = log.append(idem(5))
    assert (
        (again.first_offset, again.last_offset)
        == (8, 12)
        == (
            second.first_offset,
            second.last_offset,
        )
    )
    assert len(read_all(log)) == 13
    log.close()


def test_a_gap_raises_and_writes_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(idem(0))
    size = log.size_bytes
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(idem(7))
    assert log.log_end_offset == 5 and log.size_bytes == size
    assert log.append(idem(5)).first_offset == 5
    log.close()


def test_a_fenced_epoch_raises(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(idem(0, epoch=2))
    with pytest.raises(InvalidProducerEpochError):
        log.append(idem(5, epoch=1))
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(idem(5, epoch=3))
    assert log.append(idem(0, epoch=3)).first_offset == 5
    assert log.log_end_offset == 10
    log.close()


def test_multi_batch_appends_are_all_or_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(idem(0))
    ok = log.append(idem(5) + idem(10) + idem(0, pid=7))  # checked in order, in one call
    assert (ok.first_offset, ok.last_offset, ok.batch_count) == (5, 19, 3)
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(idem(15) + idem(21))  # the second has a gap: neither is written
    assert log.log_end_offset == 20
    assert log.append(idem(15)).first_offset == 20  # state did not move either
    dup = log.append(idem(5) + idem(10))  # a whole retried request
    assert dup.duplicate and (dup.first_offset, dup.last_offset) == (5, 14)
    with pytest.raises(InvalidRecordError):
        log.append(idem(10) + idem(20))  # a duplicate mixed with a new batch
    with pytest.raises(InvalidRecordError):
        log.append(idem(10) + make_batch(2))
    assert log.log_end_offset == 25
    log.close()


def test_log_append_time_duplicates_report_the_original_time(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, message_timestamp_type="LogAppendTime")
    log = Log.open(tmp_path / "t-0", "t", 0, config, clean=True)
    first = log.append(idem(0), now_ms=5_000)
    retry = log.append(idem(0), now_ms=9_000)
    assert first.log_append_time_ms == retry.log_append_time_ms == 5_000
    log.close()


def test_non_idempotent_batches_are_never_duplicates(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    batch = make_batch(4)
    assert [log.append(batch).first_offset for _ in range(3)] == [0, 4, 8]
    assert len(log.producer_state) == 0
    log.close()


def test_follower_appends_feed_the_producer_state(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "leader-0")
    leader.append(idem(0) + idem(5))
    data = b"".join(p.read_bytes() for p in segment_logs(leader.dir))
    follower = open_log(tmp_path / "follower-0")
    follower.append(data, assign_offsets=False)
    # The follower becomes leader: the producer's retry is still recognised.
    retry = follower.append(idem(5))
    assert retry.duplicate and (retry.first_offset, retry.last_offset) == (5, 9)
    assert follower.producer_state.producers == leader.producer_state.producers
    leader.close()
    follower.close()


# --- restarts ---------------------------------------------------------------------------


def fill(dir: Path) -> Log:
    """Enough batches of two producers to roll several segments (and take snapshots)."""
    log = open_log(dir)
    for i in range(12):
        log.append(idem(5 * i))
        log.append(idem(5 * i, pid=99))
    assert log.segment_count > 2
    return log


def assert_retries_recognised(log: Log) -> None:
    end = log.log_end_offset
    for pid in (PID, 99):
        for seq in (55, 50, 45, 40, 35):  # the last five batches of each producer
            info = log.append(idem(seq, pid=pid))
            assert info.duplicate, (pid, seq)
        with pytest.raises(OutOfOrderSequenceNumberError):
            log.append(idem(30, pid=pid))  # sixth from the end: forgotten
    assert log.log_end_offset == end
    assert log.append(idem(60)).first_offset == end


def test_duplicates_are_detected_after_a_clean_restart(tmp_path: Path) -> None:
    fill(tmp_path / "t-0").close()
    end = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert snapshot_offsets(end.dir)[-1] == end.log_end_offset  # written at close
    assert_retries_recognised(end)
    end.close()


def test_duplicates_are_detected_after_an_unclean_restart(tmp_path: Path) -> None:
    log = fill(tmp_path / "t-0")
    rolls = snapshot_offsets(log.dir)
    assert rolls == log.segment_base_offsets[1:]  # one snapshot per roll
    crash(log)
    assert_retries_recognised(Log.open(tmp_path / "t-0", "t", 0, CONFIG))


@pytest.mark.parametrize("clean", [True, False])
def test_duplicates_are_detected_without_any_snapshot(tmp_path: Path, clean: bool) -> None:
    log = fill(tmp_path / "t-0")
    log.close()
    for offset in snapshot_offsets(tmp_path / "t-0"):
        snapshot_path(tmp_path / "t-0", offset).unlink()
    assert_retries_recognised(Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=clean))


def test_a_corrupt_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    fill(tmp_path / "t-0").close()
    offsets = snapshot_offsets(tmp_path / "t-0")
    snapshot_path(tmp_path / "t-0", offsets[-1]).write_bytes(b"\0\0\0\0junk")
    log = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert offsets[-1] not in snapshot_offsets(log.dir)
    assert_retries_recognised(log)


def test_truncation_forgets_the_truncated_batches(tmp_path: Path) -> None:
    log = fill(tmp_path / "t-0")
    end = log.log_end_offset
    log.truncate_to(end - 10)  # the last batch of each producer goes
    assert all(o <= end - 10 for o in snapshot_offsets(log.dir))
    retry = log.append(idem(55))  # no longer a duplicate: written again, in sequence
    assert not retry.duplicate and retry.first_offset == end - 10
    assert log.append(idem(50, pid=99)).duplicate
    log.close()
    reopened = Log.open(tmp_path / "t-0", "t", 0, CONFIG, clean=True)
    assert reopened.append(idem(55)).duplicate
    reopened.close()


def test_retention_evicts_producers_and_their_snapshots(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, retention_ms=0)
    log = Log.open(tmp_path / "t-0", "t", 0, config, clean=True)
    log.append(idem(0, pid=1))
    for i in range(20):
        log.append(idem(5 * i))
    assert log.delete_old_segments(now_ms=10**13) > 0
    assert 1 not in log.producer_state.producers and PID in log.producer_state.producers
    assert all(o >= log.log_start_offset for o in snapshot_offsets(log.dir))
    # Producer 1 is unknown now: any sequence is accepted (KIP-360).
    assert not log.append(idem(40, pid=1)).duplicate
    log.close()


def test_producer_state_through_the_log_manager(tmp_path: Path) -> None:
    manager = LogManager(tmp_path, CONFIG, now_ms=lambda: 1_000)
    manager.startup()
    log = manager.get_or_create_log("orders", 0, CONFIG)
    first = log.append(idem(0))
    manager.shutdown()
    manager = LogManager(tmp_path, CONFIG, now_ms=lambda: 2_000)
    manager.startup()
    reopened = manager.get_log("orders", 0)
    assert reopened is not None
    retry = reopened.append(idem(0))
    assert retry.duplicate and retry.first_offset == first.first_offset
    manager.shutdown()


# --- model: retries are recognised across rolls, truncation-free restarts and crashes ---

actions = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 1), st.integers(1, 4)),
        st.tuples(st.just("retry"), st.integers(0, 1), st.integers(0, 6)),
        st.tuples(st.sampled_from(["close", "crash", "roll"]), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(actions=actions)
def test_retries_match_a_model_across_restarts(
    tmp_path_factory: pytest.TempPathFactory, actions: list[tuple[str, int, int]]
) -> None:
    dir = tmp_path_factory.mktemp("p") / "t-0"
    log = open_log(dir)
    sent: dict[int, list[tuple[int, int, int, int]]] = {}  # pid -> (seq, count, first, last)
    for action, pid, arg in actions:
        history = sent.setdefault(pid, [])
        if action == "send":
            seq = history[-1][0] + history[-1][1] if history else 0
            info = log.append(idem(seq, arg, pid=pid))
            assert not info.duplicate
            history.append((seq, arg, info.first_offset, info.last_offset))
        elif action == "retry" and history:
            back = min(arg, len(history) - 1)
            seq, count, first, last = history[-1 - back]
            end = log.log_end_offset
            if back < 5:
                info = log.append(idem(seq, count, pid=pid))
                assert info.duplicate and (info.first_offset, info.last_offset) == (first, last)
            else:
                with pytest.raises(OutOfOrderSequenceNumberError):
                    log.append(idem(seq, count, pid=pid))
            assert log.log_end_offset == end
        elif action == "close":
            log.close()
            log = open_log(dir)
        elif action == "crash":
            log.flush()  # what is flushed survives; the model has no lost writes
            crash(log)
            log = Log.open(dir, "t", 0, CONFIG, recovery_point=log.recovery_point)
        elif action == "roll":
            log.roll()
    log.close()
