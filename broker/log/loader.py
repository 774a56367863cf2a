"""Loading a partition directory at startup: Kafka's LogLoader, in its simplest form.

After a clean shutdown (the log dir held ``.clean_shutdown``) segments and indexes are
loaded without scanning the log; only the active segment's tail is sanity-checked. After an
unclean one, every segment from the recovery point on is scanned batch by batch (length,
magic, CRC, offset continuity), the file is cut at the first torn or corrupt batch, later
segments are deleted and the indexes are rebuilt: index files are never trusted then.
This module only decides what to load and cut; ``LogSegment`` does the file work.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.log.config import LogConfig
from broker.log.epoch_cache import (
    LEADER_EPOCH_CHECKPOINT,
    EpochEntry,
    LeaderEpochCache,
    LeaderEpochCheckpointFile,
)
from broker.log.segment import DELETED_SUFFIX, LogSegment
from proto.batch import BatchHeader
from proto.errors import KafkaStorageError

__all__ = ["LoadResult", "load_leader_epoch_cache", "load_segments"]

_SUFFIXES = (".log", ".index", ".timeindex")


@dataclass(slots=True)
class LoadResult:
    segments: list[LogSegment]
    recovered_bytes_scanned: int
    segments_recovered: int
    truncated_bytes: int


def _segment_bases(dir: Path) -> list[int]:
    """Base offsets of the ``.log`` files; removes leftovers of deletes and orphan indexes."""
    bases: set[int] = set()
    orphans: list[Path] = []
    for entry in os.scandir(dir):
        name = entry.name
        if name.endswith(DELETED_SUFFIX) or name.endswith(".tmp"):
            os.unlink(entry.path)  # a delete or checkpoint that was cut short by a stop
            continue
        stem, _dot, suffix = name.partition(".")
        if "." + suffix not in _SUFFIXES or len(stem) != 20 or not stem.isdigit():
            continue
        if suffix == "log":
            bases.add(int(stem))
        else:
            orphans.append(Path(entry.path))
    for path in orphans:
        if int(path.name[:20]) not in bases:
            path.unlink()
    return sorted(bases)


def load_segments(
    dir: Path,
    config: LogConfig,
    *,
    recovery_point: int,
    clean: bool,
    now_ms: int,
    log: Any,
) -> LoadResult:
    """Open every segment of ``dir``, recovering as needed. ``log`` is a bound structlog
    logger. Always returns at least one (possibly empty) segment."""
    result = LoadResult([], 0, 0, 0)
    segments = result.segments

    def open_segment(base: int) -> LogSegment:
        return LogSegment(
            dir,
            base,
            index_bytes=config.segment_index_bytes,
            index_interval_bytes=config.index_interval_bytes,
            now_ms=now_ms,
        )

    try:
        for base in _segment_bases(dir):
            segments.append(open_segment(base))
        if not segments:
            segments.append(open_segment(0))
            return result
        bases = [s.base_offset for s in segments]
        first_unflushed = 0 if clean else max(0, bisect.bisect_right(bases, recovery_point) - 1)
        last = len(segments) - 1
        for i, seg in enumerate(segments):
            loaded = seg.load_indexes()
            if i < last and (clean or i < first_unflushed) and loaded:
                seg.next_offset = bases[i + 1]
                continue
            if i == last and clean and loaded and seg.check_tail():
                continue
            # Unflushed (or failed its sanity check): scan, validate and rebuild.
            scan = seg.recover(allow_gaps=i < last)  # only closed segments are compacted
            result.segments_recovered += 1
            result.recovered_bytes_scanned += scan.scanned_bytes
            if i < last and scan.truncated_bytes == 0 and seg.next_offset <= bases[i + 1]:
                seg.next_offset = bases[i + 1]  # a compacted segment may end in a gap
                continue
            if scan.truncated_bytes or (i < last and seg.next_offset != bases[i + 1]):
                later = segments[i + 1 :]
                dropped = scan.truncated_bytes + sum(s.size for s in later)
                result.truncated_bytes += dropped
                log.warning(
                    "log_truncated_on_recovery",
                    segment=seg.base_offset,
                    truncated_bytes=dropped,
                    from_offset=seg.next_offset,
                    reason=scan.reason or "offset gap before next segment",
                    deleted_segments=len(later),
                )
                for s in later:
                    s.close()
                    s.unlink(deleted=False)
                del segments[i + 1 :]
                break
        # A segment's age for segment.ms is unknown after a restart; like Kafka, take the
        # first batch's max timestamp as its creation time (now when it is empty).
        first_ts = segments[-1].first_batch_timestamp()
        if first_ts is not None:
            segments[-1].created_ms = first_ts
    except BaseException:
        for s in segments:
            s.close()
        raise
    return result


def load_leader_epoch_cache(
    dir: Path,
    *,
    clean: bool,
    log_start_offset: int,
    log_end_offset: int,
    recovery_point: int,
    headers_from: Callable[[int], Iterable[BatchHeader]],
    last_header: BatchHeader | None,
    log: Any,
) -> LeaderEpochCache:
    """The leader-epoch cache of a freshly loaded log, written through to its checkpoint.

    * clean stop, checkpoint readable: trimmed to the log's range and kept if the last
      batch's epoch agrees with the latest entry; otherwise rebuilt from every header;
    * unclean stop: entries below the recovery point are kept (the checkpoint is fsynced
      when it changes, before the batches it describes are), the rest is rebuilt from
      the headers from the recovery point on;
    * no checkpoint (or a malformed one): rebuilt from every batch header.
    """
    checkpoint = LeaderEpochCheckpointFile(dir / LEADER_EPOCH_CHECKPOINT)
    try:
        stored = checkpoint.read()
    except KafkaStorageError as exc:
        log.warning("leader_epoch_checkpoint_unreadable", error=str(exc))
        stored = None
    rebuild_from = log_start_offset
    kept: list[EpochEntry] = []
    if stored is not None and clean:
        cache = LeaderEpochCache(stored)
        cache.truncate_from_end(log_end_offset)
        cache.truncate_from_start(log_start_offset)
        if _agrees(cache, last_header):
            if cache.entries != stored:
                checkpoint.write(cache.entries)
            return LeaderEpochCache(cache.entries, checkpoint=checkpoint)
        log.warning(
            "leader_epoch_checkpoint_stale",
            latest=cache.latest_entry,
            last_batch_epoch=last_header.leader_epoch if last_header else None,
        )
    elif stored is not None:
        cache = LeaderEpochCache(stored)
        cache.truncate_from_end(recovery_point)
        kept, rebuild_from = cache.entries, recovery_point
    cache = LeaderEpochCache(kept)
    for h in headers_from(rebuild_from):
        if h.leader_epoch >= 0:
            cache.assign(h.leader_epoch, h.base_offset)
    cache.truncate_from_start(log_start_offset)
    entries = cache.entries
    if entries != stored and (stored is not None or entries or checkpoint.path.exists()):
        checkpoint.write(entries)
    log.debug("leader_epoch_cache_rebuilt", from_offset=rebuild_from, entries=len(entries))
    return LeaderEpochCache(entries, checkpoint=checkpoint)


def _agrees(cache: LeaderEpochCache, last: BatchHeader | None) -> bool:
    """Whether the log's last batch is consistent with the cache's latest entry."""
    if last is None or last.leader_epoch < 0:
        return True
    latest = cache.latest_entry
    return (
        latest is not None
        and latest.epoch == last.leader_epoch
        and latest.start_offset <= last.base_offset
    )
