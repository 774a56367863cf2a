"""Result values of the coordinator benchmark and the CPU meter."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

GOALS = {"writes_per_s": 20_000, "reads_per_s": 50_000, "ratio": 4.0, "new_leader_ms": 1000}


PHASES = ("create", "set", "get")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One phase; CPU in % of one core, ``cpu_other_pct`` is everything else on the
    machine (another job's load there makes the numbers low)."""

    name: str
    ops: int
    errors: dict[str, int]  # error class name -> count
    elapsed_s: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_servers_pct: float = 0.0
    cpu_client_pct: float = 0.0
    cpu_other_pct: float = 0.0


@dataclass(frozen=True, slots=True)
class FailoverResult:
    killed_member: int
    new_leader: int | None
    new_leader_ms: float | None  # kill -> a survivor's mntr says leader
    next_ack_ms: float | None  # kill -> first acknowledged write sent after the kill


@dataclass(slots=True)
class SystemResult:
    system: str
    mode: str  # "ensemble" or "standalone"
    phases: list[PhaseResult] = field(default_factory=list)
    failover: FailoverResult | None = None
    note: str = ""


def phase_result(
    name: str, latencies_s: list[float], errors: dict[str, int], elapsed_s: float
) -> PhaseResult:
    ms = sorted(x * 1000 for x in latencies_s)

    def pct(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2) if ms else float("nan")

    rate = round(len(ms) / elapsed_s) if elapsed_s > 0 else 0
    return PhaseResult(name, len(ms), errors, round(elapsed_s, 3), rate, pct(0.5), pct(0.99))


class CpuMeter:
    """CPU ticks of the servers, this process (all threads) and the whole machine."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids

    @staticmethod
    def _ticks(pid: int) -> int:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        return 0

    def sample(self) -> tuple[int, int, int]:
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = sum(cpu) - cpu[3] - cpu[4]  # all but idle and iowait
        return sum(map(self._ticks, self.server_pids)), self._ticks(os.getpid()), busy

    def annotate(self, phase: PhaseResult, before: tuple[int, int, int]) -> PhaseResult:
        servers, client, busy = (b - a for a, b in zip(before, self.sample(), strict=True))
        scale = 100 / CLK_TCK / max(phase.elapsed_s, 1e-9)
        return dataclasses.replace(
            phase,
            cpu_servers_pct=round(servers * scale),
            cpu_client_pct=round(client * scale),
            cpu_other_pct=max(0, round((busy - servers - client) * scale)),
        )
