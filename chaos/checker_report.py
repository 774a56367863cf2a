"""The report of the queue checker: anomaly kinds, their examples, counts and rendering.

Split from ``chaos.history`` (the history model) and ``chaos.checker`` (the search); pure
values only, so ``minibroker chaos`` and the tests render the same report.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

TP = tuple[str, int]


class AnomalyKind(enum.StrEnum):
    """REFERENCE.md section 8, in Jepsen's words where Jepsen has one."""

    LOST_WRITE = "lost-write"
    """Acknowledged, never read, and some read reached a higher offset of its partition."""
    DUPLICATE = "duplicate"
    """One value read at two or more offsets."""
    INCONSISTENT_OFFSET = "inconsistent-offsets"
    """Two values at one offset, by reads of any client or by acknowledgements."""
    NONMONOTONIC_POLL = "nonmonotonic-poll"
    """A consumer's next offset of a partition is not after its last one, with no seek."""
    SKIPPED_OFFSETS = "poll-skip"
    """A consumer's next offset jumps over offsets known to exist, with no seek."""
    UNSEEN = "unseen"
    """Acknowledged, never read, and no read went past its offset."""
    ABORTED_READ = "aborted-read"
    """G1a: a value whose send definitely failed was read."""
    OFFSET_MISMATCH = "offset-mismatch"
    """Acknowledged at one offset, read only at others."""
    GROUP_SKIP = "group-skip"
    """Records below where a consumer group got to (an acknowledged commit or a member's
    poll) that no member of the group ever polled: skipped between a commit and the next
    owner's first poll."""


def _at(topic: str, partition: int, offset: int) -> str:
    return f"{topic}-{partition}@{offset}"


@dataclass(frozen=True, slots=True)
class LostWrite:
    kind: ClassVar[AnomalyKind] = AnomalyKind.LOST_WRITE
    value: Hashable
    topic: str
    partition: int
    offset: int
    highest_read_offset: int

    def __str__(self) -> str:
        return (
            f"value {self.value!r} acknowledged at {_at(self.topic, self.partition, self.offset)}"
            f", never read; reads reached offset {self.highest_read_offset}"
        )


@dataclass(frozen=True, slots=True)
class Unseen:
    kind: ClassVar[AnomalyKind] = AnomalyKind.UNSEEN
    value: Hashable
    topic: str
    partition: int
    offset: int
    highest_read_offset: int | None

    def __str__(self) -> str:
        reached = "nothing" if self.highest_read_offset is None else self.highest_read_offset
        return (
            f"value {self.value!r} acknowledged at {_at(self.topic, self.partition, self.offset)}"
            f", never read; reads of that partition reached {reached}"
        )


@dataclass(frozen=True, slots=True)
class Duplicate:
    kind: ClassVar[AnomalyKind] = AnomalyKind.DUPLICATE
    value: Hashable
    read_at: tuple[tuple[str, int, int], ...]

    def __str__(self) -> str:
        return f"value {self.value!r} read at {', '.join(_at(*w) for w in self.read_at)}"


@dataclass(frozen=True, slots=True)
class InconsistentOffset:
    kind: ClassVar[AnomalyKind] = AnomalyKind.INCONSISTENT_OFFSET
    topic: str
    partition: int
    offset: int
    values: tuple[tuple[Hashable, tuple[str, ...]], ...]
    """Each value seen there, with who saw it: ``"ack p1"``, ``"poll p3"``, ``"final p0"``."""

    def __str__(self) -> str:
        seen = "; ".join(f"{v!r} ({', '.join(who)})" for v, who in self.values)
        return f"{_at(self.topic, self.partition, self.offset)} holds {seen}"


@dataclass(frozen=True, slots=True)
class NonmonotonicPoll:
    kind: ClassVar[AnomalyKind] = AnomalyKind.NONMONOTONIC_POLL
    process: int
    topic: str
    partition: int
    previous_offset: int
    offset: int
    at: float
    """When the poll (or final read) that went backwards was invoked."""

    def __str__(self) -> str:
        return (
            f"p{self.process} read {_at(self.topic, self.partition, self.offset)} after offset "
            f"{self.previous_offset} (at {self.at})"
        )


@dataclass(frozen=True, slots=True)
class SkippedOffsets:
    kind: ClassVar[AnomalyKind] = AnomalyKind.SKIPPED_OFFSETS
    process: int
    topic: str
    partition: int
    previous_offset: int
    offset: int
    skipped: tuple[int, ...]
    """The first ten existing offsets jumped over."""
    skipped_count: int
    at: float

    def __str__(self) -> str:
        shown = ", ".join(map(str, self.skipped))
        more = f" ({self.skipped_count} in all)" if self.skipped_count > len(self.skipped) else ""
        return (
            f"p{self.process} read {_at(self.topic, self.partition, self.offset)} after offset "
            f"{self.previous_offset}, skipping {shown}{more} (at {self.at})"
        )


@dataclass(frozen=True, slots=True)
class AbortedRead:
    kind: ClassVar[AnomalyKind] = AnomalyKind.ABORTED_READ
    value: Hashable
    topic: str
    partition: int
    offset: int
    read_by: tuple[str, ...]

    def __str__(self) -> str:
        where = _at(self.topic, self.partition, self.offset)
        return f"value {self.value!r} of a failed send read at {where} by {', '.join(self.read_by)}"


