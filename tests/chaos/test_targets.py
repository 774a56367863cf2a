"""The fault drivers: compose's docker commands (through a fake docker), the process
target's signals and restarts (on stand-in processes), and what each target refuses."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from broker.cluster_file import (
    CLUSTER_FILE,
    ClusterFile,
    ClusterProcess,
    pid_alive,
    pid_runs,
    read_cluster_file,
    write_cluster_file,
)
from chaos.compose_target import (
    ComposeTarget,
    connect_argv,
    disconnect_argv,
    kill_argv,
    list_argv,
    pause_argv,
    project_names,
    restart_argv,
    srvr_argv,
    start_argv,
    unpause_argv,
)
from chaos.errors import ChaosConfigError, FaultInjectionError
from chaos.process_target import ProcessTarget
from chaos.schedule import FaultKind
from chaos.target import check_supported, srvr_mode
from proto.errors import InvalidConfigurationError

# --- compose -----------------------------------------------------------------------------


def test_docker_argv() -> None:
    assert kill_argv("c1") == ["docker", "kill", "--signal", "KILL", "c1"]
    assert start_argv("c1") == ["docker", "start", "c1"]
    assert pause_argv("c1") == ["docker", "pause", "c1"]
    assert unpause_argv("c1") == ["docker", "unpause", "c1"]
    assert restart_argv("c1") == ["docker", "restart", "-t", "30", "c1"]
    assert disconnect_argv("p_default", "c1") == [
        "docker",
        "network",
        "disconnect",
        "p_default",
        "c1",
    ]
    assert connect_argv("p_default", "c1", ["broker-2"]) == [
        "docker", "network", "connect", "--alias", "broker-2", "p_default", "c1",
    ]  # fmt: skip
    assert srvr_argv("c9") == [
        "docker", "exec", "c9", "minibroker", "zk", "--server", "localhost:2181", "srvr",
    ]  # fmt: skip
    assert "label=com.docker.compose.project=proj" in list_argv("proj")


def test_project_names_follow_compose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    folder = tmp_path / "My-Project_2"
    folder.mkdir()
    assert project_names(folder / "docker-compose.yml") == ["my-project_2", "myproject2"]
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "explicit")
    assert project_names(folder / "docker-compose.yml") == ["explicit"]


class FakeDocker:
    """Answers the commands ComposeTarget runs for project ``proj``; records them all."""

    def __init__(self, leader: str = "coordinator-2") -> None:
        self.calls: list[list[str]] = []
        self.leader = leader
        self.containers = {
            "coordinator-1": "cid-c1", "coordinator-2": "cid-c2", "coordinator-3": "cid-c3",
            "broker-1": "cid-b1", "broker-2": "cid-b2", "broker-3": "cid-b3",
        }  # fmt: skip

    def __call__(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:2] == ["docker", "ps"]:
            if "label=com.docker.compose.project=proj" not in argv:
                return ""
            return "".join(f"{cid} {svc}\n" for svc, cid in self.containers.items())
        if argv[:2] == ["docker", "inspect"]:
            cid = argv[-1]
            n = cid[-1]
            if "PortBindings" in argv[3]:
                return json.dumps({"19092/tcp": [{"HostIp": "127.0.0.1", "HostPort": f"2909{n}"}]})
            return json.dumps({"proj_default": {"Aliases": [f"broker-{n}", cid[:5]]}})
        if argv[:2] == ["docker", "exec"]:
            svc = next(s for s, c in self.containers.items() if c == argv[2])
            if svc == "coordinator-1":
                raise FaultInjectionError("container is paused")
            return f"Zookeeper version: x\nMode: {'leader' if svc == self.leader else 'follower'}\n"
        return ""

    def actions(self) -> list[list[str]]:
        return [c for c in self.calls if c[1] not in ("ps", "inspect", "exec")]


def test_compose_target_finds_the_project_and_bootstrap() -> None:
    docker = FakeDocker()
    target = ComposeTarget(Path("/x/docker-compose.yml"), "proj", runner=docker)
    assert target.brokers() == [1, 2, 3]
    assert target.bootstrap() == "localhost:29091,localhost:29092,localhost:29093"
    assert target.supported == frozenset(FaultKind)
    assert "proj" in target.describe()
    with pytest.raises(ChaosConfigError, match="no containers of compose project 'other'"):
        ComposeTarget(Path("/x/docker-compose.yml"), "other", runner=docker)


@pytest.mark.parametrize(
    ("kind", "injected", "healed"),
    [
        (FaultKind.KILL, [kill_argv("cid-b2")], [start_argv("cid-b2")]),
        (FaultKind.PAUSE, [pause_argv("cid-b2")], [unpause_argv("cid-b2")]),
        (FaultKind.RESTART, [restart_argv("cid-b2")], []),
        (
            FaultKind.PARTITION,
            [disconnect_argv("proj_default", "cid-b2")],
            [connect_argv("proj_default", "cid-b2", ["broker-2"])],
        ),
    ],
)
def test_compose_broker_faults(
    kind: FaultKind, injected: list[list[str]], healed: list[list[str]]
) -> None:
    docker = FakeDocker()
    target = ComposeTarget(Path("/x/docker-compose.yml"), "proj", runner=docker)
    heal = target.inject(kind, target.resolve(2))
    assert docker.actions() == injected
    heal()
    assert docker.actions() == injected + healed


def test_compose_coordinator_kill_hits_the_leader() -> None:
    docker = FakeDocker(leader="coordinator-3")
    target = ComposeTarget(Path("/x/docker-compose.yml"), "proj", runner=docker)
    name = target.resolve(None)
    heal = target.inject(FaultKind.COORDINATOR_KILL, name)
    heal()
    assert name == "coordinator-3"
    assert docker.actions() == [kill_argv("cid-c3"), start_argv("cid-c3")]


def test_compose_without_a_leader_fails_clearly() -> None:
    target = ComposeTarget(Path("/x/docker-compose.yml"), "proj", runner=FakeDocker(leader="none"))
    with pytest.raises(FaultInjectionError, match="no coordinator container says it leads"):
        target.resolve(None)


def test_srvr_mode() -> None:
    assert srvr_mode("Latency min/avg/max: 0/0/1\nMode: follower\nNode count: 4\n") == "follower"
    assert srvr_mode("localhost:2181: Mode: leader") == "leader"
    assert srvr_mode("") is None


# --- the process target --------------------------------------------------------------------


def _stand_in(tmp_path: Path, name: str) -> tuple[list[str], subprocess.Popen[bytes]]:
    """A process that prints its pid and sleeps: it stands in for a broker."""
    argv = [
        sys.executable,
        "-c",
        f"import os, time; print('{name}', os.getpid(), flush=True); time.sleep(600)",
    ]
    log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return argv, proc


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[tuple[Path, dict[str, subprocess.Popen[bytes]]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    entries = []
    for role, node in (("coordinator", 1), ("broker", 1), ("broker", 2), ("broker", 3)):
        name = f"{role}-{node}"
        argv, proc = _stand_in(tmp_path, name)
        procs[name] = proc
        entries.append(
            ClusterProcess(
                name, role, node, proc.pid, tuple(argv), {}, str(tmp_path / f"{name}.log")
            )
        )
    for name in procs:  # up and running its own code (its argv in /proc)
        _wait(lambda name=name: name in (tmp_path / f"{name}.log").read_text())
    write_cluster_file(
        tmp_path / CLUSTER_FILE,
        ClusterFile(os.getpid(), "127.0.0.1:1", "127.0.0.1:2", tuple(entries)),
    )
    try:
        yield tmp_path, procs
    finally:
        for pid in {p.pid for p in read_cluster_file(tmp_path / CLUSTER_FILE).processes}:
            if pid_alive(pid):
                os.kill(pid, 9)
                with contextlib.suppress(ChildProcessError):  # one a target spawned
                    os.waitpid(pid, 0)
        for proc in procs.values():
            proc.kill()
            proc.wait()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _wait(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_process_kill_then_restart_from_the_recorded_argv(
    stand_ins: tuple[Path, dict[str, subprocess.Popen[bytes]]],
) -> None:
    root, procs = stand_ins
    target = ProcessTarget(root)
    assert target.brokers() == [1, 2, 3]
    assert target.bootstrap() == "127.0.0.1:1"
    old = procs["broker-2"]
    assert target.resolve(2) == "broker-2"
    heal = target.inject(FaultKind.KILL, "broker-2")
    assert old.wait(5) == -9
    heal()
    new = read_cluster_file(root / CLUSTER_FILE).process("broker-2")
    assert new.pid != old.pid
    _wait(lambda: pid_runs(new.pid, new.argv))  # once seen not yet so on a loaded machine
    assert new.argv == tuple(old.args)  # type: ignore[arg-type]
    log = root / "broker-2.log"
    _wait(lambda: log.read_text().count("broker-2") == 2)  # appended, not replaced
    assert log.read_text().split() == ["broker-2", str(old.pid), "broker-2", str(new.pid)]
    target.close()


def test_process_pause_and_resume(
    stand_ins: tuple[Path, dict[str, subprocess.Popen[bytes]]],
) -> None:
    root, procs = stand_ins
    target = ProcessTarget(root)
    heal = target.inject(FaultKind.PAUSE, "broker-3")
    pid = procs["broker-3"].pid
    _wait(lambda: _state(pid) == "T")
    heal()
    _wait(lambda: _state(pid) == "S")


def test_process_restart_is_sigterm_then_a_new_process(
    stand_ins: tuple[Path, dict[str, subprocess.Popen[bytes]]],
) -> None:
    root, procs = stand_ins
    target = ProcessTarget(root)
    heal = target.inject(FaultKind.RESTART, "broker-1")
    assert procs["broker-1"].wait(5) == -15
    heal()  # nothing left to heal
    assert pid_alive(read_cluster_file(root / CLUSTER_FILE).process("broker-1").pid)
    target.close()


def test_process_target_refuses_partitions_and_dead_processes(
    stand_ins: tuple[Path, dict[str, subprocess.Popen[bytes]]],
) -> None:
    root, procs = stand_ins
    target = ProcessTarget(root)
    with pytest.raises(ChaosConfigError, match=r"cannot inject partition.*compose target"):
        check_supported(target, (FaultKind.KILL, FaultKind.PARTITION))
    procs["broker-1"].kill()
    procs["broker-1"].wait()
    with pytest.raises(FaultInjectionError, match=r"broker-1 \(pid \d+\) is not running"):
        target.inject(FaultKind.PAUSE, "broker-1")


def test_a_recycled_pid_is_not_signalled(
    stand_ins: tuple[Path, dict[str, subprocess.Popen[bytes]]],
) -> None:
    root, procs = stand_ins
    entry = read_cluster_file(root / CLUSTER_FILE).process("broker-1")
    assert pid_runs(entry.pid, entry.argv)
    assert not pid_runs(entry.pid, [*entry.argv, "--other"])
    assert not pid_runs(procs["broker-2"].pid, entry.argv)


def test_cluster_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigurationError, match="is `minibroker cluster up --data-dir"):
        ProcessTarget(tmp_path)
    (tmp_path / CLUSTER_FILE).write_text('{"version": 1, "processes": "no"}')
    with pytest.raises(InvalidConfigurationError, match="malformed"):
        ProcessTarget(tmp_path)
    (tmp_path / CLUSTER_FILE).write_text("{")
    with pytest.raises(InvalidConfigurationError, match="not JSON"):
        ProcessTarget(tmp_path)
