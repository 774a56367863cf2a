"""One chaos run's outcome: everything the report shows, and ``history.json`` both ways.

The verdict: ``valid`` (the check found no anomaly and no workload error), ``invalid``
(it found some), or ``unknown`` (the run could not reach a check: no final read). The CLI
exits 0, 1 and 2 for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.analysis import Bucket, Failover, InjectedFault, failovers, timeline
from chaos.checker import QueueReport, check
from chaos.history import Event
from chaos.history_json import events_from_json, events_to_json
from chaos.schedule import PlannedFault

__all__ = ["EXIT_CODES", "ChaosResult", "load_history"]

EXIT_CODES = {"valid": 0, "invalid": 1, "unknown": 2}
FORMAT = "minibroker-chaos-history/1"


@dataclass
class ChaosResult:
    options: Mapping[str, Any]
    """``ChaosOptions.to_json()`` of the run."""
    target: str
    """The target's own description (which cluster)."""
    started_wall: float
    """time.time() at the start; every other time is in seconds from it."""
    ended_at: float
    planned: Sequence[PlannedFault]
    faults: Sequence[InjectedFault]
    events: Sequence[Event]
    report: QueueReport | None
    """None when the run ended before the check."""
    workers: Mapping[str, Any] = field(default_factory=dict)
    """Per producer and group member: counts and the first errors they saw."""
    notes: list[str] = field(default_factory=list)
    """What the reader should know that is not an anomaly (a slow recovery, lag left)."""
    error: str | None = None
    """Why there is no report."""

    @property
    def verdict(self) -> str:
        if self.report is None:
            return "unknown"
        return "valid" if self.report.ok else "invalid"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def failovers(self) -> list[Failover]:
        return failovers(self.faults, self.events)

    def timeline(self) -> list[Bucket]:
        return timeline(self.events, self.ended_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "verdict": self.verdict,
            "options": dict(self.options),
            "target": self.target,
            "started_wall": self.started_wall,
            "ended_at": self.ended_at,
            "planned": [p.to_json() for p in self.planned],
            "faults": [f.to_json() for f in self.faults],
            "failovers": [
                {
                    "fault": f.fault,
                    "partition": f.partition,
                    "leader": f.leader,
                    "seconds": f.seconds,
                    "longest_gap_s": f.longest_gap_s,
                }
                for f in self.failovers()
            ],
            "result": None if self.report is None else self.report.to_dict(),
            "workers": dict(self.workers),
            "notes": list(self.notes),
            "error": self.error,
            "history": events_to_json(self.events),
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()) + "\n")


def load_history(path: Path) -> tuple[dict[str, Any], list[Event]]:
    """``history.json`` -> (the document, its events as checker events), e.g. to check
    again: ``check(load_history(p)[1])`` reports what the run reported."""
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a chaos history ({doc.get('format')!r})")
    return doc, events_from_json(doc["history"])


def recheck(path: Path) -> QueueReport:
    return check(load_history(path)[1])
