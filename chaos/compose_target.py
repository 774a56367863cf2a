"""Faults on the compose project of docker-compose.yml, through the ``docker`` command.

Containers are found by compose's labels (``com.docker.compose.project`` / ``.service``),
which both docker-compose v1 and the ``docker compose`` plugin set, so nothing here needs
either of them. Faults:

- kill: ``docker kill`` (SIGKILL), then ``docker start`` after the hold. On this engine a
  ``docker kill`` counts as a manual stop and the restart policy does not bring the
  container back (docs/docker.md), which is what lets the hold decide the downtime.
- pause: ``docker pause`` / ``docker unpause`` (the cgroup freezer: SIGSTOP for a container).
- partition: ``docker network disconnect`` from every network, then ``docker network
  connect`` back with the aliases it had (its service name, so ``broker-2:9092`` resolves
  again). Cut off the network the container also loses its published port.
- restart: ``docker restart`` (SIGTERM, a controlled shutdown, then a start).
- coordinator-kill: the member whose ``srvr`` says leader, killed and started as above.

The argv builders are pure functions; ``ComposeTarget`` runs them through an injectable
``runner`` (tests pass a fake one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from chaos.errors import ChaosConfigError, FaultInjectionError
from chaos.schedule import FaultKind
from chaos.target import Heal, srvr_mode

__all__ = [
    "ComposeTarget",
    "Runner",
    "connect_argv",
    "disconnect_argv",
    "inspect_argv",
    "kill_argv",
    "list_argv",
    "pause_argv",
    "project_names",
    "restart_argv",
    "run_docker",
    "srvr_argv",
    "start_argv",
    "unpause_argv",
]

Runner = Callable[[Sequence[str]], str]
DOCKER_TIMEOUT_S = 120.0
RESTART_GRACE_S = 30  # the compose file's stop_grace_period for brokers


def run_docker(argv: Sequence[str]) -> str:
    """Run a docker command; its stdout, or FaultInjectionError with its stderr."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FaultInjectionError(f"`{' '.join(argv)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise FaultInjectionError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done.stdout


# --- pure argv builders ------------------------------------------------------------------


def list_argv(project: str) -> list[str]:
    return [
        "docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
        "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}',
    ]  # fmt: skip


def inspect_argv(container: str, template: str) -> list[str]:
    return ["docker", "inspect", "--format", template, container]


def kill_argv(container: str) -> list[str]:
    return ["docker", "kill", "--signal", "KILL", container]


def start_argv(container: str) -> list[str]:
    return ["docker", "start", container]


def pause_argv(container: str) -> list[str]:
    return ["docker", "pause", container]


def unpause_argv(container: str) -> list[str]:
    return ["docker", "unpause", container]


def restart_argv(container: str, grace_s: int = RESTART_GRACE_S) -> list[str]:
    return ["docker", "restart", "-t", str(grace_s), container]


def disconnect_argv(network: str, container: str) -> list[str]:
    return ["docker", "network", "disconnect", network, container]


def connect_argv(network: str, container: str, aliases: Sequence[str]) -> list[str]:
    argv = ["docker", "network", "connect"]
    for alias in aliases:
        argv += ["--alias", alias]
    return [*argv, network, container]


def srvr_argv(container: str) -> list[str]:
    return ["docker", "exec", container, "minibroker", "zk", "--server", "localhost:2181", "srvr"]


def project_names(compose_file: Path) -> list[str]:
    """Candidate project names, as compose derives them: COMPOSE_PROJECT_NAME, else the
    file's folder name normalized the v2 way (lowercase, ``[a-z0-9_-]``) or the v1 way
    (lowercase, ``[a-z0-9]``)."""
    if name := os.environ.get("COMPOSE_PROJECT_NAME"):
        return [name]
    folder = compose_file.resolve().parent.name.lower()
    out = [re.sub(r"[^a-z0-9_-]", "", folder), re.sub(r"[^a-z0-9]", "", folder)]
    return list(dict.fromkeys(n for n in out if n))


class ComposeTarget:
    name = "compose"
    supported = frozenset(FaultKind)

    def __init__(
        self,
        compose_file: Path = Path("docker-compose.yml"),
        project: str | None = None,
        runner: Runner = run_docker,
    ) -> None:
        self.run = runner
        candidates = [project] if project else project_names(compose_file)
        for name in candidates:
            self.containers = self._containers(name)
            if self.containers:
                self.project = name
                break
        else:
            raise ChaosConfigError(
                f"no containers of compose project {' or '.join(map(repr, candidates))}; "
                "start it with `docker compose up -d` (or pass --compose-project)"
            )
        if not self.brokers():
            raise ChaosConfigError(f"compose project {self.project!r} has no broker-N service")

    def _containers(self, project: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.run(list_argv(project)).splitlines():
            cid, _, service = line.strip().partition(" ")
            if cid and service:
                out[service] = cid
        return out

    def describe(self) -> str:
        return f"compose project {self.project} ({', '.join(sorted(self.containers))})"

    def brokers(self) -> list[int]:
        return sorted(
            int(s.removeprefix("broker-"))
            for s in self.containers
            if re.fullmatch(r"broker-\d+", s)
        )

    def bootstrap(self) -> str:
        """localhost:<published port> of each broker (the EXTERNAL listener)."""
        addresses = []
        for b in self.brokers():
            raw = self.run(
                inspect_argv(self.container(f"broker-{b}"), "{{json .HostConfig.PortBindings}}")
            )
            bindings = json.loads(raw or "null") or {}
            for _port, binds in sorted(bindings.items()):
                for bind in binds or ():
                    if bind.get("HostPort"):
                        addresses.append(f"localhost:{bind['HostPort']}")
                        break
        if not addresses:
            raise ChaosConfigError("no broker publishes a port; pass --bootstrap-servers")
        return ",".join(dict.fromkeys(addresses))

    def container(self, service: str) -> str:
        try:
            return self.containers[service]
        except KeyError:
            raise ChaosConfigError(f"compose project {self.project!r} has no {service}") from None

    def networks(self, container: str) -> dict[str, list[str]]:
        """network -> the aliases the container has there (minus its own short id)."""
        raw = self.run(inspect_argv(container, "{{json .NetworkSettings.Networks}}"))
        nets = json.loads(raw or "null") or {}
        return {
            name: [a for a in (cfg or {}).get("Aliases") or () if not container.startswith(a)]
            for name, cfg in nets.items()
        }

    def coordinator_leader(self) -> str:
        for service in sorted(self.containers):
            if not service.startswith("coordinator-"):
                continue
            try:
                mode = srvr_mode(self.run(srvr_argv(self.containers[service])))
            except FaultInjectionError:
                continue  # down or paused: not the leader we are looking for
            if mode in ("leader", "standalone"):
                return service
        raise FaultInjectionError("no coordinator container says it leads")

    def resolve(self, broker: int | None) -> str:
        return self.coordinator_leader() if broker is None else f"broker-{broker}"

    def inject(self, kind: FaultKind, name: str) -> Heal:
        cid = self.container(name)
        if kind in (FaultKind.KILL, FaultKind.COORDINATOR_KILL):
            self.run(kill_argv(cid))
            return lambda: self._do(start_argv(cid))
        if kind is FaultKind.PAUSE:
            self.run(pause_argv(cid))
            return lambda: self._do(unpause_argv(cid))
        if kind is FaultKind.PARTITION:
            networks = self.networks(cid)
            for network in networks:
                self.run(disconnect_argv(network, cid))
            return lambda: self._reconnect(cid, networks)
        self.run(restart_argv(cid))
        return lambda: None

    def _do(self, argv: Sequence[str]) -> None:
        self.run(argv)

    def _reconnect(self, cid: str, networks: dict[str, list[str]]) -> None:
        for network, aliases in networks.items():
            self.run(connect_argv(network, cid, aliases))

    def close(self) -> None:
        """Nothing held: every container is left as the last heal made it."""
