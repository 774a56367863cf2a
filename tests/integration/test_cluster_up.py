"""`minibroker cluster up` (what `make run` runs): start, serve, survive a death, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from tests.integration.cluster import free_port


def _processes_using(path: Path) -> list[int]:
    """Pids whose command line mentions ``path`` (the cluster's data dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(path).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _pid_of(path: Path, marker: str) -> int:
    for pid in _processes_using(path):
        if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "):
            return pid
    raise AssertionError(f"no process {marker!r}")


def test_cluster_up_with_a_coordinator_ensemble(tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker_port, coord_port, peer_port = free_port(), free_port(), free_port()
    # Consecutive ports from each base: pick bases far apart to avoid the usual clashes.
    argv = [
        sys.executable, "-m", "broker.cli", "cluster", "up", "--brokers", "2",
        "--coordinators", "3", "--data-dir", str(data), "--broker-port", str(broker_port),
        "--coordinator-port", str(coord_port), "--peer-port", str(peer_port),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        bootstrap = next(x for x in lines if x.startswith("bootstrap servers:")).split()[-1]
        assert bootstrap == f"127.0.0.1:{broker_port},127.0.0.1:{broker_port + 1}"
        with Admin(bootstrap_servers=bootstrap) as admin:
            admin.create_topics([NewTopic("up", 2, 1)])
        with Producer(bootstrap_servers=bootstrap) as producer:
            offsets = [
                producer.send("up", b"v", partition=1).get(timeout=30).offset for _ in range(3)
            ]
        assert offsets == [0, 1, 2]
        consumer = Consumer(bootstrap_servers=bootstrap)
        consumer.assign([TopicPartition("up", 1)])
        consumer.seek_to_beginning()
        got = consumer.poll(timeout_ms=5000)
        consumer.close()
        assert [r.value for r in got[TopicPartition("up", 1)]] == [b"v", b"v", b"v"]
        assert len(_processes_using(data)) == 5 + 1  # 3 coordinators, 2 brokers, cluster up

        # Any one coordinator may die: the brokers' sessions move to another member.
        coordinator_1 = _pid_of(data, "coordinator --id 1 ")
        os.kill(coordinator_1, signal.SIGKILL)
        with Admin(bootstrap_servers=bootstrap) as admin:
            admin.create_topics([NewTopic("after", 1, 1)])
            assert sorted(admin.list_topics()) == ["after", "up"]
        with Producer(bootstrap_servers=bootstrap) as producer:
            assert producer.send("after", b"w").get(timeout=30).offset == 0
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert _processes_using(data) == []  # every child stopped with it
    # Every process stopped cleanly: the brokers left their clean-shutdown markers.
    assert (data / "broker-1" / ".clean_shutdown").exists()
    assert (data / "broker-2" / ".clean_shutdown").exists()
