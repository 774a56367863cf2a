"""All partition logs of one log dir: startup recovery, periodic work, clean shutdown.

Kafka's LogManager in miniature. ``startup`` loads every ``<topic>-<partition>`` directory,
recovering from the ``recovery-point-offset-checkpoint`` unless the previous run left the
``.clean_shutdown`` marker. ``tick(now_ms)`` is the one periodic entry point the broker
calls (retention, flush.ms, deferred file deletes, checkpoint). ``shutdown`` flushes,
checkpoints and writes the marker last, so the marker means "everything above is on disk".
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog

from broker.log.checkpoint import read_checkpoint, write_checkpoint
from broker.log.cleaner import CleanerStats, LogCleaner
from broker.log.config import LogConfig
from broker.log.log import Log, wall_clock_ms
from proto.errors import InvalidTopicError, KafkaStorageError

__all__ = [
    "CLEAN_SHUTDOWN_FILE",
    "RECOVERY_POINT_CHECKPOINT",
    "LogManager",
    "partition_dir_name",
]

CLEAN_SHUTDOWN_FILE = ".clean_shutdown"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
DELETE_DIR_SUFFIX = "-delete"
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_PARTITION_DIR = re.compile(r"(?P<topic>[a-zA-Z0-9._-]+)-(?P<partition>\d+)")


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


class LogManager:
    def __init__(
        self,
        log_dir: Path,
        default_config: LogConfig,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.log_dir = log_dir
        self.default_config = default_config
        self._now_ms = now_ms
        self._logs: dict[tuple[str, int], Log] = {}
        self._deleted_dirs: list[tuple[int, Log, Path]] = []
        self._checkpointed: dict[tuple[str, int], int] | None = None
        self._log = structlog.get_logger("broker.log").bind(log_dir=str(log_dir))
        self.clean_startup: bool | None = None  # set by startup()
        self.cleaner = LogCleaner(log_dir)  # compaction; run by clean_logs

    @property
    def _checkpoint_path(self) -> Path:
        return self.log_dir / RECOVERY_POINT_CHECKPOINT

    def startup(self) -> None:
        """Load every partition directory (recovering if the last stop was unclean)."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            marker = self.log_dir / CLEAN_SHUTDOWN_FILE
            clean = marker.exists()
            entries = sorted(os.scandir(self.log_dir), key=lambda e: e.name)
        except OSError as exc:
            raise KafkaStorageError(f"log dir {self.log_dir} unusable: {exc}") from exc
        try:
            recovery_points = read_checkpoint(self._checkpoint_path)
        except KafkaStorageError as exc:
            # Safe fallback: every log is scanned from its start.
            self._log.warning("recovery_checkpoint_unreadable", error=str(exc))
            recovery_points = {}
        now = self._now_ms()
        for entry in entries:
            if not entry.is_dir():
                continue
            if entry.name.endswith(DELETE_DIR_SUFFIX):
                shutil.rmtree(entry.path)  # a topic deletion interrupted by the stop
                continue
            match = _PARTITION_DIR.fullmatch(entry.name)
            if match is None:
                self._log.warning("unknown_dir_in_log_dir", name=entry.name)
                continue
            key = (match["topic"], int(match["partition"]))
            self._logs[key] = Log.open(
                Path(entry.path),
                key[0],
                key[1],
                self.default_config,
                recovery_point=recovery_points.get(key, 0),
                clean=clean,
                now_ms=now,
            )
        marker.unlink(missing_ok=True)
        self.clean_startup = clean
        self.checkpoint_recovery_points()
        self._log.info("log_manager_started", logs=len(self._logs), clean=clean)

    def get_log(self, topic: str, partition: int) -> Log | None:
        return self._logs.get((topic, partition))

    def get_or_create_log(self, topic: str, partition: int, config: LogConfig) -> Log:
        """The partition's log, created if missing; an existing log takes ``config``."""
        log = self._logs.get((topic, partition))
        if log is not None:
            if log.config != config:
                log.update_config(config)
            return log
        if not _LEGAL_TOPIC.fullmatch(topic) or topic in (".", ".."):
            raise InvalidTopicError(f"illegal topic name {topic!r}")
        if partition < 0:
            raise KafkaStorageError(f"negative partition {partition}")
        log = Log.open(
            self.log_dir / partition_dir_name(topic, partition),
            topic,
            partition,
            config,
            clean=True,
            now_ms=self._now_ms(),
        )
        self._logs[(topic, partition)] = log
        return log

    def all_logs(self) -> list[Log]:
        return list(self._logs.values())

    def delete_log(self, topic: str, partition: int) -> None:
        """Forget the partition now; its files go after file.delete.delay.ms (in-flight
        sendfiles may still read them)."""
        log = self._logs.pop((topic, partition), None)
        if log is None:
            return
        target = self.log_dir / f"{log.dir.name}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}"
        try:
            os.rename(log.dir, target)
        except OSError as exc:
            raise KafkaStorageError(f"cannot delete {log.dir}: {exc}") from exc
        self._deleted_dirs.append((self._now_ms() + log.config.file_delete_delay_ms, log, target))
        self.cleaner.forget(topic, partition)
        self._log.info("log_deleted", topic=topic, partition=partition)

    def tick(self, now_ms: int) -> None:
        """Periodic work: retention, flush.ms, deferred deletes, recovery checkpoint."""
        for log in list(self._logs.values()):
            log.delete_old_segments(now_ms)
            log.maybe_flush(now_ms)
            log.delete_expired_files(now_ms)
        keep = []
        for due, log, path in self._deleted_dirs:
            if due <= now_ms:
                log.delete_at(path)
            else:
                keep.append((due, log, path))
        self._deleted_dirs = keep
        self.checkpoint_recovery_points()

    def clean_logs(
        self, now_ms: int, *, high_watermark: Callable[[Log], int | None] | None = None
    ) -> list[CleanerStats]:
        """Compact the logs whose cleanup.policy has ``compact`` and that are dirty enough
        (``cleaner.py``); the broker calls this periodically (Kafka: log.cleaner.backoff.ms).
        ``high_watermark`` bounds each log's cleaning (None: no bound but the recovery point)."""
        # Cleaning stops at each log's recovery point; checkpointing it first means crash
        # recovery never rescans a cleaned segment.
        self.checkpoint_recovery_points()
        return self.cleaner.clean_logs(self.all_logs(), now_ms, upper_bound=high_watermark)

    def checkpoint_recovery_points(self) -> None:
        """Write the recovery-point checkpoint if any log's recovery point moved."""
        points = {key: log.recovery_point for key, log in self._logs.items()}
        if points != self._checkpointed:
            write_checkpoint(self._checkpoint_path, points)
            self._checkpointed = points

    def shutdown(self) -> None:
        """Flush and close every log, checkpoint, then write the clean-shutdown marker."""
        for log in self._logs.values():
            log.close()
        for _due, log, path in self._deleted_dirs:
            log.delete_at(path)
        self._deleted_dirs = []
        self.checkpoint_recovery_points()
        marker = self.log_dir / CLEAN_SHUTDOWN_FILE
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            dir_fd = os.open(self.log_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise KafkaStorageError(f"cannot write {marker}: {exc}") from exc
        self._logs = {}
        self._log.info("log_manager_stopped")
