"""Real minibroker processes on 127.0.0.1 for integration tests.

Each process logs JSON lines on stderr; a thread drains them into memory so a test can
wait for an event by name (``broker_started``) instead of sleeping, and a failing test can
show what the processes said.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.lines: list[str] = []
        self._cond = threading.Condition()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        with self.popen.stderr, open(self.log_path, "ab") as out:
            for raw in self.popen.stderr:
                out.write(raw)
                out.flush()
                with self._cond:
                    self.lines.append(raw.decode(errors="replace"))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def events(self) -> list[dict[str, Any]]:
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_for_event(self, event: str, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            with self._cond:
                lines = self.lines[seen:]
                seen = len(self.lines)
            for line in lines:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("event") == event:
                    return obj  # type: ignore[no-any-return]
            if self.popen.poll() is not None and not lines:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name} never logged {event!r}:\n{self.tail()}")
            with self._cond:
                if len(self.lines) == seen:
                    self._cond.wait(remaining)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "".join(self.lines[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._thread.join(5)
        return self.popen.returncode


class LocalCluster:
    """One coordinator and N brokers, each a real process with its own port and dir."""

    def __init__(
        self, root: Path, brokers: int = 1, settings: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.settings = settings or {}
        self.coordinator_port = free_port()
        self.broker_ports = {i: free_port() for i in range(1, brokers + 1)}
        self.brokers: dict[int, Proc] = {}
        self.coordinator: Proc | None = None

    @property
    def coordinator_address(self) -> str:
        return f"127.0.0.1:{self.coordinator_port}"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.broker_ports.values())

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "broker.cli", *args]

    def start_coordinator(self) -> None:
        self.coordinator = Proc(
            "coordinator",
            self._cmd(
                "coordinator",
                "--id",
                "1",
                "--listen",
                self.coordinator_address,
                "--data-dir",
                str(self.root / "coordinator"),
            ),
            self.root / "coordinator.log",
        )
        wait_listening(self.coordinator_port, self.coordinator)

    def start_broker(self, broker_id: int) -> Proc:
        argv = self._cmd(
            "broker",
            "--id",
            str(broker_id),
            "--listen",
            f"127.0.0.1:{self.broker_ports[broker_id]}",
            "--coordinator",
            self.coordinator_address,
            "--data-dir",
            str(self.root / f"broker-{broker_id}"),
        )
        for k, v in self.settings.items():
            argv += ["--set", f"{k}={v}"]
        proc = Proc(f"broker-{broker_id}", argv, self.root / f"broker-{broker_id}.log")
        self.brokers[broker_id] = proc
        proc.wait_for_event("broker_started")
        return proc

    def start(self) -> LocalCluster:
        self.start_coordinator()
        for broker_id in self.broker_ports:
            self.start_broker(broker_id)
        return self

    def kill_broker(self, broker_id: int) -> None:
        self.brokers[broker_id].stop(signal.SIGKILL)

    def stop(self) -> None:
        for proc in self.brokers.values():
            proc.stop()
        if self.coordinator is not None:
            self.coordinator.stop()

    def logs(self) -> str:
        procs = [*self.brokers.values(), *([self.coordinator] if self.coordinator else [])]
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)


def wait_listening(port: int, proc: Proc, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until something accepts on ``port`` (process start-up, not a test timeout)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not listening on {port}:\n{proc.tail()}") from None
            # Back off between connection attempts while the process boots.
            threading.Event().wait(delay)
            delay = min(delay * 2, 0.5)
