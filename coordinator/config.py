"""The coordinator's configuration: one validated, frozen value. Durations in ms."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_PEER_PORT", "DEFAULT_PORT", "CoordinatorConfig"]

DEFAULT_PORT = 2181
DEFAULT_PEER_PORT = 2888
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """ZooKeeper's zoo.cfg, the parts a standalone server needs.

    ``min_session_timeout_ms`` / ``max_session_timeout_ms`` default to 2 and 20 ticks;
    ``snapshot_count`` txns between snapshots; ``force_sync`` False skips fsync (tests of
    slow disks only, never production).
    """

    id: int = 1
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Path("coordinator-data")
    tick_time_ms: int = 2000
    min_session_timeout_ms: int | None = None
    max_session_timeout_ms: int | None = None
    snapshot_count: int = 100_000
    snap_retain_count: int = 3
    max_data_bytes: int = MiB
    max_frame_bytes: int = 16 * MiB
    force_sync: bool = True
    shutdown_grace_ms: int = 1000
    # A session whose connection closes unannounced expires this long after, unless its
    # client reconnects (see sessions.py). 0: wait out the whole session timeout (ZooKeeper).
    session_disconnect_grace_ms: int = 1000
    # The ensemble: id -> peer address of every member (this one included). Empty: standalone.
    peers: dict[int, tuple[str, int]] = field(default_factory=dict)
    peer_host: str = "127.0.0.1"
    peer_port: int = DEFAULT_PEER_PORT
    election_timeout_ms: int = 500
    heartbeat_interval_ms: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.id < 128:
            raise ValueError("id must be in [0, 128): it is the top byte of session ids")
        if not 0 <= self.port < 65536:
            raise ValueError("port must be in [0, 65535]")
        if self.tick_time_ms <= 0:
            raise ValueError("tick_time_ms must be positive")
        if self.min_timeout_ms > self.max_timeout_ms:
            raise ValueError("min_session_timeout_ms exceeds max_session_timeout_ms")
        if self.snapshot_count <= 0 or self.snap_retain_count <= 0:
            raise ValueError("snapshot_count and snap_retain_count must be positive")
        if self.max_data_bytes <= 0 or self.max_frame_bytes < self.max_data_bytes:
            raise ValueError("max_frame_bytes must hold at least max_data_bytes")
        if self.peers and self.id not in self.peers:
            members = ", ".join(str(i) for i in sorted(self.peers))
            raise ValueError(f"--id {self.id} is not in --peers (members: {members})")
        if self.session_disconnect_grace_ms < 0:
            raise ValueError("session_disconnect_grace_ms must be >= 0")
        if not 0 < self.heartbeat_interval_ms < self.election_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below election_timeout_ms")

    @property
    def ensemble(self) -> bool:
        return bool(self.peers)

    @property
    def min_timeout_ms(self) -> int:
        v = self.min_session_timeout_ms
        return 2 * self.tick_time_ms if v is None else v

    @property
    def max_timeout_ms(self) -> int:
        v = self.max_session_timeout_ms
        return 20 * self.tick_time_ms if v is None else v
