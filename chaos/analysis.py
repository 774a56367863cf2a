"""Numbers the report shows, computed from the history and the faults. Pure.

- ``InjectedFault``: one fault as it ran (times in seconds from the start of the run).
- ``failovers``: for a fault on a broker that led partitions, the time from the fault to
  the next acknowledged write of each of those partitions (Kafka's unavailability after a
  leader fault, as a producer sees it).
- ``timeline``: per second, acknowledgements, failures and latency percentiles of the
  sends acknowledged in that second.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.history import FAILED, UNKNOWN, Acked, Event, Send

__all__ = ["Bucket", "Failover", "InjectedFault", "failovers", "percentile", "timeline"]


@dataclass(slots=True)
class InjectedFault:
    index: int
    kind: str
    broker: int | None
    target: str
    """What was hit: ``broker-2``, ``coordinator-1``."""
    started_at: float
    healed_at: float | None = None
    recovered_at: float | None = None
    """When every ISR was full again (None: not within the recovery timeout)."""
    leaders: Mapping[int, int] = field(default_factory=dict)
    """partition -> leader just before the fault."""
    error: str | None = None

    @property
    def led(self) -> list[int]:
        """The partitions the target broker led when it was hit."""
        return sorted(p for p, b in self.leaders.items() if b == self.broker)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["leaders"] = {str(p): b for p, b in self.leaders.items()}
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> InjectedFault:
        fields = dict(obj)
        fields["leaders"] = {int(p): int(b) for p, b in obj.get("leaders", {}).items()}
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Failover:
    fault: int
    partition: int
    leader: int
    seconds: float | None
    """From the fault to the next acknowledged write of the partition (None: none came)."""
    longest_gap_s: float | None = None
    """The longest time without an acknowledged write of the partition from the fault
    until the first one after the cluster recovered: the unavailability even when an
    acknowledgement still slipped through just after the fault (a clean restart)."""


def _ack_times(events: Iterable[Event]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for e in events:
        if isinstance(e, Send) and isinstance(e.outcome, Acked) and e.completed_at is not None:
            out.setdefault(e.outcome.partition, []).append(e.completed_at)
    for times in out.values():
        times.sort()
    return out


def failovers(faults: Sequence[InjectedFault], events: Sequence[Event]) -> list[Failover]:
    acks = _ack_times(events)
    out: list[Failover] = []
    for fault in faults:
        if fault.broker is None or fault.error is not None:
            continue
        settled = max(t for t in (fault.started_at, fault.healed_at, fault.recovered_at) if t)
        for partition in fault.led:
            times = acks.get(partition, [])
            i = bisect.bisect_right(times, fault.started_at)
            j = bisect.bisect_right(times, settled)
            if i >= len(times) or j >= len(times):
                took = times[i] - fault.started_at if i < len(times) else None
                out.append(Failover(fault.index, partition, fault.broker, took))
                continue
            points = [fault.started_at, *times[i : j + 1]]
            gap = max(b - a for a, b in itertools.pairwise(points))
            took = times[i] - fault.started_at
            out.append(Failover(fault.index, partition, fault.broker, took, gap))
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    acked: int
    failed: int
    unknown: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def timeline(events: Sequence[Event], end: float, bucket_s: float = 1.0) -> list[Bucket]:
    """Buckets from 0 to ``end``: sends by the time they completed (unknown ones, which
    have no completion, by the time they were invoked)."""
    n = max(math.ceil(end / bucket_s), 1)
    latencies: list[list[float]] = [[] for _ in range(n)]
    failed = [0] * n
    unknown = [0] * n
    for e in events:
        if not isinstance(e, Send):
            continue
        at = e.completed_at if e.completed_at is not None else e.invoked_at
        i = min(max(int(at // bucket_s), 0), n - 1)
        if isinstance(e.outcome, Acked) and e.completed_at is not None:
            latencies[i].append((e.completed_at - e.invoked_at) * 1000)
        elif e.outcome is FAILED:
            failed[i] += 1
        elif e.outcome is UNKNOWN:
            unknown[i] += 1
    out = []
    for i, lat in enumerate(latencies):
        lat.sort()
        out.append(
            Bucket(
                round(i * bucket_s, 3),
                len(lat),
                failed[i],
                unknown[i],
                percentile(lat, 50) if lat else None,
                percentile(lat, 99) if lat else None,
                lat[-1] if lat else None,
            )
        )
    return out
