"""The log cleaner: what compaction keeps and removes, when it runs, what it preserves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from broker.log import LogConfig, LogManager, read_checkpoint
from broker.log.cleaner import CLEANER_OFFSET_CHECKPOINT, LogCleaner
from broker.log.compaction import (
    DELETE_HORIZON_FLAG,
    CleaningCounts,
    OffsetMap,
    decode_records,
    filter_batch,
)
from proto.batch import CODEC_ZSTD, build_raw, read_header, records_of, set_base_offset
from proto.errors import InvalidConfigurationError

from .cleaner_helpers import (
    COMPACT,
    Entry,
    Row,
    all_headers,
    append_entries,
    compacted,
    keyed_batch,
    open_log,
    read_rows,
)


def entries(n: int, keys: int = 7, tag: str = "v") -> list[Entry]:
    return [(f"k{i % keys}".encode(), f"{tag}{i}".encode()) for i in range(n)]


def test_last_value_per_key_survives_at_its_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    model: list[Row] = []
    append_entries(log, entries(150), model)
    log.flush()
    assert log.segment_count >= 4
    end = log.segment_base_offsets[-1]
    cleaner = LogCleaner(tmp_path)
    stats = cleaner.clean(log, now_ms=10_000)
    assert stats is not None and stats.end_offset == end
    assert read_rows(log) == compacted(model, end)
    assert stats.counts.records_kept == 7
    assert stats.counts.superseded_removed == end - 7
    assert log.log_start_offset == 0 and log.log_end_offset == len(model)
    assert read_checkpoint(tmp_path / CLEANER_OFFSET_CHECKPOINT) == {("t", 0): end}
    assert LogCleaner(tmp_path).checkpoint_offset("t", 0) == end
    assert not list(log.dir.glob("*.cleaned")) and not list(log.dir.glob("*.swap"))
    # A clean restart loads the cleaned segments as they are.
    rows = read_rows(log)
    log.close()
    log = open_log(tmp_path)
    assert read_rows(log) == rows and log.recovered_bytes_scanned == 0
    log.close()


def test_keyless_records_are_removed_and_opaque_batches_kept(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    model: list[Row] = []
    mixed: list[Entry] = [(b"a", b"1"), (None, b"no key"), (b"a", b"2"), (None, b"x")]
    append_entries(log, mixed * 20, model)
    # A batch whose records are not msgpack (0xc1 is never used): CRC valid, never decoded
    # by the broker at produce time. The cleaner must keep it byte for byte.
    garbage = build_raw(b"\xc1\xc1", 1, 5, 5)
    garbage_offset = log.append(garbage, now_ms=0).first_offset
    append_entries(log, mixed * 20, model)
    log.roll(0)
    log.flush()
    stats = LogCleaner(tmp_path).clean(log, now_ms=0)
    assert stats is not None
    assert stats.counts.keyless_removed == 80 and stats.counts.opaque_batches == 1
    kept = [h for _b, h in all_headers(log)]
    last_a = max(o for o, k, _v in model if k == b"a")
    assert [h.base_offset for h in kept] == [garbage_offset, last_a]
    raw = b"".join(p.read_bytes() for p in sorted(log.dir.glob("*.log")))
    assert garbage[16:] in raw  # unchanged but for the offset and epoch the log patched
    log.close()


def test_tombstone_kept_until_delete_retention_after_its_cleaning(tmp_path: Path) -> None:
    config = dataclasses.replace(COMPACT, delete_retention_ms=1_000)
    log = open_log(tmp_path, config)
    model: list[Row] = []
    append_entries(log, [(b"gone", b"old"), (b"stay", b"x"), (b"gone", None)], model, ts=500)
    append_entries(log, entries(60), model)
    log.roll(0)
    log.flush()
    cleaner = LogCleaner(tmp_path)
    assert cleaner.clean(log, now_ms=10_000) is not None
    rows = read_rows(log)
    assert (2, b"gone", None) in rows and (0, b"gone", b"old") not in rows
    tomb_batch = next(h for _b, h in all_headers(log) if h.base_offset <= 2 <= h.last_offset)
    assert tomb_batch.attributes & DELETE_HORIZON_FLAG and tomb_batch.first_timestamp == 11_000
    raw = (log.dir / f"{log.segment_base_offsets[0]:020d}.log").read_bytes()
    tomb = next(r for r in records_of(raw) if r.offset == 2)
    assert tomb.timestamp == 502 and tomb.value is None  # record timestamps unchanged
    # Before the horizon: nothing due, nothing dirty, so no cleaning; a cleaning forced by
    # new dirty data keeps the tombstone.
    assert cleaner.clean(log, now_ms=10_999) is None
    append_entries(log, entries(30, tag="w"), model)
    log.roll(0)
    log.flush()
    assert cleaner.clean(log, now_ms=10_999) is not None
    assert (2, b"gone", None) in read_rows(log)
    # At the horizon the cleaner runs without dirty data and drops it.
    stats = cleaner.clean(log, now_ms=11_000)
    assert stats is not None and stats.counts.tombstones_removed == 1
    end = log.segment_base_offsets[-1]
    assert read_rows(log) == compacted(model, end, drop_tombstones=True)
    assert cleaner.clean(log, now_ms=20_000) is None  # nothing left to do
    log.close()


def test_compact_delete_also_applies_retention(tmp_path: Path) -> None:
    both = dataclasses.replace(COMPACT, cleanup_policy="compact,delete", retention_ms=5_000)
    log = open_log(tmp_path, both)
    model: list[Row] = []
    append_entries(log, entries(60), model, ts=1_000)
    append_entries(log, entries(60, tag="new"), model, ts=100_000)
    log.roll(0)
    log.flush()
    assert LogCleaner(tmp_path).clean(log, now_ms=104_000) is not None
    assert log.delete_old_segments(now_ms=104_000) > 0
    assert log.log_start_offset > 0
    assert all(o >= log.log_start_offset for o, _k, _v in read_rows(log))
    # compact alone never deletes by time
    log.update_config(dataclasses.replace(both, cleanup_policy="compact"))
    assert log.delete_old_segments(now_ms=10**12) == 0
    log.close()


def test_dirty_ratio_decides_whether_to_clean(tmp_path: Path) -> None:
    config = dataclasses.replace(COMPACT, min_cleanable_dirty_ratio=0.5)
    log = open_log(tmp_path, config)
    model: list[Row] = []
    append_entries(log, entries(300, keys=60), model)
    log.roll(0)
    log.flush()
    cleaner = LogCleaner(tmp_path)
    first = cleaner.clean(log, now_ms=0)
    assert first is not None and first.dirty_ratio == 1.0
    clean_bytes = log.size_bytes - log.segments[-1].size
    append_entries(log, entries(30, keys=60, tag="w"), model)
    log.roll(0)
    log.flush()
    plan = cleaner.plan(log, now_ms=0)
    assert plan is None  # dirty share below one half
    while True:
        append_entries(log, entries(30, keys=60, tag="x"), model)
        log.roll(0)
        log.flush()
        plan = cleaner.plan(log, now_ms=0)
        if plan is not None:
            break
    assert plan.range.dirty_ratio >= 0.5 and plan.range.clean_bytes == clean_bytes
    assert cleaner.install(cleaner.build(plan)) is not None
    assert read_rows(log) == compacted(model, log.segment_base_offsets[-1])
    log.close()


def test_min_compaction_lag_keeps_recent_records(tmp_path: Path) -> None:
    config = dataclasses.replace(COMPACT, min_compaction_lag_ms=5_000)
    log = open_log(tmp_path, config)
    model: list[Row] = []
    append_entries(log, entries(90), model, ts=1_000)
    log.roll(0)
    young = log.log_end_offset
    append_entries(log, entries(90, tag="y"), model, ts=100_000)
    log.roll(0)
    log.flush()
    stats = LogCleaner(tmp_path).clean(log, now_ms=104_000)
    assert stats is not None and stats.end_offset == young
    rows = read_rows(log)
    assert rows == compacted(model, young)
    assert [r for r in rows if r[0] >= young] == [r for r in model if r[0] >= young]
    log.close()


def test_small_cleaned_segments_merge_up_to_segment_bytes(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    model: list[Row] = []
    append_entries(log, entries(200, keys=40), model)
    log.roll(0)
    log.flush()
    cleaner = LogCleaner(tmp_path)
    first = cleaner.clean(log, now_ms=0)
    assert first is not None and first.segments_after == first.segments_before  # sizes as read
    before = log.segment_count
    append_entries(log, entries(30, keys=40, tag="w"), model)
    log.roll(0)
    log.flush()
    second = cleaner.clean(log, now_ms=0)
    assert second is not None and second.segments_after < second.segments_before
    assert log.segment_count < before
    assert all(s.size <= COMPACT.segment_bytes for s in log.segments)
    assert read_rows(log) == compacted(model, log.segment_base_offsets[-1])
    log.close()


def test_rewritten_batches_keep_producer_and_epoch_fields(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    model: list[Row] = []
    seq = 0
    for i in range(40):  # keys a0..a3 with one short-lived key in the middle of each batch
        chunk: list[Entry] = [(b"a%d" % (i % 4), b"%d" % i), (b"tmp", b"t"), (b"b%d" % i, b"x")]
        batch = keyed_batch(chunk, producer_id=7, producer_epoch=2, base_sequence=seq)
        info = log.append(batch, leader_epoch=3, now_ms=0)
        model.extend((info.first_offset + j, k, v) for j, (k, v) in enumerate(chunk))
        seq += len(chunk)
    log.roll(0)
    log.flush()
    assert LogCleaner(tmp_path).clean(log, now_ms=0) is not None
    headers = [h for _b, h in all_headers(log)]
    assert any(h.record_count < 3 for h in headers)  # runs split out of source batches
    for h in headers:
        assert (h.producer_id, h.producer_epoch, h.leader_epoch) == (7, 2, 3)
        assert h.base_sequence == h.base_offset  # sequence of the run's first record
    assert read_rows(log) == compacted(model, log.segment_base_offsets[-1])
    # The producer's state survives a restart: its next sequence is accepted.
    log.close()
    log = open_log(tmp_path)
    nxt = keyed_batch([(b"a0", b"z")], producer_id=7, producer_epoch=2, base_sequence=seq)
    assert log.append(nxt, leader_epoch=3, now_ms=0).first_offset == len(model)
    log.close()


def test_compressed_batches_stay_compressed(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    model: list[Row] = []
    for i in range(60):
        chunk: list[Entry] = [(b"k%d" % (i % 5), b"v" * 50), (b"u%d" % i, b"w" * 50)]
        info = log.append(keyed_batch(chunk, codec=CODEC_ZSTD), now_ms=0)
        model.extend((info.first_offset + j, k, v) for j, (k, v) in enumerate(chunk))
    log.roll(0)
    log.flush()
    assert LogCleaner(tmp_path).clean(log, now_ms=0) is not None
    assert all(h.codec == CODEC_ZSTD for _b, h in all_headers(log))
    assert read_rows(log) == compacted(model, log.segment_base_offsets[-1])
    log.close()


def test_a_full_offset_map_cleans_in_several_passes(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    model: list[Row] = []
    append_entries(log, entries(240, keys=30), model)
    log.roll(0)
    log.flush()
    end = log.segment_base_offsets[-1]
    cleaner = LogCleaner(tmp_path, offset_map_entries=10)
    ends = []
    while (stats := cleaner.clean(log, now_ms=0)) is not None:
        ends.append(stats.end_offset)
        assert stats.map_entries <= 30
    assert len(ends) > 1 and ends == sorted(ends) and ends[-1] == end
    assert read_rows(log) == compacted(model, end)
    log.close()


def test_cleaning_is_abandoned_when_the_segments_change(tmp_path: Path) -> None:
    config = dataclasses.replace(COMPACT, cleanup_policy="compact,delete", retention_ms=1_000)
    log = open_log(tmp_path, config)
    model: list[Row] = []
    append_entries(log, entries(90), model, ts=1_000)
    log.roll(0)
    log.flush()
    cleaner = LogCleaner(tmp_path)
    plan = cleaner.plan(log, now_ms=0)
    assert plan is not None
    cleaned = cleaner.build(plan)
    assert list(log.dir.glob("*.log.cleaned"))
    assert log.delete_old_segments(now_ms=10**9) > 0  # retention ran meanwhile
    rows = read_rows(log)
    assert cleaner.install(cleaned) is None
    assert read_rows(log) == rows and not list(log.dir.glob("*.cleaned"))
    assert cleaner.checkpoint_offset("t", 0) is None
    log.close()


def test_log_manager_cleans_only_compacted_logs(tmp_path: Path) -> None:
    manager = LogManager(tmp_path, COMPACT, now_ms=lambda: 0)
    manager.startup()
    compact = manager.get_or_create_log("c", 0, COMPACT)
    plain = manager.get_or_create_log("d", 0, dataclasses.replace(COMPACT, cleanup_policy="delete"))
    models: dict[str, list[Row]] = {"c": [], "d": []}
    for log in (compact, plain):
        append_entries(log, entries(120), models[log.topic])
        log.roll(0)
    manager.tick(0)  # flushes the rolled segments: recovery points reach the active base
    bound = compact.segment_base_offsets[2]
    done = manager.clean_logs(0, high_watermark=lambda log: bound + 1)
    assert [(s.topic, s.end_offset) for s in done] == [("c", bound)]
    assert read_rows(plain) == models["d"]
    assert read_rows(compact) == compacted(models["c"], bound)
    assert read_checkpoint(tmp_path / CLEANER_OFFSET_CHECKPOINT) == {("c", 0): bound}
    manager.delete_log("c", 0)
    assert read_checkpoint(tmp_path / CLEANER_OFFSET_CHECKPOINT) == {}
    manager.shutdown()


def test_cleaner_config_names_defaults_and_validation() -> None:
    c = LogConfig()
    assert (c.min_cleanable_dirty_ratio, c.delete_retention_ms, c.min_compaction_lag_ms) == (
        0.5,
        86_400_000,
        0,
    )
    assert not c.compact_enabled and LogConfig(cleanup_policy="delete,compact").compact_enabled
    props = {"min.cleanable.dirty.ratio": "0.25", "delete.retention.ms": "5"}
    parsed = LogConfig.from_props({**props, "min.compaction.lag.ms": "7"})
    assert (parsed.min_cleanable_dirty_ratio, parsed.delete_retention_ms) == (0.25, 5)
    assert parsed.min_compaction_lag_ms == 7 and LogConfig.from_props(parsed.to_props()) == parsed
    broker = LogConfig.from_broker_props(
        {"log.cleaner.min.cleanable.ratio": "1", "log.cleaner.delete.retention.ms": "9"}
    )
    assert broker.min_cleanable_dirty_ratio == 1.0 and broker.delete_retention_ms == 9
    for bad in ("1.5", "-0.1", "nan", "half"):
        with pytest.raises(InvalidConfigurationError, match=r"min\.cleanable\.dirty\.ratio"):
            LogConfig.from_props({"min.cleanable.dirty.ratio": bad})
    with pytest.raises(InvalidConfigurationError, match=r"delete\.retention\.ms"):
        LogConfig.from_props({"delete.retention.ms": "-1"})
    with pytest.raises(InvalidConfigurationError):
        LogConfig(min_cleanable_dirty_ratio=2.0)


def test_filter_batch_splits_runs_at_their_offsets_and_sequences() -> None:
    raw = bytearray(
        keyed_batch(
            [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", None)],
            producer_id=1,
            producer_epoch=0,
            base_sequence=2**31 - 2,
        )
    )
    set_base_offset(raw, 100)
    h = read_header(raw)
    offsets = OffsetMap(10)
    offsets.put_batch(200, [(0, 0, b"a", b"later", ())])
    counts = CleaningCounts()
    out = filter_batch(
        h, decode_records(raw, h), offsets, now_ms=50, delete_retention_ms=10, counts=counts
    )
    assert out is not None and len(out) == 2
    first, second = (read_header(b) for b in out)
    assert (first.base_offset, first.record_count, first.base_sequence) == (101, 1, 2**31 - 1)
    assert (second.base_offset, second.record_count, second.base_sequence) == (103, 1, 1)
    assert not first.attributes & DELETE_HORIZON_FLAG  # no tombstone in that run
    assert second.attributes & DELETE_HORIZON_FLAG and second.first_timestamp == 60
    assert [(r.offset, r.key, r.value, r.timestamp) for r in records_of(b"".join(out))] == [
        (101, b"b", b"2", 1_001),
        (103, b"c", None, 1_003),
    ]
    assert (counts.superseded_removed, counts.records_kept) == (2, 2)
    assert counts.earliest_delete_horizon == 60
    # A batch that loses nothing is kept as it is, unless a tombstone needs its horizon.
    plain = keyed_batch([(b"x", b"1"), (b"y", b"2")])
    ph = read_header(plain)
    assert filter_batch(
        ph, decode_records(plain, ph), offsets, now_ms=0, delete_retention_ms=10, counts=counts
    ) is None  # fmt: skip
    tomb = keyed_batch([(b"x", None)])
    th = read_header(tomb)
    again = filter_batch(
        th, decode_records(tomb, th), offsets, now_ms=0, delete_retention_ms=10, counts=counts
    )
    assert again is not None and read_header(again[0]).attributes & DELETE_HORIZON_FLAG
    # Records not in canonical form (here a 3-field record) make the batch opaque.
    odd = build_raw(b"\x93\x00\x00\xc0", 1, 0, 0)
    assert decode_records(odd, read_header(odd)) is None
    assert filter_batch(read_header(odd), None, offsets, now_ms=0, delete_retention_ms=10,
                        counts=counts) is None  # fmt: skip
    assert counts.opaque_batches == 1
