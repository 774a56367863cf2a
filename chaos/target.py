"""What a fault target offers the nemesis, and the fault -> action mapping both share.

A target is a running cluster the tool can hurt: a process cluster from ``minibroker
cluster up`` (``chaos.process_target``) or the compose project of docker-compose.yml
(``chaos.compose_target``). Each says which fault kinds it supports and injects one as a
call that returns the call that heals it, so the runner can always heal in a ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chaos.errors import ChaosConfigError
from chaos.schedule import FaultKind

__all__ = ["Heal", "Target", "check_supported", "srvr_mode"]

Heal = Callable[[], None]


class Target(Protocol):
    name: str
    """``process`` or ``compose``."""
    supported: frozenset[FaultKind]

    def brokers(self) -> list[int]:
        """The broker ids faults may target."""
        ...

    def bootstrap(self) -> str:
        """bootstrap_servers for clients on this host."""
        ...

    def resolve(self, broker: int | None) -> str:
        """What a fault on ``broker`` hits: ``broker-2``; None (``coordinator-kill``) is
        the coordinator member that leads now, e.g. ``coordinator-1``."""
        ...

    def inject(self, kind: FaultKind, name: str) -> Heal:
        """Start the fault on ``name`` (from ``resolve``); returns the call that heals it."""
        ...

    def describe(self) -> str:
        """One line for the report: what cluster this is."""
        ...

    def close(self) -> None:
        """Release what the target holds (never heals or breaks anything)."""
        ...


def check_supported(target: Target, kinds: tuple[FaultKind, ...]) -> None:
    missing = [k for k in kinds if k not in target.supported]
    if missing:
        can = ", ".join(sorted(k.value for k in target.supported))
        raise ChaosConfigError(
            f"the {target.name} target cannot inject {', '.join(k.value for k in missing)}"
            f" (it can: {can})"
            + (
                "; partitions need the compose target (docker network disconnect)"
                if FaultKind.PARTITION in missing
                else ""
            )
        )


def srvr_mode(text: str) -> str | None:
    """The ``Mode:`` of a coordinator's ``srvr`` answer (leader, follower, standalone...)."""
    for line in text.splitlines():
        _, sep, mode = line.partition("Mode:")
        if sep:
            return mode.strip()
    return None
