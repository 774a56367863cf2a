"""One partition's log: an ordered list of segments, offsets, rolling, retention, flushing.

``Log`` is synchronous and not thread-safe; the broker calls it from one task (or a worker
thread) per partition. It never unpacks records: ``append`` validates each batch's header
and CRC, patches base offset and leader epoch into a copy of the input and writes it with
one ``write``; ``read`` returns a file slice (``FileRecords``) for ``sendfile``. Time is an
input (``now_ms``) so that rolling, retention and flushing are testable without sleeping.

Replication state lives beside the segments: the leader-epoch cache (``epoch_cache.py``,
fed by the epochs of appended batches, trimmed by truncation and retention) and the
idempotent-producer state (``producer_state.py``: a leader append of a retried batch is
answered with its original offsets, not written). Both are rebuilt from batch headers,
never records, when their files are missing or the stop was unclean (``loader.py``,
``producer_snapshot.py``); ``append.py`` decides an append before anything is written.

Invariants: segments are sorted by base offset and contiguous; only the last (active)
segment is written; ``log_start_offset <= recovery_point <= log_end_offset``.
"""

from __future__ import annotations

import bisect
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from broker.log.append import plan_append
from broker.log.checkpoint import fsync_dir
from broker.log.cleaned_segment import complete_swaps
from broker.log.config import LogConfig
from broker.log.epoch_cache import LeaderEpochCache
from broker.log.loader import load_leader_epoch_cache, load_segments
from broker.log.producer_snapshot import delete_snapshots, load_producer_state, write_snapshot
from broker.log.producer_state import ProducerStateManager
from broker.log.retention import PendingDeletes, count_expired_segments
from broker.log.segment import MAX_RELATIVE_OFFSET, LogSegment, headers_from, last_header
from proto.batch import BatchHeader
from proto.codec import FileRecords
from proto.errors import KafkaStorageError, OffsetOutOfRangeError, RecordListTooLargeError

__all__ = ["AppendInfo", "Log", "ReadResult", "wall_clock_ms"]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AppendInfo:
    first_offset: int  # -1 when nothing was appended (empty input)
    last_offset: int
    log_append_time_ms: int  # -1 unless message.timestamp.type is LogAppendTime
    log_start_offset: int
    batch_count: int
    bytes: int
    # A retried idempotent batch already in the log: nothing was written and the offsets
    # (and log_append_time_ms) are the original append's.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    records: FileRecords | None  # None when there is nothing to read
    log_start_offset: int
    log_end_offset: int


