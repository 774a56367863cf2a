"""The coordinator ensemble's consensus core (Raft), sans-IO. See ``node`` for the rules."""

from coordinator.consensus.log import RaftLog
from coordinator.consensus.node import (
    HardState,
    NotLeaderError,
    RaftNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

__all__ = [
    "HardState",
    "NotLeaderError",
    "RaftLog",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
]
