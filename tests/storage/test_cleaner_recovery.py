"""The log cleaner under crashes, against a model (hypothesis), and the offset gaps it leaves
for the rest of the storage engine to handle."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log import Log
from broker.log.cleaner import LogCleaner
from proto.batch import records_of

from .cleaner_helpers import (
    COMPACT,
    Entry,
    Row,
    all_headers,
    append_entries,
    compacted,
    open_log,
    read_rows,
)
from .helpers import crash, file_bytes


class Crash(BaseException):
    """The process dies here: no handler may clean up after it."""


_FILE_OPS = ("replace", "fsync", "write", "utime", "unlink")


@contextmanager
def dying_at(step: int | None) -> Iterator[list[int]]:
    """Count calls to file operations; the ``step``-th one (and every one after it) raises
    ``Crash`` instead of running, as if the process had died just before it."""
    calls = [0]
    saved = {name: getattr(os, name) for name in _FILE_OPS}

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def op(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if step is not None and calls[0] >= step:
                raise Crash
            return real(*args, **kwargs)

        return op

    for name, real in saved.items():
        setattr(os, name, wrap(real))
    try:
        yield calls
    finally:
        for name, real in saved.items():
            setattr(os, name, real)


def scenario(dir: Path) -> tuple[Log, list[Row]]:
    """A log cleaned once, then dirtied again: the next cleaning merges the small cleaned
    segments (several old segments per cleaned one) and shrinks the new ones."""
    log = open_log(dir, dataclasses.replace(COMPACT, segment_bytes=700))
    model: list[Row] = []
    keys = [(f"k{i % 9}".encode(), None if i % 13 == 5 else f"v{i}".encode()) for i in range(50)]
    append_entries(log, keys, model)
    log.roll(0)
    log.flush()
    assert LogCleaner(dir).clean(log, now_ms=0) is not None
    append_entries(log, [e for e in keys if e[0] in (b"k0", b"k1", b"k2")], model)
    log.roll(0)
    log.flush()  # the recovery point passes every closed segment, as the manager ensures
    return log, model


def assert_segments_hold_their_offsets(log: Log) -> None:
    """Every batch of a segment lies in [its base offset, the next segment's base)."""
    bases = [*log.segment_base_offsets, log.log_end_offset]
    for base, h in all_headers(log):
        nxt = bases[bases.index(base) + 1]
        assert base <= h.base_offset and h.last_offset < nxt, (base, h.base_offset, nxt)


def test_a_crash_at_any_step_recovers_a_consistent_log(tmp_path: Path) -> None:
    log, model = scenario(tmp_path / "dry")
    end = log.segment_base_offsets[-1]
    expected = compacted(model, end)
    with dying_at(None) as calls:
        stats = LogCleaner(tmp_path / "dry").clean(log, now_ms=0)
    assert stats is not None and stats.segments_after < stats.segments_before
    assert read_rows(log) == expected
    log.close()
    steps = calls[0]
    assert steps > 20
    for step in range(1, steps + 1):
        dir = tmp_path / f"crash-{step}"
        log, model = scenario(dir)
        recovery_point = log.recovery_point
        with dying_at(step), pytest.raises(Crash):
            LogCleaner(dir).clean(log, now_ms=0)
        crash(log)
        log = open_log(dir, log.config, clean=False, recovery_point=recovery_point)
        assert not list(log.dir.glob("*.cleaned")) and not list(log.dir.glob("*.swap"))
        assert_segments_hold_their_offsets(log)
        rows = read_rows(log)
        # Nothing invented, nothing that must survive lost, offsets in order.
        assert set(expected) <= set(rows) <= set(model), step
        assert [r[0] for r in rows] == sorted({r[0] for r in rows})
        assert log.log_end_offset == len(model)
        # The log works: a new cleaning finishes the job, appends continue.
        LogCleaner(dir).clean(log, now_ms=0)
        assert read_rows(log) == expected, step
        append_entries(log, [(b"after", b"crash")], model)
        assert read_rows(log)[-1] == (len(model) - 1, b"after", b"crash")
        log.close()


keys = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f", None])
values = st.one_of(st.none(), st.binary(min_size=1, max_size=40))
ops = st.lists(
    st.one_of(
        st.lists(st.tuples(keys, values), min_size=1, max_size=6),  # one batch
        st.just("roll"),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops, segment_bytes=st.sampled_from([300, 600, 2000]), map_size=st.sampled_from([2, 50]))
def test_compacted_log_equals_last_write_per_key(
    ops: list[list[Entry] | str], segment_bytes: int, map_size: int
) -> None:
    config = dataclasses.replace(COMPACT, segment_bytes=segment_bytes, delete_retention_ms=100)
    with tempfile.TemporaryDirectory() as tmp:
        log = open_log(Path(tmp), config)
        model: list[Row] = []
        for op in ops:
            if op == "roll":
                log.roll(0)
            else:
                assert not isinstance(op, str)
                append_entries(log, op, model, per_batch=len(op))
        log.flush()
        end = log.segment_base_offsets[-1]  # the active segment is never cleaned
        cleaner = LogCleaner(Path(tmp), offset_map_entries=map_size)
        while cleaner.clean(log, now_ms=1_000) is not None:
            pass
        assert read_rows(log) == compacted(model, end)
        assert read_rows(log, max_bytes=1) == compacted(model, end)
        # After delete.retention.ms the tombstones go too.
        while cleaner.clean(log, now_ms=1_100) is not None:
            pass
        assert read_rows(log) == compacted(model, end, drop_tombstones=True)
        log.close()
        log = open_log(Path(tmp), config)
        assert read_rows(log) == compacted(model, end, drop_tombstones=True)
        log.close()


# --- offset gaps: what the rest of the engine still has to accept ----------------------


def gapped_log(dir: Path) -> tuple[Log, list[Row]]:
    """A cleaned log whose first segment has an offset gap inside (5..9, between the
    batches [3, 4] and [10, 11]) and one at its end (15..19)."""
    log = open_log(dir, dataclasses.replace(COMPACT, segment_bytes=700))  # no merging
    model: list[Row] = []
    append_entries(log, [(b"k%d" % i, b"v") for i in range(20)], model)
    log.roll(0)
    append_entries(log, [(b"k%d" % i, b"w") for i in (*range(5, 10), *range(15, 20))], model)
    log.roll(0)
    log.flush()
    assert LogCleaner(dir).clean(log, now_ms=0) is not None
    assert log.segment_base_offsets[:2] == [0, 20]
    return log, model


def test_gapped_log_reads_from_each_batch_start(tmp_path: Path) -> None:
    log, model = gapped_log(tmp_path)
    rows = read_rows(log)
    assert rows == compacted(model, log.segment_base_offsets[-1])
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, *range(20, 30)]
    for offset in (0, 3, 10, 12, 20):  # batch starts: the read starts there
        res = log.read(offset, 1)
        assert res.records is not None
        data = file_bytes(res.records.fd, res.records.position, res.records.size)
        assert next(iter(records_of(data))).offset == offset
    log.close()


@pytest.mark.parametrize(("gap", "max_bytes"), [(5, 1), (15, 1 << 20)])
def test_consumer_read_inside_a_gap(tmp_path: Path, gap: int, max_bytes: int) -> None:
    log, _model = gapped_log(tmp_path)
    try:
        res = log.read(gap, max_bytes)
        assert res.records is not None
        data = file_bytes(res.records.fd, res.records.position, res.records.size)
        assert any(r.offset >= gap for r in records_of(data))
    finally:
        log.close()


def test_unclean_open_rescanning_a_compacted_segment_keeps_it(tmp_path: Path) -> None:
    log, model = gapped_log(tmp_path)
    rows = read_rows(log)
    crash(log)
    log = open_log(tmp_path, clean=False, recovery_point=0)
    try:
        assert read_rows(log) == rows and log.log_end_offset == len(model)
    finally:
        log.close()


def test_follower_copies_a_compacted_log(tmp_path: Path) -> None:
    leader, _model = gapped_log(tmp_path / "leader")
    follower = open_log(tmp_path / "follower")
    try:
        offset = 0
        while offset < leader.log_end_offset:
            res = leader.read(offset, 1 << 20)
            assert res.records is not None
            data = file_bytes(res.records.fd, res.records.position, res.records.size)
            follower.append(data, assign_offsets=False, now_ms=0)
            offset = follower.log_end_offset
        assert read_rows(follower) == read_rows(leader)
    finally:
        leader.close()
        follower.close()
