"""The two ensembles as real processes: minibroker's coordinators and Apache ZooKeeper's."""

from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ZK_CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/*"


# --- processes ------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the bench dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def mntr(port: int) -> dict[str, str]:
    """ZooKeeper's ``mntr`` four-letter word (both systems answer it); {} if down."""
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"mntr")
            while data := s.recv(65536):
                chunks.append(data)
    except OSError:
        return {}
    lines = (line.split("\t", 1) for line in b"".join(chunks).decode().splitlines())
    return {kv[0]: kv[1] for kv in lines if len(kv) == 2}


@dataclass(slots=True)
class Ensemble:
    """The member processes of one system (1 = standalone), their ports and logs."""

    name: str
    workdir: Path
    client_ports: list[int]
    commands: list[list[str]]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def members(self) -> list[int]:
        return list(range(1, len(self.client_ports) + 1))

    def hosts(self, first: int) -> str:
        order = [first] + [m for m in self.members if m != first]
        return ",".join(f"127.0.0.1:{self.client_ports[m - 1]}" for m in order)

    def start(self) -> None:
        for m, cmd in zip(self.members, self.commands, strict=True):
            with (self.workdir / f"member{m}.log").open("wb") as log:
                self.procs[m] = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,  # safe: no threads run yet
                )

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait()

    def kill(self, member: int) -> None:
        os.kill(self.procs[member].pid, signal.SIGKILL)

    def leader(self, exclude: int = 0, synced: bool = True) -> int | None:
        """The member whose mntr says leader (standalone: the only one); if ``synced``,
        only once it also counts every live follower in sync."""
        live_followers = len(self.members) - (1 if exclude else 0) - 1
        for m in self.members:
            if m == exclude:
                continue
            metrics = mntr(self.client_ports[m - 1])
            state = metrics.get("zk_server_state")
            in_sync = int(metrics.get("zk_synced_followers", 0)) >= live_followers
            if state == "standalone" or (state == "leader" and (in_sync or not synced)):
                return m
        return None

    def wait_leader(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{self.name} member {m} exited:\n{self.log_tail(m)}")
            if (leader := self.leader()) is not None:
                return leader
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: no leader in {timeout_s} s:\n{self.log_tail(1)}")

    def log_tail(self, member: int, lines: int = 15) -> str:
        text = (self.workdir / f"member{member}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def minibroker_command() -> list[str]:
    exe = Path(sys.executable).with_name("minibroker")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "broker.cli"]


def minibroker_has_ensemble() -> bool:
    """The ensemble flags exist once ``minibroker coordinator --help`` lists them."""
    cmd = [*minibroker_command(), "coordinator", "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # broken, not merely old: say so rather than run standalone
        tail = "\n".join(done.stderr.splitlines()[-6:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{tail}")
    return "--peers" in done.stdout and "--peer-listen" in done.stdout


def minibroker_ensemble(workdir: Path, nodes: int) -> Ensemble:
    """Default flags otherwise: fsync on, election timeout 500 ms, heartbeat 100 ms."""
    ports, peer_ports = free_ports(nodes), free_ports(nodes)
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    commands = []
    for m in range(1, nodes + 1):
        data = workdir / f"data{m}"
        data.mkdir()
        cmd = [*minibroker_command(), "coordinator", "--id", str(m), "--log-level", "warning"]
        cmd += ["--listen", f"127.0.0.1:{ports[m - 1]}", "--data-dir", str(data)]
        if nodes > 1:
            cmd += ["--peers", peers, "--peer-listen", f"127.0.0.1:{peer_ports[m - 1]}"]
        commands.append(cmd)
    return Ensemble("minibroker", workdir, ports, commands)


def zookeeper_ensemble(workdir: Path, nodes: int, heap_mb: int) -> Ensemble:
    """A zoo.cfg per member; forceSync stays at its default (yes): both sides fsync."""
    ports, peer_ports, elect_ports = free_ports(nodes), free_ports(nodes), free_ports(nodes)
    servers = "".join(
        f"server.{i + 1}=127.0.0.1:{p}:{e}\n"
        for i, (p, e) in enumerate(zip(peer_ports, elect_ports, strict=True))
    )
    commands = []
    for m in range(1, nodes + 1):
        data = workdir / f"data{m}"
        data.mkdir()
        cfg = (
            f"tickTime=2000\ndataDir={data}\nclientPort={ports[m - 1]}\n"
            "admin.enableServer=false\n4lw.commands.whitelist=*\n"
        )
        main = "org.apache.zookeeper.server.ZooKeeperServerMain"
        if nodes > 1:
            (data / "myid").write_text(f"{m}\n")
            cfg += f"initLimit=10\nsyncLimit=5\n{servers}"
            main = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
        (workdir / f"zoo{m}.cfg").write_text(cfg)
        commands.append(
            ["java", f"-Xmx{heap_mb}m", "-cp", ZK_CLASSPATH, main, str(workdir / f"zoo{m}.cfg")]
        )
    return Ensemble("zookeeper", workdir, ports, commands)


def zookeeper_missing() -> str:
    if shutil.which("java") is None or not Path("/usr/share/java/zookeeper.jar").exists():
        return "skipped, not installed: apt-get install -y zookeeper default-jre-headless"
    try:
        importlib.import_module("kazoo.client")
    except ImportError:
        return "skipped, kazoo not installed: .venv/bin/pip install kazoo"
    return ""