class Log:
    """One partition's log in ``dir`` (``<topic>-<partition>``). Use ``Log.open``."""

    def __init__(
        self,
        dir: Path,
        topic: str,
        partition: int,
        config: LogConfig,
        segments: list[LogSegment],
        *,
        recovery_point: int,
        now_ms: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.dir = dir
        self.config = config
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._log_start_offset = segments[0].base_offset
        self._recovery_point = max(
            self._log_start_offset, min(recovery_point, segments[-1].next_offset)
        )
        self._last_flush_ms = now_ms
        self._flush_upto = self._recovery_point  # rolled segments still to fsync
        self._pending_deletes = PendingDeletes()
        self._closed = False
        self._log = structlog.get_logger("broker.log").bind(topic=topic, partition=partition)
        self.recovered_bytes_scanned = 0  # bytes read by recovery scans when opened
        self.segments_recovered = 0
        # Replaced by ``open`` with the ones loaded from the directory.
        self._epoch_cache = LeaderEpochCache()
        self._producers = ProducerStateManager()

    @classmethod
    def open(
        cls,
        dir: Path,
        topic: str,
        partition: int,
        config: LogConfig,
        *,
        recovery_point: int = 0,
        clean: bool = False,
        now_ms: int | None = None,
    ) -> Log:
        """Open (creating if needed) the log in ``dir``; recover it unless ``clean``."""
        now = wall_clock_ms() if now_ms is None else now_ms
        log = structlog.get_logger("broker.log").bind(topic=topic, partition=partition)
        try:
            dir.mkdir(parents=True, exist_ok=True)
            complete_swaps(dir, config, log)  # a log cleaning cut short by a crash
            loaded = load_segments(
                dir, config, recovery_point=recovery_point, clean=clean, now_ms=now, log=log
            )
        except OSError as exc:
            raise KafkaStorageError(f"cannot load {dir}: {exc}") from exc
        self = cls(
            dir,
            topic,
            partition,
            config,
            loaded.segments,
            recovery_point=recovery_point,
            now_ms=now,
        )
        self.recovered_bytes_scanned = loaded.recovered_bytes_scanned
        self.segments_recovered = loaded.segments_recovered
        try:
            self._epoch_cache = load_leader_epoch_cache(
                dir,
                clean=clean,
                log_start_offset=self.log_start_offset,
                log_end_offset=self.log_end_offset,
                recovery_point=self._recovery_point,
                headers_from=self.headers_from,
                last_header=last_header(self._segments),
                log=log,
            )
            self._load_producer_state(log)
        except (OSError, KafkaStorageError) as exc:
            self._close_files(unlink_pending=False)
            raise KafkaStorageError(f"cannot load {dir}: {exc}") from exc
        if not clean:
            log.info(
                "log_recovered",
                truncated_bytes=loaded.truncated_bytes,
                from_offset=self.log_end_offset,
                segments_scanned=loaded.segments_recovered,
                bytes_scanned=loaded.recovered_bytes_scanned,
            )
        log.debug(
            "log_loaded",
            segments=len(self._segments),
            log_start_offset=self.log_start_offset,
            log_end_offset=self.log_end_offset,
        )
        return self

    # --- properties ---------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def segment_base_offsets(self) -> list[int]:
        return list(self._bases)

    @property
    def segments(self) -> list[LogSegment]:
        """The segments, oldest first (a copy; the last one is the active segment)."""
        return list(self._segments)

    @property
    def _active(self) -> LogSegment:
        return self._segments[-1]

    @property
    def leader_epoch_cache(self) -> LeaderEpochCache:
        return self._epoch_cache

    @property
    def producer_state(self) -> ProducerStateManager:
        return self._producers

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """``(epoch, end offset)`` for OffsetForLeaderEpoch; (-1, -1) when undefined."""
        return self._epoch_cache.end_offset_for(epoch, self.log_end_offset)

    # --- batch headers (recovery of the epoch cache and producer state) -------------------

    def headers_from(self, offset: int) -> Iterator[BatchHeader]:
        """Headers of every batch from the one containing ``offset`` to the log end, read
        in 64 KiB chunks: no CRC check, no record read."""
        return headers_from(self._segments, offset)

    def _load_producer_state(self, log: structlog.typing.FilteringBoundLogger) -> None:
        self._producers, _replayed_from = load_producer_state(
            self.dir,
            log_start_offset=self.log_start_offset,
            log_end_offset=self.log_end_offset,
            headers_from=self.headers_from,
            log=log,
        )

    # --- append -------------------------------------------------------------------------

    def append(
        self,
        records: bytes | bytearray | memoryview,
        *,
        leader_epoch: int = 0,
        now_ms: int | None = None,
        assign_offsets: bool = True,
    ) -> AppendInfo:
        """Validate and append one or more batches; returns the offsets they got.

        With ``assign_offsets`` False (a follower copying the leader) the batches must
        already carry contiguous offsets starting at the log end offset.
        """
        self._check_open()
        now = wall_clock_ms() if now_ms is None else now_ms
        config = self.config
        buf = bytearray(records)
        if not buf:
            return AppendInfo(-1, -1, -1, self._log_start_offset, 0, 0)
        if len(buf) > config.segment_bytes:
            raise RecordListTooLargeError(
                f"{len(buf)} bytes of batches exceed segment.bytes {config.segment_bytes}"
            )
        first = self.log_end_offset
        plan = plan_append(
            buf,
            config,
            self._producers,
            first_offset=first,
            leader_epoch=leader_epoch,
            assign_offsets=assign_offsets,
            now_ms=now,
        )
        if plan.duplicate is not None:
            dup = plan.duplicate
            return AppendInfo(
                dup.first_offset,
                dup.last_offset,
                dup.timestamp if config.log_append_time else -1,
                self._log_start_offset,
                0,
                0,
                duplicate=True,
            )
        next_offset, metas = plan.next_offset, plan.metas
        append_time = config.log_append_time and assign_offsets
        try:
            if self._should_roll(len(buf), next_offset - 1, now):
                self._roll(now)
            self._active.append(buf, metas, next_offset)
        except OSError as exc:
            raise KafkaStorageError(f"append to {self.dir.name} failed: {exc}") from exc
        self._producers.commit(plan.producers)
        for epoch, start_offset in plan.epochs:
            if self._epoch_cache.assign(epoch, start_offset):
                self._log.info("leader_epoch_assigned", epoch=epoch, start_offset=start_offset)
        if next_offset - self._recovery_point >= config.flush_messages:
            self.flush(now)
        return AppendInfo(
            first,
            next_offset - 1,
            now if append_time else -1,
            self._log_start_offset,
            len(metas),
            len(buf),
        )

    def _should_roll(self, size: int, last_offset: int, now_ms: int) -> bool:
        seg = self._active
        if seg.size == 0:
            return False
        return (
            seg.size + size > self.config.segment_bytes
            or now_ms - seg.created_ms > self.config.segment_ms
            or seg.offset_index.is_full
            or seg.time_index.is_full
            or last_offset - seg.base_offset > MAX_RELATIVE_OFFSET
        )

    def roll(self, now_ms: int | None = None) -> None:
        """Start a new active segment at the log end offset (no-op if the active is empty)."""
        self._check_open()
        try:
            self._roll(wall_clock_ms() if now_ms is None else now_ms)
        except OSError as exc:
            raise KafkaStorageError(f"roll of {self.dir.name} failed: {exc}") from exc

    def _roll(self, now_ms: int) -> None:
        old = self._active
        if old.size == 0:
            return
        old.seal()
        # Kafka's producer snapshot at each roll bounds the replay at the next open.
        write_snapshot(self.dir, old.next_offset, self._producers.producers, fsync=False)
        new = self._new_segment(old.next_offset, now_ms)
        self._segments.append(new)
        self._bases.append(new.base_offset)
        # Kafka flushes a rolled segment in the background; here the next maybe_flush does.
        self._flush_upto = new.base_offset
        self._log.debug("segment_rolled", base_offset=new.base_offset, previous_size=old.size)

    def _new_segment(self, base_offset: int, now_ms: int) -> LogSegment:
        return LogSegment(
            self.dir,
            base_offset,
            index_bytes=self.config.segment_index_bytes,
            index_interval_bytes=self.config.index_interval_bytes,
            now_ms=now_ms,
        )

    # --- read ---------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> ReadResult:
        """Whole batches from the one containing ``offset``: at most ``max_bytes`` but at
        least one batch, below ``max_offset`` (exclusive, e.g. the high watermark), from
        one segment only. The slice stays valid while the segment exists."""
        self._check_open()
        start, end = self._log_start_offset, self.log_end_offset
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(
                f"offset {offset} of {self.topic}-{self.partition} not in [{start}, {end}]"
            )
        limit = end if max_offset is None else min(max_offset, end)
        i = bisect.bisect_right(self._bases, offset) - 1
        try:
            while offset < limit and i < len(self._segments):
                records = self._segments[i].read(offset, max_bytes, limit)
                if records is not None:
                    return ReadResult(records, start, end)
                i += 1  # only an offset gap at a segment's end gets here
                if i < len(self._segments):
                    offset = self._bases[i]
        except OSError as exc:
            raise KafkaStorageError(f"read of {self.dir.name} failed: {exc}") from exc
        return ReadResult(None, start, end)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """The first record (its offset and timestamp) whose timestamp is at or after
        ``timestamp_ms``; None if there is none. With LogAppendTime a batch's records all
        carry its max timestamp, so the answer is the batch's base offset."""
        self._check_open()
        per_record = not self.config.log_append_time
        try:
            for seg in self._segments:
                if seg.max_timestamp >= timestamp_ms:
                    found = seg.find_timestamp(timestamp_ms, per_record=per_record)
                    if found is not None:
                        return max(found[0], self._log_start_offset), found[1]
        except OSError as exc:
            raise KafkaStorageError(f"read of {self.dir.name} failed: {exc}") from exc
        return None

    # --- config, flush, retention ---------------------------------------------------------

    def update_config(self, config: LogConfig) -> None:
        self.config = config
        for seg in self._segments:
            seg.index_interval_bytes = config.index_interval_bytes

    def maybe_flush(self, now_ms: int) -> None:
        """Flush if ``flush.ms`` has passed since the last flush, or segments were rolled."""
        self._check_open()
        if self.log_end_offset > self._recovery_point and (
            now_ms - self._last_flush_ms >= self.config.flush_ms
        ):
            self.flush(now_ms)
        elif self._flush_upto > self._recovery_point:
            self._flush_segments(self._flush_upto)

    def flush(self, now_ms: int | None = None) -> None:
        """fsync every segment holding offsets at or past the recovery point."""
        self._check_open()
        self._flush_segments(self.log_end_offset)
        self._last_flush_ms = wall_clock_ms() if now_ms is None else now_ms

    def _flush_segments(self, upto: int) -> None:
        try:
            for i, seg in enumerate(self._segments):
                end = self._bases[i + 1] if i + 1 < len(self._bases) else seg.next_offset
                if end > self._recovery_point and seg.base_offset < upto:
                    seg.fsync()
            fsync_dir(self.dir)  # new segment files must survive too
        except OSError as exc:
            raise KafkaStorageError(f"flush of {self.dir.name} failed: {exc}") from exc
        self._recovery_point = max(self._recovery_point, upto)

    def delete_old_segments(self, now_ms: int) -> int:
        """Apply retention.ms and retention.bytes; returns the number of segments deleted."""
        self._check_open()
        count = count_expired_segments(self._segments, self.config, now_ms)
        if count:
            self._delete_segments(count, now_ms)
        return count

    def _delete_segments(self, count: int, now_ms: int) -> None:
        doomed = self._segments[:count]
        del self._segments[:count]
        del self._bases[:count]
        self._log_start_offset = self._bases[0]
        self._recovery_point = max(self._recovery_point, self._log_start_offset)
        self._flush_upto = max(self._flush_upto, self._log_start_offset)
        self._schedule_deletes(doomed, now_ms)
        self._epoch_cache.truncate_from_start(self._log_start_offset)
        self._producers.truncate_head(self._log_start_offset)
        try:
            delete_snapshots(self.dir, below=self._log_start_offset)
        except OSError as exc:
            raise KafkaStorageError(f"delete in {self.dir.name} failed: {exc}") from exc
        self._log.info(
            "segments_deleted",
            count=count,
            bytes=sum(s.size for s in doomed),
            log_start_offset=self._log_start_offset,
        )

    def _schedule_deletes(self, doomed: list[LogSegment], now_ms: int) -> None:
        try:
            self._pending_deletes.schedule(doomed, now_ms + self.config.file_delete_delay_ms)
        except OSError as exc:
            raise KafkaStorageError(f"delete in {self.dir.name} failed: {exc}") from exc

    def delete_expired_files(self, now_ms: int) -> int:
        """Close and unlink ``.deleted`` segments whose file.delete.delay.ms has passed."""
        return self._pending_deletes.delete_expired(now_ms)

    @property
    def pending_deletes(self) -> int:
        return len(self._pending_deletes)

    def replace_segments(
        self, old: Sequence[LogSegment], install: Callable[[], LogSegment], now_ms: int
    ) -> LogSegment:
        """Swap the contiguous closed segments ``old`` for the one ``install`` renames into
        place and opens (the log cleaner's output, ``cleaner.py``): ``old`` go to
        ``*.deleted`` first (fds open for in-flight reads), as Kafka's replaceSegments."""
        self._check_open()
        i = next((k for k, s in enumerate(self._segments) if s is old[0]), -1)
        n = len(old)
        if i < 0 or self._segments[i : i + n] != list(old) or i + n >= len(self._segments):
            raise KafkaStorageError(f"{self.dir.name}: segments to replace are not in the log")
        self._schedule_deletes(list(old), now_ms)
        try:
            new = install()
        except OSError as exc:
            raise KafkaStorageError(f"swap in {self.dir.name} failed: {exc}") from exc
        new.next_offset = self._bases[i + n]  # a compacted segment may end in an offset gap
        self._segments[i : i + n] = [new]
        self._bases[i : i + n] = [new.base_offset]
        return new

    # --- truncation, close, delete ----------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Drop every offset >= ``offset`` (whole batches: the batch containing ``offset``
        goes too). Below the log start offset the log restarts empty at ``offset``."""
        self._check_open()
        if offset >= self.log_end_offset:
            return
        now = wall_clock_ms()
        full = offset <= self._log_start_offset
        try:
            if full:
                # Rename first: the new segment may reuse the first one's file names.
                self._schedule_deletes(self._segments, now)
                self._segments, self._bases = [self._new_segment(offset, now)], [offset]
                self._log_start_offset = offset
            else:
                i = bisect.bisect_right(self._bases, offset) - 1
                self._schedule_deletes(self._segments[i + 1 :], now)
                del self._segments[i + 1 :]
                del self._bases[i + 1 :]
                self._segments[i].truncate_to_offset(offset)
        except OSError as exc:
            raise KafkaStorageError(f"truncate of {self.dir.name} failed: {exc}") from exc
        leo = self.log_end_offset
        self._recovery_point = min(self._recovery_point, leo)
        self._flush_upto = min(self._flush_upto, leo)
        if full:
            self._epoch_cache.clear()
        else:
            self._epoch_cache.truncate_from_end(leo)
        try:
            # Snapshots past the new end describe batches that are gone; the unlinks must
            # be durable before new batches reuse those offsets.
            delete_snapshots(self.dir, above=-1 if full else leo)
            fsync_dir(self.dir)
            self._load_producer_state(self._log)
        except OSError as exc:
            raise KafkaStorageError(f"truncate of {self.dir.name} failed: {exc}") from exc
        self._log.info("log_truncated", to_offset=offset, log_end_offset=leo)

    def close(self) -> None:
        """Seal the active time index, flush everything, close every file descriptor."""
        if self._closed:
            return
        try:
            try:
                self._active.seal()
                self._active.time_index.fsync()  # flush() skips it when nothing is unflushed
                write_snapshot(self.dir, self.log_end_offset, self._producers.producers, fsync=True)
            except OSError as exc:
                raise KafkaStorageError(f"close of {self.dir.name} failed: {exc}") from exc
            self.flush()
        finally:
            self._close_files(unlink_pending=True)

    def _close_files(self, *, unlink_pending: bool) -> None:
        self._closed = True
        for seg in self._segments:
            seg.close()
        self._pending_deletes.close_all(unlink=unlink_pending)

    def delete(self) -> None:
        """Close the log and remove its whole directory (topic deletion)."""
        self.delete_at(self.dir)

    def delete_at(self, path: Path) -> None:
        """Close the log and remove ``path``: its directory, maybe renamed since opening."""
        self._close_files(unlink_pending=False)
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise KafkaStorageError(f"cannot remove {path}: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaStorageError(f"log {self.topic}-{self.partition} is closed")

    def __repr__(self) -> str:
        return (
            f"<Log {self.topic}-{self.partition} [{self.log_start_offset}, "
            f"{self.log_end_offset}) segments={len(self._segments)}>"
        )
