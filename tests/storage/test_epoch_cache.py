"""LeaderEpochCache: Kafka's LeaderEpochFileCache rules, its checkpoint file, and a model."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log.epoch_cache import (
    LEADER_EPOCH_CHECKPOINT,
    UNDEFINED_EPOCH,
    EpochEntry,
    LeaderEpochCache,
    LeaderEpochCheckpointFile,
)
from proto.errors import KafkaStorageError

UNDEFINED = (-1, -1)


def cache_of(*pairs: tuple[int, int]) -> LeaderEpochCache:
    return LeaderEpochCache([EpochEntry(e, o) for e, o in pairs])


def pairs(cache: LeaderEpochCache) -> list[tuple[int, int]]:
    return [(e.epoch, e.start_offset) for e in cache.entries]


# --- assign ---------------------------------------------------------------------------


def test_assign_appends_newer_epochs_only() -> None:
    c = LeaderEpochCache()
    assert c.latest_epoch is None and c.latest_entry is None
    assert c.assign(2, 6)
    assert c.assign(4, 10)
    assert not c.assign(4, 12)  # same epoch, later offset: nothing new
    assert not c.assign(4, 8)  # same epoch, earlier offset: ignored (not newer)
    assert not c.assign(3, 20)  # older epoch: ignored
    assert pairs(c) == [(2, 6), (4, 10)]
    assert c.latest_epoch == 4 and c.latest_entry == EpochEntry(4, 10)
    assert c.earliest_entry == EpochEntry(2, 6)
    assert len(c) == 2


def test_newer_epoch_at_the_same_offset_replaces_the_empty_epoch() -> None:
    c = cache_of((1, 0), (2, 5))
    assert c.assign(3, 5)  # epoch 2 wrote nothing that survived
    assert pairs(c) == [(1, 0), (3, 5)]


def test_newer_epoch_below_later_entries_removes_them() -> None:
    c = cache_of((1, 0), (2, 5), (3, 9))
    assert c.assign(4, 5)
    assert pairs(c) == [(1, 0), (4, 5)]


@pytest.mark.parametrize(("epoch", "offset"), [(-1, 0), (0, -1), (-5, -5)])
def test_assign_refuses_negative_values(epoch: int, offset: int) -> None:
    with pytest.raises(ValueError):
        LeaderEpochCache().assign(epoch, offset)


def test_constructor_refuses_non_monotonic_entries() -> None:
    with pytest.raises(ValueError):
        cache_of((1, 5), (2, 5))
    with pytest.raises(ValueError):
        cache_of((2, 5), (1, 9))


# --- end_offset_for (Kafka's LeaderEpochFileCacheTest cases) ---------------------------


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (6, (6, 20)),  # latest epoch: the log end offset
        (5, (4, 15)),  # between cached epochs: floor epoch, next epoch's start
        (4, (4, 15)),
        (3, (2, 10)),
        (2, (2, 10)),
        # Older than the first entry: it ends where the first entry starts (Kafka 2.0+), so a
        # follower holding only that epoch truncates there instead of keeping a divergent log.
        (1, (1, 6)),
        (0, (0, 6)),
        (7, UNDEFINED),  # newer than anything known
        (UNDEFINED_EPOCH, UNDEFINED),
    ],
)
def test_end_offset_for(requested: int, expected: tuple[int, int]) -> None:
    c = cache_of((2, 6), (4, 10), (6, 15))
    assert c.end_offset_for(requested, log_end_offset=20) == expected


def test_end_offset_for_on_an_empty_cache_is_undefined() -> None:
    assert LeaderEpochCache().end_offset_for(0, 10) == UNDEFINED


def test_end_offset_for_single_epoch() -> None:
    c = cache_of((3, 0))
    assert c.end_offset_for(3, 42) == (3, 42)
    assert c.end_offset_for(2, 42) == (2, 0)
    assert c.end_offset_for(4, 42) == UNDEFINED


def test_epoch_for_offset() -> None:
    c = cache_of((2, 6), (4, 10))
    assert c.epoch_for_offset(5) is None
    assert c.epoch_for_offset(6) == 2
    assert c.epoch_for_offset(9) == 2
    assert c.epoch_for_offset(10) == 4
    assert c.epoch_for_offset(1000) == 4


# --- truncation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("end", "expected", "changed"),
    [
        (16, [(2, 6), (4, 10), (6, 15)], False),  # past every start
        (15, [(2, 6), (4, 10)], True),  # exactly at a start: that epoch goes
        (11, [(2, 6), (4, 10)], True),
        (6, [], True),
        (0, [], True),
        (-1, [(2, 6), (4, 10), (6, 15)], False),  # Kafka ignores a negative end
    ],
)
def test_truncate_from_end(end: int, expected: list[tuple[int, int]], changed: bool) -> None:
    c = cache_of((2, 6), (4, 10), (6, 15))
    assert c.truncate_from_end(end) is changed
    assert pairs(c) == expected


@pytest.mark.parametrize(
    ("start", "expected", "changed"),
    [
        (5, [(2, 6), (4, 10), (6, 15)], False),  # before the first entry
        (6, [(2, 6), (4, 10), (6, 15)], False),  # exactly the first start
        (8, [(2, 8), (4, 10), (6, 15)], True),  # inside epoch 2: its start moves
        (10, [(4, 10), (6, 15)], True),
        (12, [(4, 12), (6, 15)], True),
        (100, [(6, 100)], True),  # past everything: the latest epoch covers it
    ],
)
def test_truncate_from_start(start: int, expected: list[tuple[int, int]], changed: bool) -> None:
    c = cache_of((2, 6), (4, 10), (6, 15))
    assert c.truncate_from_start(start) is changed
    assert pairs(c) == expected


def test_clear_and_replace() -> None:
    c = cache_of((1, 1))
    assert c.clear() and not c.clear()
    c.replace([EpochEntry(3, 4), EpochEntry(5, 9)])
    assert pairs(c) == [(3, 4), (5, 9)]
    assert "3@4" in repr(c)


# --- checkpoint file --------------------------------------------------------------------


def test_every_change_is_written_in_kafkas_format(tmp_path: Path) -> None:
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    file = LeaderEpochCheckpointFile(path)
    c = LeaderEpochCache(checkpoint=file)
    assert not path.exists()
    c.assign(0, 0)
    c.assign(3, 120)
    assert path.read_text() == "0\n2\n0 0\n3 120\n"
    c.assign(3, 200)  # no change, no write: the file stays as it was
    c.truncate_from_end(120)
    assert path.read_text() == "0\n1\n0 0\n"
    c.truncate_from_start(50)
    assert file.read() == [EpochEntry(0, 50)]
    c.clear()
    assert path.read_text() == "0\n0\n"
    assert not (tmp_path / (LEADER_EPOCH_CHECKPOINT + ".tmp")).exists()


def test_missing_checkpoint_reads_as_none(tmp_path: Path) -> None:
    assert LeaderEpochCheckpointFile(tmp_path / "nope").read() is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1\n0\n",  # unknown version
        "0\n2\n1 5\n",  # count disagrees
        "0\n1\n1\n",  # missing offset
        "0\n1\nx 5\n",
        "0\n2\n3 5\n2 9\n",  # epochs not increasing
        "0\n2\n2 5\n3 5\n",  # offsets not increasing
        "0\n1\n-1 5\n",
    ],
)
def test_malformed_checkpoint_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    path.write_text(text)
    with pytest.raises(KafkaStorageError):
        LeaderEpochCheckpointFile(path).read()


# --- model: the cache is always what the batches of the log imply ----------------------

# A log is a list of (base offset, record count, epoch) with non-decreasing epochs; the
# cache must equal "first offset of each epoch present, the first clipped to the log
# start", whatever appends, truncations and retention happened.

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 5), st.integers(0, 2)),
        st.tuples(st.just("truncate_end"), st.integers(0, 60), st.just(0)),
        st.tuples(st.just("truncate_start"), st.integers(0, 60), st.just(0)),
    ),
    max_size=40,
)


def derived(batches: list[tuple[int, int, int]], log_start: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for base, _count, epoch in batches:
        if not out or epoch > out[-1][0]:
            out.append((epoch, base))
    if out:
        out[0] = (out[0][0], max(out[0][1], log_start))
    return out


@settings(max_examples=300, deadline=None)
@given(ops=ops)
def test_cache_tracks_the_log(ops: list[tuple[str, int, int]]) -> None:
    cache = LeaderEpochCache()
    batches: list[tuple[int, int, int]] = []
    log_start = leo = 0
    epoch = 0
    for op, a, b in ops:
        if op == "append":
            epoch += b
            batches.append((leo, a, epoch))
            cache.assign(epoch, leo)
            leo += a
        elif op == "truncate_end":
            # Log.truncate_to drops whole batches from the one containing ``a``.
            if a < leo and a > log_start:
                batches = [x for x in batches if x[0] + x[1] <= a]
                leo = batches[-1][0] + batches[-1][1] if batches else log_start
                cache.truncate_from_end(leo)
        elif batches:
            # Retention removes whole leading batches; the log start is a batch boundary.
            keep = [x for x in batches if x[0] >= min(a, leo)]
            if keep and keep[0][0] > log_start:
                batches, log_start = keep, keep[0][0]
                cache.truncate_from_start(log_start)
        assert pairs(cache) == derived(batches, log_start)
        entries = cache.entries
        assert all(
            x.epoch < y.epoch and x.start_offset < y.start_offset
            for x, y in itertools.pairwise(entries)
        )
        # end_offset_for agrees with a brute force over the batches.
        for requested in range(epoch + 2):
            got = cache.end_offset_for(requested, leo)
            present = [e for e, _o in derived(batches, log_start)]
            if not present or requested > present[-1]:
                assert got == UNDEFINED
            elif requested < present[0]:
                assert got == (requested, derived(batches, log_start)[0][1])
            else:
                floor = max(e for e in present if e <= requested)
                later = [x[0] for x in batches if x[2] > requested]
                assert got == (floor, later[0] if later else leo)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 100)), max_size=30))
def test_arbitrary_assigns_keep_entries_strictly_increasing(calls: list[tuple[int, int]]) -> None:
    cache = LeaderEpochCache()
    for epoch, offset in calls:
        before = cache.latest_epoch
        changed = cache.assign(epoch, offset)
        assert changed == (before is None or epoch > before)
        entries = cache.entries
        assert entries[-1].epoch >= epoch
        assert all(
            x.epoch < y.epoch and x.start_offset < y.start_offset
            for x, y in itertools.pairwise(entries)
        )
