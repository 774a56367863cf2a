"""``minibroker chaos`` as a user runs it: against a real ``minibroker cluster up`` (3
coordinators, 3 brokers), a short seeded run of kill, pause, restart and coordinator-kill
that must end with no anomaly; and the command's errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.cli import main
from broker.cluster_file import CLUSTER_FILE, pid_alive, read_cluster_file
from chaos.checker import check
from chaos.local_cluster import free_port_range
from chaos.result import load_history
from chaos.schedule import FaultKind, plan

KINDS = (FaultKind.KILL, FaultKind.PAUSE, FaultKind.RESTART, FaultKind.COORDINATOR_KILL)
DURATION_S = 45.0
QUIET_S = 8.0
CONSUMERS = 2


def _seed_with_every_kind() -> int:
    """The first seed whose plan for this run has all four kinds (pure: the same each time)."""
    for seed in range(10_000):
        planned = plan(seed, DURATION_S - QUIET_S, KINDS, [1, 2, 3])
        if {f.kind for f in planned} == set(KINDS):
            return seed
    raise AssertionError("no seed plans every kind")


def _cluster_up(data: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "broker.cli", "cluster", "up", "--data-dir", str(data),
        "--coordinators", "3", "--broker-port", str(free_port_range(3)),
        "--coordinator-port", str(free_port_range(3)), "--peer-port", str(free_port_range(3)),
        "--set", "zookeeper.session.timeout.ms=4000", "--set", "replica.lag.time.max.ms=5000",
    ]  # fmt: skip
    out = open(data.parent / "cluster-up.log", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    deadline = time.monotonic() + 90
    while not (data / CLUSTER_FILE).exists():  # written once every process listens
        assert proc.poll() is None, (data.parent / "cluster-up.log").read_text()
        assert time.monotonic() < deadline, "cluster up did not start in 90 s"
        time.sleep(0.2)
    return proc


def test_a_short_run_on_a_process_cluster_finds_no_anomaly(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "report"
    seed = _seed_with_every_kind()
    up = _cluster_up(data)
    try:
        chaos = subprocess.run(
            [
                sys.executable, "-m", "broker.cli", "chaos", "--cluster-dir", str(data),
                "--duration", str(DURATION_S), "--quiet", str(QUIET_S), "--seed", str(seed),
                "--faults", ",".join(KINDS), "--consumers", str(CONSUMERS), "--rate", "150",
                "--out", str(out),
            ],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "COLUMNS": "160"},
        )  # fmt: skip
        print(chaos.stdout)
        assert chaos.returncode == 0, f"{chaos.stdout}\n{chaos.stderr}"
        assert "verdict: VALID" in chaos.stdout
        doc, events = load_history(out / "history.json")
        assert (out / "report.html").stat().st_size > 1_000_000
        assert doc["verdict"] == "valid" and doc["error"] is None
        assert doc["options"]["seed"] == seed
        faults = doc["faults"]
        assert len(faults) >= 3 and all(f["error"] is None for f in faults), faults
        assert {f["kind"] for f in faults} <= {str(k) for k in KINDS}
        assert all(f["recovered_at"] is not None for f in faults), faults
        stats = doc["result"]["stats"]
        assert stats["acked"] > 3_000, stats
        assert stats["records_final"] == stats["acked"] + stats["unknown_read"]
        if CONSUMERS:
            assert stats["commits"] > 0 and stats["records_polled"] >= stats["acked"] // 2
        report = check(events)  # the stored history checks the same again
        assert report.ok and report.stats.acked == stats["acked"]
        up_log = (tmp_path / "cluster-up.log").read_text()
        if any(f["kind"] in ("kill", "restart") for f in faults):
            assert "restarted by another process" in up_log
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
            raise
    assert code == 0
    # cluster up stopped the processes chaos restarted too, not only its own children.
    leftovers = [
        p.name for p in read_cluster_file(data / CLUSTER_FILE).processes if pid_alive(p.pid)
    ]
    assert leftovers == []


def test_the_command_refuses_what_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() would point structlog at this test's captured stderr, which pytest closes
    # afterwards: every later test's log line would then fail. Leave logging alone.
    monkeypatch.setattr("broker.cli.configure_logging", lambda *_a, **_k: None)
    assert main(["chaos", "--cluster-dir", str(tmp_path), "--faults", "kill,explode"]) == 2
    assert "unknown fault 'explode'; known: kill, pause, partition" in capsys.readouterr().err
    assert main(["chaos", "--cluster-dir", str(tmp_path), "--duration", "3"]) == 2
    assert "--duration must be at least 10 seconds" in capsys.readouterr().err
    assert main(["chaos", "--cluster-dir", str(tmp_path)]) == 2
    assert "is `minibroker cluster up --data-dir" in capsys.readouterr().err
    (tmp_path / CLUSTER_FILE).write_text(
        json.dumps(
            {"version": 1, "owner_pid": 1, "bootstrap": "127.0.0.1:1", "coordinators": "",
             "processes": [{"name": "broker-1", "role": "broker", "id": 1, "pid": 1,
                            "argv": ["x"], "ports": {}, "log": ""}]}
        )
    )  # fmt: skip
    assert main(["chaos", "--cluster-dir", str(tmp_path), "--faults", "kill,partition"]) == 2
    err = capsys.readouterr().err
    assert "the process target cannot inject partition" in err
    assert "partitions need the compose target" in err
