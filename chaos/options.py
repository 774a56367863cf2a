"""The options of one chaos run, validated in one place (CLI and ``chaos.run`` alike)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from chaos.errors import ChaosConfigError
from chaos.schedule import FaultKind

__all__ = ["DEFAULT_FAULTS", "TARGETS", "ChaosOptions"]

TARGETS = ("process", "compose")
DEFAULT_FAULTS: tuple[FaultKind, ...] = (
    FaultKind.KILL,
    FaultKind.PAUSE,
    FaultKind.RESTART,
    FaultKind.COORDINATOR_KILL,
)


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    target: str = "process"
    """``process`` (a ``minibroker cluster up`` cluster) or ``compose`` (docker-compose.yml)."""
    cluster_dir: Path = Path("./data")
    """process: the ``--data-dir`` of ``cluster up`` (its cluster.json)."""
    start_cluster: bool = False
    """process: start ``cluster up`` in ``cluster_dir`` for the run, stop it afterwards."""
    compose_file: Path = Path("docker-compose.yml")
    compose_project: str | None = None
    """compose: the project name (default: as compose derives it from the file's folder)."""
    bootstrap_servers: str | None = None
    """Default: from cluster.json, or the brokers' published ports."""
    duration_s: float = 120.0
    """Workload and faults; the final read and the check come after."""
    seed: int | None = None
    """None: drawn from the clock, and reported so the run can be replayed."""
    faults: tuple[FaultKind, ...] = DEFAULT_FAULTS
    topic: str | None = None
    """None: ``chaos-<run id>``, a fresh topic per run."""
    partitions: int = 3
    producers: int = 2
    consumers: int = 2
    """Members of the run's consumer group (0: no group, only the final read)."""
    rate: float = 200.0
    """Records per second over all producers (0: as fast as acks come back)."""
    out_dir: Path | None = None
    """None: ``./chaos-<timestamp>/``."""
    quiet_s: float | None = None
    """The fault-free end of the run, for the cluster to recover (None: a quarter of the
    duration, between 10 and 60 s)."""
    recovery_timeout_s: float = 90.0
    """How long each fault's recovery (every ISR full again) may take before the next."""
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    def validated(self) -> ChaosOptions:
        """Checks every value; fills in the seed, the topic and the out dir."""
        if self.target not in TARGETS:
            raise ChaosConfigError(f"--target must be one of {', '.join(TARGETS)}")
        if not (math.isfinite(self.duration_s) and self.duration_s >= 10):
            raise ChaosConfigError("--duration must be at least 10 seconds")
        if self.partitions < 1:
            raise ChaosConfigError("--partitions must be at least 1")
        if self.producers < 1:
            raise ChaosConfigError("--producers must be at least 1")
        if self.consumers < 0:
            raise ChaosConfigError("--consumers cannot be negative")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ChaosConfigError("--rate must be 0 (unlimited) or a positive number")
        if self.quiet_s is not None and not (0 <= self.quiet_s < self.duration_s):
            raise ChaosConfigError("--quiet must be at least 0 and less than --duration")
        if not self.faults:
            raise ChaosConfigError("--faults names no fault")
        if self.start_cluster and self.target != "process":
            raise ChaosConfigError("--start-cluster goes with --target process only")
        if self.recovery_timeout_s <= 0:
            raise ChaosConfigError("the recovery timeout must be positive")
        seed = self.seed if self.seed is not None else time.time_ns() % 1_000_000_007
        return replace(
            self,
            seed=seed,
            topic=self.topic or f"chaos-{self.run_id}",
            out_dir=self.out_dir or Path(f"chaos-{self.run_id}"),
        )

    @property
    def quiet(self) -> float:
        if self.quiet_s is not None:
            return self.quiet_s
        return min(max(self.duration_s / 4, 10.0), 60.0)

    @property
    def group(self) -> str:
        return f"chaos-{self.run_id}"

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "cluster_dir": str(self.cluster_dir),
            "start_cluster": self.start_cluster,
            "compose_file": str(self.compose_file),
            "compose_project": self.compose_project,
            "bootstrap_servers": self.bootstrap_servers,
            "duration_s": self.duration_s,
            "seed": self.seed,
            "faults": [str(k) for k in self.faults],
            "topic": self.topic,
            "partitions": self.partitions,
            "producers": self.producers,
            "consumers": self.consumers,
            "rate": self.rate,
            "out_dir": str(self.out_dir),
            "quiet_s": self.quiet,
            "recovery_timeout_s": self.recovery_timeout_s,
            "run_id": self.run_id,
            "group": self.group,
        }
