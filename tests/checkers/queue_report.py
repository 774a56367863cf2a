"""Re-exports ``chaos.checker_report`` (the queue checker's report moved into the product)."""

from chaos.checker_report import (
    MAX_EXAMPLES,
    TP,
    AbortedRead,
    Anomaly,
    AnomalyKind,
    Duplicate,
    GroupSkip,
    InconsistentOffset,
    LostWrite,
    NonmonotonicPoll,
    OffsetMismatch,
    QueueReport,
    QueueStats,
    SkippedOffsets,
    Unseen,
    WorkloadError,
)

__all__ = [
    "MAX_EXAMPLES",
    "TP",
    "AbortedRead",
    "Anomaly",
    "AnomalyKind",
    "Duplicate",
    "GroupSkip",
    "InconsistentOffset",
    "LostWrite",
    "NonmonotonicPoll",
    "OffsetMismatch",
    "QueueReport",
    "QueueStats",
    "SkippedOffsets",
    "Unseen",
    "WorkloadError",
]
