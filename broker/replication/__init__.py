"""Replication decisions, sans-IO: one partition's leader and follower state
(``partition``) and the controller's elections (``election``). No trio, no I/O, no clocks."""

from broker.replication.election import (
    NO_LEADER,
    ChangeReason,
    PartitionLike,
    StateChange,
    elect_leader,
    imbalance_ratio,
    imbalanced_brokers,
    on_brokers_changed,
    preferred_leader_elections,
)
from broker.replication.partition import (
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_END_OFFSET,
    UNDEFINED_EPOCH_OFFSET,
    UNKNOWN_OFFSET,
    AcksAllStatus,
    EpochEndOffset,
    FetchUpdate,
    FollowerState,
    LeaderState,
    Truncation,
)

__all__ = [
    "NO_LEADER",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_END_OFFSET",
    "UNDEFINED_EPOCH_OFFSET",
    "UNKNOWN_OFFSET",
    "AcksAllStatus",
    "ChangeReason",
    "EpochEndOffset",
    "FetchUpdate",
    "FollowerState",
    "LeaderState",
    "PartitionLike",
    "StateChange",
    "Truncation",
    "elect_leader",
    "imbalance_ratio",
    "imbalanced_brokers",
    "on_brokers_changed",
    "preferred_leader_elections",
]
