"""The seeded fault schedule (Jepsen's nemesis plan). Pure: the same seed, window, kinds
and brokers always give the same faults, targets, holds and start times.

Faults run one at a time: each is healed before the next starts, and the next also waits
until the cluster recovered (every partition's ISR full again), so a planned start is the
earliest one; a slow recovery pushes the rest later, and the runner drops the faults that
no longer fit in the window. A third of the holds are shorter than a broker session (2 s
or less: the fault should pass without a failover), the rest long enough to force one.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from chaos.errors import ChaosConfigError

__all__ = ["FaultKind", "PlannedFault", "parse_faults", "plan"]


class FaultKind(enum.StrEnum):
    KILL = "kill"
    """SIGKILL a broker (process) / ``docker kill`` its container; start it after the hold."""
    PAUSE = "pause"
    """SIGSTOP / ``docker pause`` a broker; SIGCONT / ``docker unpause`` after the hold."""
    PARTITION = "partition"
    """Cut a broker off the network (``docker network disconnect``); reconnect after."""
    RESTART = "restart"
    """A clean restart: SIGTERM (controlled shutdown) / ``docker restart``, started at once."""
    COORDINATOR_KILL = "coordinator-kill"
    """SIGKILL the coordinator ensemble's leader; start it after the hold."""


def parse_faults(text: str) -> tuple[FaultKind, ...]:
    """``kill,pause,...`` -> kinds in the given order, without repeats; unknown names fail."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = ", ".join(k.value for k in FaultKind)
    if not names:
        raise ChaosConfigError(f"--faults names no fault; known: {known}")
    out: list[FaultKind] = []
    for name in names:
        try:
            kind = FaultKind(name)
        except ValueError:
            raise ChaosConfigError(f"unknown fault {name!r}; known: {known}") from None
        if kind not in out:
            out.append(kind)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PlannedFault:
    index: int
    start_s: float
    """Earliest start, in seconds from the start of the run."""
    kind: FaultKind
    broker: int | None
    """The target broker; None for ``coordinator-kill`` (the leader is found when it runs)."""
    hold_s: float
    """How long it lasts before it is healed (0 for ``restart``)."""

    def describe(self) -> str:
        target = "coordinator leader" if self.broker is None else f"broker {self.broker}"
        hold = "" if self.kind is FaultKind.RESTART else f" for {self.hold_s:.1f}s"
        return f"#{self.index} at {self.start_s:.1f}s: {self.kind} {target}{hold}"

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "start_s": self.start_s,
            "kind": str(self.kind),
            "broker": self.broker,
            "hold_s": self.hold_s,
        }


SHORT_HOLD_S = (0.5, 2.0)
LONG_HOLD_S = (4.0, 10.0)
GAP_S = (2.0, 6.0)
TYPICAL_RECOVERY_S = 5.0


def plan(
    seed: int,
    window_s: float,
    kinds: Sequence[FaultKind],
    brokers: Sequence[int],
    *,
    first_s: float = 5.0,
) -> tuple[PlannedFault, ...]:
    """Faults from ``first_s`` until ``window_s`` (the end of the fault phase; the quiet
    phase follows it), each at least a gap plus a typical recovery after the last one."""
    if not kinds:
        raise ChaosConfigError("no fault kinds to plan")
    if not brokers:
        raise ChaosConfigError("no brokers to target")
    rng = random.Random(seed)
    targets = sorted(brokers)
    out: list[PlannedFault] = []
    at = first_s
    while True:
        kind = rng.choice(list(kinds))
        broker = None if kind is FaultKind.COORDINATOR_KILL else rng.choice(targets)
        short = rng.random() < 1 / 3
        hold = rng.uniform(*(SHORT_HOLD_S if short else LONG_HOLD_S))
        if kind is FaultKind.RESTART:
            hold = 0.0
        if at + hold > window_s:
            return tuple(out)
        out.append(PlannedFault(len(out), round(at, 3), kind, broker, round(hold, 3)))
        at += hold + TYPICAL_RECOVERY_S + rng.uniform(*GAP_S)
