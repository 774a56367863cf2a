"""The compose cluster on the real Docker engine, for tests/docker.

Docker is required, not optional: without an engine (or without compose) these tests fail
with a message saying what is missing, so CI never passes by skipping them. The image is
built once per session with ``make image`` (offline: a Debian base from debootstrap, cached
between runs on one machine, and wheels built on this host). Each module gets its own
compose project (own name, free host ports) and a finalizer that removes its containers,
network and volumes, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
IMAGE = "minibroker:latest"
BROKERS = (1, 2, 3)
SERVICES = (
    *(f"coordinator-{i}" for i in (1, 2, 3)),
    *(f"broker-{i}" for i in BROKERS),
)
IMAGE_BUILD_TIMEOUT_S = 1200  # a fresh machine: debootstrap, wheels, docker build
HEALTHY_TIMEOUT_S = 240


def run(
    argv: list[str], *, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
    )


def _compose_command() -> list[str]:
    """``docker compose`` (the plugin) where it exists, else ``docker-compose``."""
    if shutil.which("docker") is None:
        pytest.fail("tests/docker need the Docker engine: no `docker` command on PATH")
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=60)
    if info.returncode != 0:
        pytest.fail(
            f"tests/docker need a running Docker engine; `docker info` says:\n{info.stderr}"
        )
    if run(["docker", "compose", "version"], timeout=60).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    pytest.fail("tests/docker need compose: neither `docker compose` nor `docker-compose` runs")


@pytest.fixture(scope="session")
def compose_command() -> list[str]:
    return _compose_command()


@pytest.fixture(scope="session")
def image(compose_command: list[str]) -> str:
    """minibroker:latest, built offline by ``make image`` (the base image is cached)."""
    started = time.monotonic()
    built = run(["make", "image", f"PYTHON={sys.executable}"], timeout=IMAGE_BUILD_TIMEOUT_S)
    if built.returncode != 0:
        pytest.fail(f"`make image` failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}")
    print(f"make image: {time.monotonic() - started:.0f} s\n{built.stdout}")
    return IMAGE


@dataclass
class ComposeStack:
    """One compose project of docker-compose.yml with its own name and host ports."""

    command: list[str]
    project: str
    ports: dict[int, int]
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = dict(os.environ)
        self.env.pop("COMPOSE_PROJECT_NAME", None)
        for b, port in self.ports.items():
            self.env[f"MINIBROKER_PORT_{b}"] = str(port)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"localhost:{p}" for p in self.ports.values())

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        return run(argv, timeout=timeout, env=self.env)

    def check(self, *args: str, timeout: float = 300) -> str:
        done = self.compose(*args, timeout=timeout)
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stderr}\n{done.stdout}"
        return done.stdout

    def container(self, service: str) -> str:
        cid = self.check("ps", "-q", service).strip()
        assert cid, f"no container for {service}"
        return cid

    def state(self, service: str) -> dict[str, object]:
        out = run(["docker", "inspect", "--format", "{{json .State}}", self.container(service)])
        assert out.returncode == 0, out.stderr
        state: dict[str, object] = json.loads(out.stdout)
        return state

    def restart_count(self, service: str) -> int:
        out = run(["docker", "inspect", "--format", "{{.RestartCount}}", self.container(service)])
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    def health(self, service: str) -> str:
        health = self.state(service).get("Health")
        return str(health["Status"]) if isinstance(health, dict) else "none"

    def wait_healthy(self, services: tuple[str, ...], timeout: float = HEALTHY_TIMEOUT_S) -> float:
        """Poll docker's health status (its own checks run every few seconds) until every
        service is healthy; the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            status = {s: self.health(s) for s in services}
            if all(v == "healthy" for v in status.values()):
                return time.monotonic() - started
            if time.monotonic() > deadline:
                pytest.fail(f"not healthy after {timeout} s: {status}\n{self.logs()}")
            time.sleep(1)

    def logs(self, tail: int = 30) -> str:
        done = self.compose("logs", "--no-color", f"--tail={tail}", timeout=60)
        return done.stdout[-20_000:]

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "10", timeout=300)


@pytest.fixture(scope="module")
def stack(compose_command: list[str], image: str) -> Iterator[ComposeStack]:
    """The cluster up and healthy; torn down (volumes included) even when a test fails."""
    s = ComposeStack(
        compose_command, f"minibroker-test-{os.getpid()}", {b: free_port() for b in BROKERS}
    )
    try:
        s.check("up", "-d", "--no-build", timeout=600)
        took = s.wait_healthy(SERVICES)
        print(f"compose cluster healthy {took:.0f} s after `up -d` returned")
        yield s
    finally:
        s.down()
