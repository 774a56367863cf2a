"""``minibroker chaos --start-cluster``: a process cluster of its own for the run.

Runs ``minibroker cluster up`` (3 coordinators, 3 brokers, free ports, short broker
sessions so a dead broker is noticed in seconds) in the background with ``--cluster-dir``
as its data dir, waits for its ``cluster.json``, and stops it with SIGTERM afterwards:
``cluster up`` then stops its processes, the ones the run restarted included.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.cluster_file import CLUSTER_FILE
from chaos.errors import ChaosRunError

__all__ = ["CHAOS_BROKER_SETTINGS", "free_port_range", "started_cluster"]

# Failure detection in seconds: a broker session of 4 s (the coordinator's default tick of
# 2 s makes that the shortest it grants) and a follower out of the ISR after 5 s.
CHAOS_BROKER_SETTINGS = ("zookeeper.session.timeout.ms=4000", "replica.lag.time.max.ms=5000")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 120.0


def free_port_range(n: int) -> int:
    """The first of ``n`` consecutive ports free now, below the usual ephemeral range (a
    process restarted on its port must not find it taken by a client's source port)."""
    for _ in range(200):
        base = random.randrange(10_000, 30_000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise ChaosRunError(f"no {n} consecutive free ports found")


@contextmanager
def started_cluster(data_dir: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / CLUSTER_FILE).unlink(missing_ok=True)  # a stale one would mislead the run
    argv = [
        sys.executable, "-m", "broker.cli", "cluster", "up", "--data-dir", str(data_dir),
        "--brokers", "3", "--coordinators", "3",
        "--broker-port", str(free_port_range(3)),
        "--coordinator-port", str(free_port_range(3)),
        "--peer-port", str(free_port_range(3)),
    ]  # fmt: skip
    for setting in CHAOS_BROKER_SETTINGS:
        argv += ["--set", setting]
    with open(log_path, "ab") as log:
        # A session of its own: Ctrl-C reaches this tool, which heals and then stops the
        # cluster, instead of the cluster dying under a fault in progress.
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (data_dir / CLUSTER_FILE).exists():  # written once everything listens
            if proc.poll() is not None:
                raise ChaosRunError(f"`cluster up` exited ({proc.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise ChaosRunError(f"`cluster up` not ready in {START_TIMEOUT_S} s")
            time.sleep(0.2)  # another process's start-up: polled
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
