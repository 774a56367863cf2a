"""minibroker's partition storage engine: Kafka's log, per batch, never per record.

``LogManager`` owns one log dir; ``Log`` is one partition (segments, offsets, retention,
flush, recovery, leader-epoch cache, idempotent-producer state); ``LogConfig`` holds the
topic-level settings by Kafka's names.
See docs/storage.md.
"""

from broker.log.checkpoint import read_checkpoint, write_checkpoint
from broker.log.config import BROKER_LOG_CONFIGS, BROKER_TO_TOPIC_CONFIG, LogConfig
from broker.log.epoch_cache import (
    LEADER_EPOCH_CHECKPOINT,
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    EpochEntry,
    LeaderEpochCache,
)
from broker.log.log import AppendInfo, Log, ReadResult, wall_clock_ms
from broker.log.manager import (
    CLEAN_SHUTDOWN_FILE,
    RECOVERY_POINT_CHECKPOINT,
    LogManager,
    partition_dir_name,
)
from broker.log.producer_state import Accept, Duplicate, ProducerStateManager

__all__ = [
    "BROKER_LOG_CONFIGS",
    "BROKER_TO_TOPIC_CONFIG",
    "CLEAN_SHUTDOWN_FILE",
    "LEADER_EPOCH_CHECKPOINT",
    "RECOVERY_POINT_CHECKPOINT",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "Accept",
    "AppendInfo",
    "Duplicate",
    "EpochEntry",
    "LeaderEpochCache",
    "Log",
    "LogConfig",
    "LogManager",
    "ProducerStateManager",
    "ReadResult",
    "partition_dir_name",
    "read_checkpoint",
    "wall_clock_ms",
    "write_checkpoint",
]
