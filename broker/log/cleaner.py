"""Kafka's log cleaner for the logs of one log dir: compaction of ``cleanup.policy=compact``.

For one log, a cleaning is (Kafka's ``LogCleaner.Cleaner.clean``):

* **what**: the *dirty* section runs from the ``cleaner-offset-checkpoint`` entry (where
  the last cleaning ended; the log start when there is none) to the *first uncleanable
  offset*: the active segment's base, the recovery point (a cleaned segment must never be
  rescanned by crash recovery), the caller's bound (the high watermark), and the first
  segment holding a record younger than ``min.compaction.lag.ms``, each rounded down to a
  segment boundary. Only whole closed segments are cleaned. The log is worth cleaning when
  dirty bytes / (clean + dirty bytes) reaches ``min.cleanable.dirty.ratio``, or when the
  delete horizon of a tombstone kept by the last cleaning has passed;
* **pass 1**: an ``OffsetMap`` of key -> latest offset over the dirty segments, up to the
  map's capacity (whole segments; the rest waits for the next cleaning);
* **pass 2**: every segment from the log start to the map's end is rewritten through
  ``compaction.filter_batch``, consecutive segments grouped up to ``segment.bytes`` (and
  the index and relative-offset limits) so that small cleaned segments merge;
* **swap**: each group's cleaned files replace its segments (``cleaned_segment.py``: the
  ``.cleaned`` -> ``.swap`` -> final protocol, completed or rolled back at open), then the
  checkpoint moves to the map's end.

``LogCleaner.clean`` does all of it synchronously. It is also three calls, so a server can
run the heavy middle off its event loop: ``plan`` (cheap, reads the log's state), ``build``
(reads closed segments through their fds and writes ``.cleaned`` files; it never touches
the ``Log`` object) and ``install`` (cheap: verifies the segments are unchanged, swaps,
checkpoints). Nothing else may close the log meanwhile, and one ``build`` runs at a time
(``compaction.py``'s zstd contexts are shared).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from broker.log.checkpoint import read_checkpoint, write_checkpoint
from broker.log.cleaned_segment import (
    CleanedSegmentWriter,
    commit_swap,
    install_swap,
    iter_file_batches,
    open_installed,
)
from broker.log.compaction import CleaningCounts, OffsetMap, decode_records, filter_batch
from broker.log.config import LogConfig
from broker.log.log import Log
from broker.log.segment import MAX_RELATIVE_OFFSET, LogSegment
from proto.batch import read_header
from proto.errors import CorruptRecordError, KafkaStorageError

__all__ = [
    "CLEANER_OFFSET_CHECKPOINT",
    "DEFAULT_OFFSET_MAP_ENTRIES",
    "CleanableRange",
    "CleanedLog",
    "CleanerStats",
    "CleaningPlan",
    "LogCleaner",
    "cleanable_range",
    "group_segments",
]

CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
# Kafka sizes its map by log.cleaner.dedupe.buffer.size (128 MiB, ~5M keys); this one
# holds real keys in a dict, about 100 bytes each plus the key.
DEFAULT_OFFSET_MAP_ENTRIES = 1_000_000


@dataclass(frozen=True, slots=True)
class CleanableRange:
    """Offsets are segment base offsets: ``[log start, first_dirty)`` is clean,
    ``[first_dirty, first_uncleanable)`` dirty, the rest uncleanable."""

    first_dirty_offset: int
    first_uncleanable_offset: int
    clean_bytes: int
    dirty_bytes: int

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


def cleanable_range(
    segments: Sequence[LogSegment],
    config: LogConfig,
    *,
    first_dirty_offset: int,
    upper_bound: int,
    now_ms: int,
) -> CleanableRange:
    """Kafka's ``LogCleanerManager.cleanableOffsets`` over ``segments`` (the log's, the
    active one last), with ``upper_bound`` the recovery point / high watermark."""
    bases = [s.base_offset for s in segments]

    def floor_base(offset: int) -> int:
        return bases[max(0, bisect.bisect_right(bases, offset) - 1)]

    first_dirty = floor_base(max(first_dirty_offset, bases[0]))
    uncleanable = floor_base(min(bases[-1], max(upper_bound, bases[0])))
    if config.min_compaction_lag_ms > 0:
        for seg in segments:
            young = now_ms - seg.largest_timestamp < config.min_compaction_lag_ms
            if seg.base_offset >= first_dirty and (seg.base_offset >= uncleanable or young):
                uncleanable = min(uncleanable, seg.base_offset)
                break
    clean = sum(s.size for s in segments if s.base_offset < min(first_dirty, uncleanable))
    dirty = sum(s.size for s in segments if first_dirty <= s.base_offset < uncleanable)
    return CleanableRange(first_dirty, uncleanable, clean, dirty)


def group_segments(
    segments: Sequence[LogSegment], end_offsets: Sequence[int], config: LogConfig
) -> list[list[LogSegment]]:
    """Kafka's ``groupSegmentsBySize``: consecutive segments whose total size fits in
    ``segment.bytes``, whose index entries fit in ``segment.index.bytes`` and whose offsets
    fit in a relative u32. ``end_offsets[i]`` is where ``segments[i]`` ends."""
    max_offset_entries = config.segment_index_bytes // 8
    max_time_entries = config.segment_index_bytes // 12
    groups: list[list[LogSegment]] = []
    i = 0
    while i < len(segments):
        group = [segments[i]]
        size, offs = segments[i].size, len(segments[i].offset_index)
        times = len(segments[i].time_index)
        i += 1
        while i < len(segments):
            seg = segments[i]
            if (
                size + seg.size > config.segment_bytes
                or offs + len(seg.offset_index) > max_offset_entries
                or times + len(seg.time_index) > max_time_entries
                or end_offsets[i] - 1 - group[0].base_offset > MAX_RELATIVE_OFFSET
            ):
                break
            group.append(seg)
            size, offs = size + seg.size, offs + len(seg.offset_index)
            times += len(seg.time_index)
            i += 1
        groups.append(group)
    return groups


@dataclass(slots=True)
class CleanerStats:
    """One cleaning of one log (Kafka's CleanerStats)."""

    topic: str
    partition: int
    first_dirty_offset: int
    end_offset: int  # the new checkpoint: where the next cleaning's dirty section starts
    dirty_ratio: float
    segments_before: int = 0
    segments_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    map_records: int = 0  # records read by pass 1
    map_entries: int = 0
    counts: CleaningCounts = field(default_factory=CleaningCounts)
    map_seconds: float = 0.0
    clean_seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        """Records through both passes per second of the two passes."""
        elapsed = self.map_seconds + self.clean_seconds
        records = self.map_records + self.counts.records_read
        return records / elapsed if elapsed > 0 else 0.0


@dataclass(slots=True)
class CleaningPlan:
    log: Log
    range: CleanableRange
    segments: list[LogSegment]  # every segment that may be rewritten, oldest first
    end_offsets: list[int]  # where each of ``segments`` ends (the next one's base)
    sizes: list[int]  # their sizes when planned: ``install`` refuses changed segments
    now_ms: int


@dataclass(slots=True)
class _Group:
    old: list[LogSegment]
    sizes: list[int]
    base_offset: int
    writer: CleanedSegmentWriter


@dataclass(slots=True)
class CleanedLog:
    plan: CleaningPlan
    groups: list[_Group]
    stats: CleanerStats


class LogCleaner:
    """Compacts the logs of one log dir; owns its ``cleaner-offset-checkpoint``.

    ``offset_map_entries`` bounds pass 1's map (keys per cleaning).
    """

    def __init__(
        self, log_dir: Path, *, offset_map_entries: int = DEFAULT_OFFSET_MAP_ENTRIES
    ) -> None:
        self.checkpoint_path = log_dir / CLEANER_OFFSET_CHECKPOINT
        self.offset_map_entries = offset_map_entries
        self._log = structlog.get_logger("broker.log.cleaner").bind(log_dir=str(log_dir))
        try:
            self._checkpoint = read_checkpoint(self.checkpoint_path)
        except KafkaStorageError as exc:
            # Safe: every compacted log is cleaned again from its start.
            self._log.warning("cleaner_checkpoint_unreadable", error=str(exc))
            self._checkpoint = {}
        # Earliest delete horizon among the tombstones each log's last cleaning kept:
        # in memory only (after a restart tombstones wait for the next dirty cleaning).
        self._horizons: dict[tuple[str, int], int] = {}
        self.uncleanable: set[tuple[str, int]] = set()  # failed once: left alone until restart

    def checkpoint_offset(self, topic: str, partition: int) -> int | None:
        return self._checkpoint.get((topic, partition))

    # --- the three phases -------------------------------------------------------------

    def plan(self, log: Log, now_ms: int, *, upper_bound: int | None = None) -> CleaningPlan | None:
        """What to clean in ``log`` now, or None if it is not (yet) worth cleaning."""
        key = (log.topic, log.partition)
        if not log.config.compact_enabled or key in self.uncleanable:
            return None
        checkpoint = self._checkpoint.get(key)
        first_dirty = log.log_start_offset
        if checkpoint is not None and first_dirty <= checkpoint <= log.log_end_offset:
            first_dirty = checkpoint
        bound = log.recovery_point if upper_bound is None else min(upper_bound, log.recovery_point)
        segments = log.segments
        rng = cleanable_range(
            segments, log.config, first_dirty_offset=first_dirty, upper_bound=bound, now_ms=now_ms
        )
        horizon = self._horizons.get(key)
        horizon_due = horizon is not None and now_ms >= horizon
        worth = rng.dirty_bytes > 0 and rng.dirty_ratio >= log.config.min_cleanable_dirty_ratio
        if not (worth or horizon_due):
            return None
        cleanable = [s for s in segments if s.base_offset < rng.first_uncleanable_offset]
        if not cleanable:
            return None
        ends = [s.base_offset for s in segments[1 : len(cleanable) + 1]]
        return CleaningPlan(log, rng, cleanable, ends, [s.size for s in cleanable], now_ms)

    def build(self, plan: CleaningPlan) -> CleanedLog:
        """Passes 1 and 2: write the cleaned segments as ``.cleaned`` files. Reads only the
        planned (closed) segments; never changes the ``Log``."""
        log, rng = plan.log, plan.range
        config = log.config
        # Without dirty segments (a tombstone's horizon passed) the checkpoint stays put.
        end = max(rng.first_dirty_offset, rng.first_uncleanable_offset)
        stats = CleanerStats(log.topic, log.partition, rng.first_dirty_offset, end, rng.dirty_ratio)
        started = time.perf_counter()
        offsets = OffsetMap(self.offset_map_entries)
        n = len(plan.segments)  # how many segments pass 2 rewrites
        mapped = False
        for i, seg in enumerate(plan.segments):
            if seg.base_offset < rng.first_dirty_offset:
                continue
            if offsets.full and mapped:
                # Whole segments only: the map may pass its capacity by one segment's keys.
                n, stats.end_offset = i, seg.base_offset
                break
            for _pos, h, view in iter_file_batches(seg.fd, plan.sizes[i]):
                records = decode_records(view, h)
                if records is not None:
                    offsets.put_batch(h.base_offset, records)
                    stats.map_records += len(records)
            mapped = True
        stats.map_entries = len(offsets)
        stats.map_seconds = time.perf_counter() - started
        started = time.perf_counter()
        groups: list[_Group] = []
        try:
            for old in group_segments(plan.segments[:n], plan.end_offsets[:n], config):
                first = plan.segments.index(old[0])
                group = _Group(
                    old,
                    plan.sizes[first : first + len(old)],
                    old[0].base_offset,
                    CleanedSegmentWriter(log.dir, old[0].base_offset, config),
                )
                groups.append(group)
                self._clean_group(group, offsets, config, plan.now_ms, stats)
        except BaseException:
            for g in groups:
                g.writer.close()  # every fd first: an unlink may fail too
            for g in groups:
                g.writer.abort()
            raise
        stats.clean_seconds = time.perf_counter() - started
        stats.segments_before = sum(len(g.old) for g in groups)
        stats.segments_after = len(groups)
        stats.bytes_before = sum(sum(g.sizes) for g in groups)
        stats.bytes_after = sum(g.writer.size for g in groups)
        return CleanedLog(plan, groups, stats)

    def _clean_group(
        self,
        group: _Group,
        offsets: OffsetMap,
        config: LogConfig,
        now_ms: int,
        stats: CleanerStats,
    ) -> None:
        writer, counts = group.writer, stats.counts
        for seg, size in zip(group.old, group.sizes, strict=True):
            for _pos, h, view in iter_file_batches(seg.fd, size):
                out = filter_batch(
                    h,
                    decode_records(view, h),
                    offsets,
                    now_ms=now_ms,
                    delete_retention_ms=config.delete_retention_ms,
                    counts=counts,
                )
                if out is None:
                    writer.append(view, h)
                else:
                    for batch in out:
                        writer.append(batch, read_header(batch))
        writer.finish(mtime_ms=max(s.largest_timestamp for s in group.old))

    def install(self, cleaned: CleanedLog) -> CleanerStats | None:
        """Swap the cleaned segments in and move the checkpoint; None (and the cleaned
        files removed) if the log changed under the cleaning (retention, truncation)."""
        plan, stats = cleaned.plan, cleaned.stats
        log = plan.log
        current = log.segments[:-1]
        for k, group in enumerate(cleaned.groups):
            unchanged = all(
                any(s is c for c in current) and s.size == size
                for s, size in zip(group.old, group.sizes, strict=True)
            )
            if not unchanged:
                self.abort(cleaned, from_group=k)
                self._log.info("log_cleaning_abandoned", topic=log.topic, partition=log.partition)
                return None
            try:
                commit_swap(log.dir, group.base_offset)
            except OSError as exc:
                self.abort(cleaned, from_group=k + 1)
                raise KafkaStorageError(f"swap in {log.dir.name} failed: {exc}") from exc

            def swap_in(group: _Group = group) -> LogSegment:
                install_swap(log.dir, group.base_offset)
                return open_installed(log.dir, group.base_offset, log.config)

            try:
                log.replace_segments(group.old, swap_in, plan.now_ms)
            except KafkaStorageError:
                self.abort(cleaned, from_group=k + 1)
                raise
        key = (log.topic, log.partition)
        self._checkpoint[key] = stats.end_offset
        write_checkpoint(self.checkpoint_path, self._checkpoint)
        horizon = stats.counts.earliest_delete_horizon
        if horizon is None:
            self._horizons.pop(key, None)
        else:
            self._horizons[key] = horizon
        counts = stats.counts
        self._log.info(
            "log_cleaned",
            topic=log.topic,
            partition=log.partition,
            first_dirty_offset=stats.first_dirty_offset,
            end_offset=stats.end_offset,
            dirty_ratio=round(stats.dirty_ratio, 3),
            segments=f"{stats.segments_before}->{stats.segments_after}",
            bytes=f"{stats.bytes_before}->{stats.bytes_after}",
            map_entries=stats.map_entries,
            records_kept=counts.records_kept,
            superseded_removed=counts.superseded_removed,
            tombstones_removed=counts.tombstones_removed,
            keyless_removed=counts.keyless_removed,
            opaque_batches=counts.opaque_batches,
            records_per_second=round(stats.records_per_second),
        )
        return stats

    def abort(self, cleaned: CleanedLog, *, from_group: int = 0) -> None:
        """Remove the ``.cleaned`` files of groups not swapped in."""
        for group in cleaned.groups[from_group:]:
            group.writer.abort()

    def clean(
        self, log: Log, now_ms: int, *, upper_bound: int | None = None
    ) -> CleanerStats | None:
        """Plan, build and install one cleaning of ``log``; None when there was nothing to do."""
        plan = self.plan(log, now_ms, upper_bound=upper_bound)
        if plan is None:
            return None
        return self.install(self.build(plan))

    # --- every log of the dir -----------------------------------------------------------

    def clean_logs(
        self,
        logs: Iterable[Log],
        now_ms: int,
        *,
        upper_bound: Callable[[Log], int | None] | None = None,
    ) -> list[CleanerStats]:
        """Clean every compacted log that is worth it. A log whose cleaning fails (corrupt
        batch, I/O error) is logged and left alone until restart, as Kafka does."""
        done: list[CleanerStats] = []
        for log in logs:
            try:
                stats = self.clean(
                    log, now_ms, upper_bound=upper_bound(log) if upper_bound else None
                )
            except (KafkaStorageError, CorruptRecordError, OSError) as exc:
                self.uncleanable.add((log.topic, log.partition))
                self._log.error(
                    "log_cleaning_failed", topic=log.topic, partition=log.partition, error=str(exc)
                )
                continue
            if stats is not None:
                done.append(stats)
        return done

    # --- checkpoint maintenance ---------------------------------------------------------

    def truncate_checkpoint(self, topic: str, partition: int, offset: int) -> None:
        """After ``Log.truncate_to(offset)``: what follows ``offset`` is new, so dirty
        (Kafka's ``maybeTruncateCheckpoint``)."""
        key = (topic, partition)
        current = self._checkpoint.get(key)
        if current is not None and current > offset:
            self._checkpoint[key] = offset
            write_checkpoint(self.checkpoint_path, self._checkpoint)

    def forget(self, topic: str, partition: int) -> None:
        """The log was deleted: drop its checkpoint entry."""
        key = (topic, partition)
        self._horizons.pop(key, None)
        self.uncleanable.discard(key)
        if self._checkpoint.pop(key, None) is not None:
            write_checkpoint(self.checkpoint_path, self._checkpoint)
