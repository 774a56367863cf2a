"""Faults on a process cluster started by ``minibroker cluster up --data-dir D``.

Everything comes from ``D/cluster.json`` (``broker.cluster_file``): each process's pid,
argv, ports and log. Kill is SIGKILL and, after the hold, a new process from the recorded
argv appending to the same log (its pid written back to cluster.json, so ``cluster up``
keeps watching it and stops it at the end); pause is SIGSTOP then SIGCONT; restart is
SIGTERM (a controlled shutdown), a wait for the exit, and a start at once. A pid is only
signalled while it still runs the recorded argv. Partitions are not offered: the processes
talk over loopback with nothing in between to cut (the fault tests' proxies need brokers
started behind them); the compose target has them.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from broker.cluster_file import (
    CLUSTER_FILE,
    ClusterProcess,
    pid_alive,
    pid_runs,
    read_cluster_file,
    write_cluster_file,
)
from chaos.errors import ChaosConfigError, FaultInjectionError
from chaos.schedule import FaultKind
from chaos.target import Heal, srvr_mode

__all__ = ["ProcessTarget", "four_letter_word"]

EXIT_TIMEOUT_S = 30.0
LISTEN_TIMEOUT_S = 30.0
HOST = "127.0.0.1"


def four_letter_word(port: int, word: str, timeout: float = 2.0) -> str:
    """A ZooKeeper four-letter word to 127.0.0.1:``port``; "" when nothing answers."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


class ProcessTarget:
    name = "process"
    supported = frozenset(
        {FaultKind.KILL, FaultKind.PAUSE, FaultKind.RESTART, FaultKind.COORDINATOR_KILL}
    )

    def __init__(self, cluster_dir: Path) -> None:
        self.path = Path(cluster_dir) / CLUSTER_FILE
        self.cluster = read_cluster_file(self.path)
        self._children: set[int] = set()  # pids we spawned: ours to reap
        self._lock = threading.Lock()
        if not self.brokers():
            raise ChaosConfigError(f"{self.path} lists no broker")

    def describe(self) -> str:
        names = ", ".join(p.name for p in self.cluster.processes)
        return f"process cluster {self.path.parent} ({names})"

    def brokers(self) -> list[int]:
        return sorted(p.node_id for p in self.cluster.processes if p.role == "broker")

    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def _proc(self, name: str) -> ClusterProcess:
        self.cluster = read_cluster_file(self.path)  # cluster up or a restart may rewrite it
        return self.cluster.process(name)

    # --- primitives ------------------------------------------------------------------

    def send_signal(self, name: str, sig: signal.Signals) -> ClusterProcess:
        proc = self._proc(name)
        if not pid_runs(proc.pid, proc.argv):
            raise FaultInjectionError(f"{name} (pid {proc.pid}) is not running: cannot {sig.name}")
        os.kill(proc.pid, sig)
        return proc

    def wait_exit(self, proc: ClusterProcess, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._reaped(proc.pid) and pid_alive(proc.pid):  # else cluster up reaps it
            if time.monotonic() > deadline:
                raise FaultInjectionError(f"{proc.name} did not exit in {timeout_s} s")
            time.sleep(0.02)

    def _reaped(self, pid: int) -> bool:
        """True once our own child ``pid`` exited (and is reaped); False otherwise."""
        if pid not in self._children:
            return False
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done == pid:
            self._children.discard(pid)
            return True
        return False

    def start(self, name: str) -> ClusterProcess:
        """A new process from the recorded argv, its output appended to the same log, in a
        session of its own (it outlives this tool; ``cluster up`` stops it)."""
        proc = self._proc(name)
        if pid_runs(proc.pid, proc.argv):
            raise FaultInjectionError(f"{name} (pid {proc.pid}) is still running")
        # posix_spawn, not Popen: the process is meant to outlive this tool, and a Popen
        # collected while its process runs warns; we reap it ourselves if we stop it.
        log = os.open(proc.log or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            pid = os.posix_spawnp(
                proc.argv[0],
                list(proc.argv),
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(log)
        with self._lock:
            self._children.add(pid)
            self.cluster = read_cluster_file(self.path).with_pid(name, pid)
            write_cluster_file(self.path, self.cluster)
        port = proc.ports.get("broker", proc.ports.get("client"))
        if port is not None:
            self._wait_listening(name, port, pid)
        return self.cluster.process(name)

    def _wait_listening(self, name: str, port: int, pid: int) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while True:
            if self._reaped(pid):
                raise FaultInjectionError(f"{name} exited right after its restart; see its log")
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise FaultInjectionError(f"{name} not listening on {port}") from None
                time.sleep(0.05)

    def coordinator_leader(self) -> str:
        """The member whose ``srvr`` says leader (or standalone), polled through an
        election for up to 30 s."""
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while True:
            for proc in self.cluster.processes:
                if proc.role == "coordinator" and "client" in proc.ports:
                    mode = srvr_mode(four_letter_word(proc.ports["client"], "srvr"))
                    if mode in ("leader", "standalone"):
                        return proc.name
            if time.monotonic() > deadline:
                raise FaultInjectionError("no coordinator member says it leads")
            time.sleep(0.1)

    # --- faults ----------------------------------------------------------------------

    def resolve(self, broker: int | None) -> str:
        return self.coordinator_leader() if broker is None else f"broker-{broker}"

    def inject(self, kind: FaultKind, name: str) -> Heal:
        if kind not in self.supported:
            raise ChaosConfigError(f"the process target cannot inject {kind}")
        if kind in (FaultKind.KILL, FaultKind.COORDINATOR_KILL):
            self.wait_exit(self.send_signal(name, signal.SIGKILL))
            return lambda: self._heal_start(name)
        if kind is FaultKind.PAUSE:
            self.send_signal(name, signal.SIGSTOP)
            return lambda: self._heal_signal(name, signal.SIGCONT)
        # RESTART: a clean shutdown, then at once a new process.
        proc = self.send_signal(name, signal.SIGTERM)
        try:
            self.wait_exit(proc)
        except FaultInjectionError:
            os.kill(proc.pid, signal.SIGKILL)  # never leave a half-stopped broker behind
            self.wait_exit(proc)
        self.start(name)
        return lambda: None

    def _heal_start(self, name: str) -> None:
        self.start(name)

    def _heal_signal(self, name: str, sig: signal.Signals) -> None:
        self.send_signal(name, sig)

    def close(self) -> None:
        """Reap the processes we started that exited; running ones are left to cluster up."""
        for pid in list(self._children):
            self._reaped(pid)
