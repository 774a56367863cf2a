"""``minibroker coordinator`` as a real process: starts, answers ruok, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import argparse, sys
from coordinator.cli import register_cli
parser = argparse.ArgumentParser(prog="minibroker")
register_cli(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", SCRIPT, "coordinator", "--id", "3", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(tmp_path / "zk")],
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # JSON: stderr is a pipe, not a tty
        started = json.loads(line)
        assert started["event"] == "coordinator_started" and started["coordinator_id"] == 3
        with socket.create_connection(("127.0.0.1", started["port"]), timeout=10) as s:
            s.sendall(b"ruok")
            assert s.recv(16) == b"imok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
