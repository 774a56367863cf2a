"""ProducerStateManager: Kafka's idempotent-producer sequence rules, rebuild, snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log.producer_snapshot import (
    delete_snapshots,
    load_producer_state,
    read_snapshot,
    snapshot_offsets,
    snapshot_path,
    write_snapshot,
)
from broker.log.producer_state import (
    ACCEPT,
    MAX_SEQUENCE,
    NUM_BATCHES_TO_RETAIN,
    BatchMetadata,
    Duplicate,
    ProducerEntry,
    ProducerStateManager,
    decrement_sequence,
    increment_sequence,
)
from proto.batch import BatchHeader, build_raw, read_header
from proto.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    KafkaStorageError,
    OutOfOrderSequenceNumberError,
    error_name,
    for_code,
)

PID = 1000


def header(
    base_offset: int, count: int, pid: int = PID, epoch: int = 0, seq: int = 0, ts: int = 5
) -> BatchHeader:
    raw = build_raw(b"", count, ts, ts, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    return read_header(raw)._replace(base_offset=base_offset)


def written(state: ProducerStateManager, offset: int, seq: int, count: int, epoch: int = 0) -> None:
    """Check then record a batch of ``count`` records at ``offset`` (a leader append)."""
    assert state.check(PID, epoch, seq, count) == ACCEPT
    state.update(PID, epoch, seq, increment_sequence(seq, count - 1), offset, offset + count - 1)


def test_invalid_producer_epoch_is_registered() -> None:
    assert for_code(47) is InvalidProducerEpochError
    assert error_name(47) == "INVALID_PRODUCER_EPOCH"
    assert InvalidProducerEpochError.code == 47


def test_non_idempotent_batches_are_always_accepted() -> None:
    state = ProducerStateManager()
    for _ in range(3):
        assert state.check(-1, -1, -1, 10) == ACCEPT
        state.update(-1, -1, -1, -1, 0, 9)
    assert len(state) == 0


def test_unknown_producer_may_start_at_any_sequence() -> None:
    state = ProducerStateManager()
    assert state.check(PID, 0, 0, 5) == ACCEPT
    assert state.check(PID, 3, 77, 5) == ACCEPT  # e.g. its earlier batches were deleted


@pytest.mark.parametrize(("epoch", "seq", "count"), [(-1, 0, 1), (0, -1, 1), (0, 0, 0)])
def test_idempotent_batch_needs_epoch_sequence_and_records(
    epoch: int, seq: int, count: int
) -> None:
    with pytest.raises(InvalidRecordError):
        ProducerStateManager().check(PID, epoch, seq, count)


def test_in_sequence_batches_are_accepted_and_gaps_refused() -> None:
    state = ProducerStateManager()
    written(state, 0, 0, 5)
    written(state, 5, 5, 3)
    with pytest.raises(OutOfOrderSequenceNumberError):
        state.check(PID, 0, 9, 1)  # 8 is missing
    with pytest.raises(OutOfOrderSequenceNumberError):
        state.check(PID, 0, 6, 2)  # overlaps, but is not a remembered batch
    entry = state.last_entry(PID)
    assert entry is not None and entry.last_seq == 7 and entry.last_offset == 7


def test_retries_of_the_last_five_batches_get_their_offsets() -> None:
    state = ProducerStateManager()
    offsets = []
    for i in range(NUM_BATCHES_TO_RETAIN + 2):
        written(state, 100 + 10 * i, 2 * i, 2)
        offsets.append((100 + 10 * i, 100 + 10 * i + 1))
    for i in range(2, NUM_BATCHES_TO_RETAIN + 2):
        assert state.check(PID, 0, 2 * i, 2) == Duplicate(*offsets[i], timestamp=-1)
    for i in range(2):  # forgotten: the oldest are no longer known duplicates
        with pytest.raises(OutOfOrderSequenceNumberError):
            state.check(PID, 0, 2 * i, 2)
    entry = state.last_entry(PID)
    assert entry is not None and len(entry.batches) == NUM_BATCHES_TO_RETAIN


def test_producer_epochs() -> None:
    state = ProducerStateManager()
    written(state, 0, 0, 5, epoch=3)
    with pytest.raises(InvalidProducerEpochError):
        state.check(PID, 2, 5, 1)
    with pytest.raises(OutOfOrderSequenceNumberError):
        state.check(PID, 4, 5, 1)  # a new epoch restarts at 0
    written(state, 5, 0, 5, epoch=4)
    # Epoch 3's batches are forgotten: a late retry from the fenced epoch is refused.
    with pytest.raises(InvalidProducerEpochError):
        state.check(PID, 3, 0, 5)
    assert state.check(PID, 4, 0, 5) == Duplicate(5, 9)


def test_sequence_wraps_at_int_max() -> None:
    state = ProducerStateManager()
    written(state, 0, MAX_SEQUENCE - 1, 2)  # sequences 2^31-2, 2^31-1
    assert state.check(PID, 0, 0, 3) == ACCEPT
    written(state, 2, 0, 3)
    written(state, 5, 3, 1)  # 3 follows 2
    # A batch spanning the wrap: 2^31-2, 2^31-1, 0, 1.
    wrap = ProducerStateManager()
    written(wrap, 0, MAX_SEQUENCE - 1, 4)
    entry = wrap.last_entry(PID)
    assert entry is not None and entry.last_seq == 1
    assert wrap.check(PID, 0, MAX_SEQUENCE - 1, 4) == Duplicate(0, 3)
    assert wrap.check(PID, 0, 2, 1) == ACCEPT
    with pytest.raises(OutOfOrderSequenceNumberError):
        wrap.check(PID, 0, MAX_SEQUENCE, 1)


@given(st.integers(0, MAX_SEQUENCE), st.integers(0, 1000))
def test_increment_and_decrement_are_inverse(seq: int, delta: int) -> None:
    up = increment_sequence(seq, delta)
    assert 0 <= up <= MAX_SEQUENCE
    assert up == (seq + delta) % (MAX_SEQUENCE + 1)
    assert decrement_sequence(up, delta) == seq


def test_staged_append_checks_against_its_own_earlier_batches() -> None:
    state = ProducerStateManager()
    written(state, 0, 0, 5)
    staged = state.begin()
    assert staged.check(PID, 0, 5, 5) == ACCEPT
    staged.update_from_header(header(5, 5, seq=5))
    assert staged.check(PID, 0, 10, 1) == ACCEPT  # follows the staged batch
    assert state.check(PID, 0, 5, 5) == ACCEPT  # the manager did not move yet
    state.commit(staged)
    assert state.check(PID, 0, 5, 5) == Duplicate(5, 9, timestamp=5)
    assert staged.staged == {}


def test_truncate_head_evicts_producers_wholly_before_the_log_start() -> None:
    state = ProducerStateManager()
    state.update(1, 0, 0, 4, 0, 4)
    state.update(2, 0, 0, 4, 5, 9)
    assert state.truncate_head(5) == 1
    assert sorted(state.producers) == [2]
    state.clear()
    assert len(state) == 0 and "producers=0" in repr(state)


# --- rebuild from headers equals the live state ----------------------------------------

batches = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(1, 4)),  # pid, epoch bump, n
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(batches=batches)
def test_rebuild_from_headers_equals_live_updates(batches: list[tuple[int, int, int]]) -> None:
    live = ProducerStateManager()
    headers: list[BatchHeader] = []
    offset = 0
    seqs: dict[int, tuple[int, int]] = {}
    for pid, bump, count in batches:
        epoch, seq = seqs.get(pid, (0, 0))
        if bump:
            epoch, seq = epoch + 1, 0
        h = header(offset, count, pid=pid, epoch=epoch, seq=seq)
        staged = live.begin()
        assert staged.check(pid, epoch, seq, count) == ACCEPT
        staged.update_from_header(h)
        live.commit(staged)
        headers.append(h)
        seqs[pid] = (epoch, seq + count)
        offset += count
    rebuilt = ProducerStateManager([ProducerEntry(99, 0, (BatchMetadata(0, 0, 0, 0),))])
    rebuilt.rebuild(iter(headers))
    assert rebuilt.producers == live.producers
    # Every batch still remembered is a duplicate of itself, with its offsets.
    for entry in live.producers.values():
        for b in entry.batches:
            n = b.last_offset - b.first_offset + 1
            got = live.check(entry.producer_id, entry.producer_epoch, b.first_seq, n)
            assert got == Duplicate(b.first_offset, b.last_offset, b.timestamp)


# --- snapshots --------------------------------------------------------------------------

LOG = structlog.get_logger("test")


def sample_state() -> ProducerStateManager:
    state = ProducerStateManager()
    state.update(7, 2, 0, 4, 0, 4, 111)
    state.update(7, 2, 5, 9, 5, 9, 112)
    state.update(8, 0, 10, 10, 10, 10)
    return state


def test_snapshot_round_trip(tmp_path: Path) -> None:
    state = sample_state()
    write_snapshot(tmp_path, 11, state.producers, fsync=True)
    assert snapshot_offsets(tmp_path) == [11]
    assert snapshot_path(tmp_path, 11).name == f"{11:020d}.snapshot"
    loaded = ProducerStateManager(read_snapshot(snapshot_path(tmp_path, 11)))
    assert loaded.producers == state.producers


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "rename"])
def test_damaged_snapshot_raises(tmp_path: Path, damage: str) -> None:
    write_snapshot(tmp_path, 11, sample_state().producers, fsync=False)
    path = snapshot_path(tmp_path, 11)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-3])
    elif damage == "flip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.rename(snapshot_path(tmp_path, 12))  # offset inside disagrees with the name
        path = snapshot_path(tmp_path, 12)
    with pytest.raises(KafkaStorageError):
        read_snapshot(path)


def test_load_uses_the_newest_usable_snapshot_and_replays_after_it(tmp_path: Path) -> None:
    hs = [header(0, 5, seq=0), header(5, 5, seq=5), header(10, 5, seq=10)]
    old = ProducerStateManager()
    old.replay(hs[:1])
    write_snapshot(tmp_path, 5, old.producers, fsync=False)
    write_snapshot(tmp_path, 99, old.producers, fsync=False)  # past the log end: stale
    snapshot_path(tmp_path, 10).write_bytes(b"torn")  # newest in range, but corrupt
    asked: list[int] = []

    def headers_from(offset: int) -> list[BatchHeader]:
        asked.append(offset)
        return [h for h in hs if h.next_offset > offset]

    state, start = load_producer_state(
        tmp_path, log_start_offset=0, log_end_offset=15, headers_from=headers_from, log=LOG
    )
    assert start == 5 and asked == [5]
    full = ProducerStateManager()
    full.replay(hs)
    assert state.producers == full.producers
    assert snapshot_offsets(tmp_path) == [5]  # the stale and the corrupt one are gone


def test_load_without_snapshot_replays_the_whole_log(tmp_path: Path) -> None:
    hs = [header(20, 5, seq=0)]
    write_snapshot(tmp_path, 10, ProducerStateManager().producers, fsync=False)  # < start
    state, start = load_producer_state(
        tmp_path,
        log_start_offset=20,
        log_end_offset=25,
        headers_from=lambda offset: [h for h in hs if h.next_offset > offset],
        log=LOG,
    )
    assert start == 20 and sorted(state.producers) == [PID]


def test_snapshot_below_the_log_start_is_ignored_but_one_at_it_is_used(tmp_path: Path) -> None:
    state = ProducerStateManager()
    state.update(1, 0, 0, 4, 0, 4)  # wholly before the log start: evicted on load
    state.update(2, 0, 0, 4, 10, 14)
    write_snapshot(tmp_path, 15, state.producers, fsync=False)
    loaded, start = load_producer_state(
        tmp_path, log_start_offset=10, log_end_offset=15, headers_from=lambda o: [], log=LOG
    )
    assert start == 15 and sorted(loaded.producers) == [2]


def test_delete_snapshots(tmp_path: Path) -> None:
    for offset in (0, 10, 20, 30):
        write_snapshot(tmp_path, offset, {}, fsync=False)
    assert delete_snapshots(tmp_path, below=10, above=20) == 2
    assert snapshot_offsets(tmp_path) == [10, 20]