@dataclass(frozen=True, slots=True)
class OffsetMismatch:
    kind: ClassVar[AnomalyKind] = AnomalyKind.OFFSET_MISMATCH
    value: Hashable
    acked_at: tuple[str, int, int]
    read_at: tuple[tuple[str, int, int], ...]

    def __str__(self) -> str:
        read = ", ".join(_at(*w) for w in self.read_at)
        return f"value {self.value!r} acknowledged at {_at(*self.acked_at)} but read at {read}"


@dataclass(frozen=True, slots=True)
class GroupSkip:
    kind: ClassVar[AnomalyKind] = AnomalyKind.GROUP_SKIP
    group: str
    topic: str
    partition: int
    first: int
    last: int
    """The skipped run: existing offsets ``first..last`` (inclusive), none polled by the group."""
    count: int
    """How many records exist in the run (offsets the check knows of)."""
    reached: int
    """Where the group got to in that partition (highest commit or polled offset + 1)."""

    def __str__(self) -> str:
        where = _at(self.topic, self.partition, self.first)
        return (
            f"group {self.group!r} never polled {where}..{self.last} ({self.count} records) "
            f"though it reached offset {self.reached}"
        )


Anomaly = (
    LostWrite
    | Unseen
    | Duplicate
    | InconsistentOffset
    | NonmonotonicPoll
    | SkippedOffsets
    | AbortedRead
    | OffsetMismatch
    | GroupSkip
)


@dataclass(frozen=True, slots=True)
class WorkloadError:
    """The history breaks an assumption of the check, so its verdict cannot be trusted."""

    problem: str
    """``"value sent twice"`` or ``"value never sent"`` (a leftover record, a lost record)."""
    value: Hashable

    def __str__(self) -> str:
        return f"{self.problem}: {self.value!r}"


@dataclass(frozen=True, slots=True)
class QueueStats:
    sends: int
    acked: int
    failed: int
    unknown: int
    unknown_read: int
    """Sends with an unknown outcome whose value was read: they did take effect."""
    polls: int
    records_polled: int
    final_reads: int
    records_final: int
    partitions: int
    commits: int = 0
    """Acknowledged consumer-group commits."""


MAX_EXAMPLES = 10


def _jsonable(x: object) -> Any:
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, bytes):
        try:
            return x.decode()
        except UnicodeDecodeError:
            return x.hex()
    if isinstance(x, tuple | list | frozenset | set):
        return [_jsonable(i) for i in x]
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return repr(x)


def _as_dict(obj: Anomaly | WorkloadError | QueueStats) -> dict[str, Any]:
    out: dict[str, Any] = {name: _jsonable(getattr(obj, name)) for name in obj.__slots__}
    if not isinstance(obj, WorkloadError | QueueStats):
        out = {"kind": str(obj.kind), **out, "text": str(obj)}
    return out


@dataclass(frozen=True, slots=True)
class QueueReport:
    counts: Mapping[AnomalyKind, int]
    """Every kind, zero included."""
    examples: Mapping[AnomalyKind, tuple[Anomaly, ...]]
    """Up to ``MAX_EXAMPLES`` per kind, in history order."""
    workload_error_count: int
    workload_errors: tuple[WorkloadError, ...]
    stats: QueueStats

    @classmethod
    def build(
        cls,
        anomalies: Mapping[AnomalyKind, Sequence[Anomaly]],
        workload: Sequence[WorkloadError],
        stats: QueueStats,
    ) -> QueueReport:
        return cls(
            counts={kind: len(anomalies.get(kind, ())) for kind in AnomalyKind},
            examples={kind: tuple(anomalies.get(kind, ())[:MAX_EXAMPLES]) for kind in AnomalyKind},
            workload_error_count=len(workload),
            workload_errors=tuple(workload[:MAX_EXAMPLES]),
            stats=stats,
        )

    @property
    def ok(self) -> bool:
        """No anomaly and no workload error."""
        return not self.kinds and not self.workload_error_count

    @property
    def kinds(self) -> frozenset[AnomalyKind]:
        """The anomaly kinds found."""
        return frozenset(kind for kind, n in self.counts.items() if n)

    def summary(self, examples_per_kind: int = 3) -> str:
        s = self.stats
        lines = [
            f"queue check: {'OK' if self.ok else 'NOT OK'}",
            f"sends {s.sends} (acked {s.acked}, failed {s.failed}, unknown {s.unknown}, "
            f"{s.unknown_read} of them read); polls {s.polls} ({s.records_polled} records); "
            f"final reads {s.final_reads} ({s.records_final} records); "
            f"commits {s.commits}; partitions {s.partitions}",
        ]
        for kind in AnomalyKind:
            lines.append(f"  {kind:<22}{self.counts[kind]:>6}")
            lines.extend(f"      {a}" for a in self.examples[kind][:examples_per_kind])
        lines.append(f"  {'workload errors':<22}{self.workload_error_count:>6}")
        lines.extend(f"      {e}" for e in self.workload_errors[:examples_per_kind])
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (values: bytes as text or hex, other objects as repr)."""
        out = {
            "ok": self.ok,
            "stats": _as_dict(self.stats),
            "anomalies": {
                str(kind): {
                    "count": self.counts[kind],
                    "examples": [_as_dict(a) for a in self.examples[kind]],
                }
                for kind in AnomalyKind
            },
            "workload_errors": {
                "count": self.workload_error_count,
                "examples": [_as_dict(e) for e in self.workload_errors],
            },
        }
        json.dumps(out)  # fails here, not in the caller's log writer
        return out
