"""``cluster.json``: the processes ``minibroker cluster up`` started, for other tools.

``cluster up`` writes ``<data-dir>/cluster.json`` once every process listens: for each one
its name, role, id, pid, argv, ports and log file. ``minibroker chaos`` reads it to kill,
pause and restart those processes, and rewrites it (atomically, new pid) after spawning a
replacement from the recorded argv; ``cluster up`` re-reads it so that it keeps watching,
and finally stops, a process it no longer owns. A pid is only signalled while its
``/proc/<pid>/cmdline`` still equals the recorded argv, so a recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from proto.errors import InvalidConfigurationError

__all__ = [
    "CLUSTER_FILE",
    "ClusterFile",
    "ClusterProcess",
    "pid_alive",
    "pid_runs",
    "read_cluster_file",
    "terminate_pids",
    "write_cluster_file",
]

CLUSTER_FILE = "cluster.json"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class ClusterProcess:
    name: str
    """``coordinator-N`` or ``broker-N``."""
    role: str
    """``coordinator`` or ``broker``."""
    node_id: int
    pid: int
    argv: tuple[str, ...]
    ports: Mapping[str, int] = field(default_factory=dict)
    """``client`` and ``peer`` (an ensemble member) for a coordinator, ``broker`` for a broker."""
    log: str = ""
    """The file its stdout and stderr go to; a restarted process appends to it."""


@dataclass(frozen=True, slots=True)
class ClusterFile:
    owner_pid: int
    """The ``cluster up`` process."""
    bootstrap: str
    coordinators: str
    processes: tuple[ClusterProcess, ...]

    def process(self, name: str) -> ClusterProcess:
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise InvalidConfigurationError(f"{CLUSTER_FILE} lists no process named {name!r}")

    def with_pid(self, name: str, pid: int) -> ClusterFile:
        self.process(name)
        procs = tuple(replace(p, pid=pid) if p.name == name else p for p in self.processes)
        return replace(self, processes=procs)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "owner_pid": self.owner_pid,
            "bootstrap": self.bootstrap,
            "coordinators": self.coordinators,
            "processes": [
                {
                    "name": p.name,
                    "role": p.role,
                    "id": p.node_id,
                    "pid": p.pid,
                    "argv": list(p.argv),
                    "ports": dict(p.ports),
                    "log": p.log,
                }
                for p in self.processes
            ],
        }

    @classmethod
    def from_json(cls, obj: Any) -> ClusterFile:
        try:
            if obj["version"] != _VERSION:
                raise InvalidConfigurationError(f"{CLUSTER_FILE}: version {obj['version']}")
            procs = tuple(
                ClusterProcess(
                    name=str(p["name"]),
                    role=str(p["role"]),
                    node_id=int(p["id"]),
                    pid=int(p["pid"]),
                    argv=tuple(str(a) for a in p["argv"]),
                    ports={str(k): int(v) for k, v in p["ports"].items()},
                    log=str(p["log"]),
                )
                for p in obj["processes"]
            )
            return cls(
                int(obj["owner_pid"]), str(obj["bootstrap"]), str(obj["coordinators"]), procs
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidConfigurationError(f"{CLUSTER_FILE} is malformed: {exc!r}") from exc


def write_cluster_file(path: Path, cluster: ClusterFile) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cluster.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def read_cluster_file(path: Path) -> ClusterFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidConfigurationError(
            f"cannot read {path} ({exc.strerror}); is `minibroker cluster up --data-dir "
            f"{path.parent}` running?"
        ) from exc
    try:
        return ClusterFile.from_json(json.loads(text))
    except ValueError as exc:
        raise InvalidConfigurationError(f"{path} is not JSON: {exc}") from exc


def pid_alive(pid: int) -> bool:
    """Runs (or is stopped), and is not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name in parentheses, which may itself hold ")".
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def pid_runs(pid: int, argv: Sequence[str]) -> bool:
    """``pid`` is alive and still runs ``argv`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return pid_alive(pid) and cmdline.split(b"\0")[:-1] == [os.fsencode(a) for a in argv]


def terminate_pids(pids: Sequence[int], timeout_s: float = 30.0) -> None:
    """SIGTERM (and SIGCONT, in case one is stopped) to processes that are not our
    children; SIGKILL those still alive after ``timeout_s``."""
    for pid in pids:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
