"""Planning of ``minibroker groups reset-offsets``: from what the cluster says about each
partition and the scenario the operator chose, the offset each partition is reset to.

Pure: no I/O and no clock (the caller passes "now" for ``--by-duration``), so every rule
is unit-tested. Kafka's ConsumerGroupCommand rules:

- ``--to-earliest`` / ``--to-latest``: the log start / log end offset.
- ``--to-current``: the committed offset; a partition with none gets the log end.
- ``--to-datetime`` / ``--by-duration``: the first offset whose timestamp is at or after
  the time (ListOffsets by timestamp); no such record: the log end.
- ``--shift-by N``: committed + N; a partition with no committed offset is an error.
- ``--to-offset N``: N.

Every result is clamped into [log start, log end], as Kafka's ``checkOffsetsRange`` does for
``--shift-by`` and ``--to-offset``. Kafka leaves a ``--to-current`` offset that retention
has overtaken as it is; here it is clamped too, so a reset never commits a position the
consumer would immediately have to reset again (the plan's ``clamped`` says so).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo

from client.types import TopicPartition
from proto.errors import MinibrokerError

__all__ = [
    "Clamped",
    "InvalidOffsetResetError",
    "PartitionOffsets",
    "ResetPlan",
    "ResetScenario",
    "ResetSpec",
    "parse_datetime_ms",
    "parse_duration_ms",
    "plan_reset",
]


class InvalidOffsetResetError(MinibrokerError, ValueError):
    """A reset that cannot be planned: a malformed time or duration, or ``--shift-by`` of
    a partition the group has no committed offset for."""


class ResetScenario(enum.Enum):
    """The reset scenarios, named as Kafka's ``--reset-offsets`` options."""

    TO_EARLIEST = "to-earliest"
    TO_LATEST = "to-latest"
    TO_CURRENT = "to-current"
    TO_DATETIME = "to-datetime"
    BY_DURATION = "by-duration"
    SHIFT_BY = "shift-by"
    TO_OFFSET = "to-offset"


_BY_TIME = (ResetScenario.TO_DATETIME, ResetScenario.BY_DURATION)


@dataclass(frozen=True, slots=True)
class ResetSpec:
    """A scenario and its number: the offset (TO_OFFSET), the shift (SHIFT_BY), or the
    timestamp in ms since the epoch (TO_DATETIME and BY_DURATION, already resolved)."""

    scenario: ResetScenario
    value: int = 0

    @property
    def needs_timestamp_lookup(self) -> bool:
        """Whether the caller must list offsets by ``value`` as a timestamp."""
        return self.scenario in _BY_TIME

    @classmethod
    def to_datetime(cls, text: str, *, default_tz: tzinfo | None = None) -> ResetSpec:
        return cls(ResetScenario.TO_DATETIME, parse_datetime_ms(text, default_tz=default_tz))

    @classmethod
    def by_duration(cls, text: str, *, now_ms: int) -> ResetSpec:
        return cls(ResetScenario.BY_DURATION, now_ms - parse_duration_ms(text))


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """What the cluster says about one partition. ``earliest`` <= ``latest`` are the log
    start and log end offsets; ``committed`` the group's committed offset (None: none);
    ``for_time`` the first offset at or after the spec's timestamp (None: no such record,
    or not looked up)."""

    earliest: int
    latest: int
    committed: int | None = None
    for_time: int | None = None


@dataclass(frozen=True, slots=True)
class Clamped:
    """A requested offset outside [log start, log end], and the bound used instead."""

    topic_partition: TopicPartition
    requested: int
    applied: int

    def warning(self) -> str:
        """Kafka's warning text for it."""
        tp = f"{self.topic_partition.topic}-{self.topic_partition.partition}"
        side = "higher than latest" if self.requested > self.applied else "lower than earliest"
        return (
            f"New offset ({self.requested}) is {side} offset for topic partition {tp}. "
            f"Value will be set to {self.applied}"
        )


@dataclass(frozen=True, slots=True)
class ResetPlan:
    offsets: dict[TopicPartition, int]
    clamped: tuple[Clamped, ...] = ()

    def rows(self) -> list[tuple[TopicPartition, int]]:
        """The new offsets in (topic, partition) order, as the table prints them."""
        return sorted(self.offsets.items())


def _requested(spec: ResetSpec, tp: TopicPartition, po: PartitionOffsets) -> int:
    scenario = spec.scenario
    if scenario is ResetScenario.TO_EARLIEST:
        return po.earliest
    if scenario is ResetScenario.TO_LATEST:
        return po.latest
    if scenario is ResetScenario.TO_CURRENT:
        return po.latest if po.committed is None else po.committed
    if scenario in _BY_TIME:
        return po.latest if po.for_time is None or po.for_time < 0 else po.for_time
    if scenario is ResetScenario.SHIFT_BY:
        if po.committed is None:
            raise InvalidOffsetResetError(
                f"cannot shift offset for partition {tp.topic}-{tp.partition} since there "
                "is no current committed offset"
            )
        return po.committed + spec.value
    assert scenario is ResetScenario.TO_OFFSET
    return spec.value


def plan_reset(spec: ResetSpec, partitions: Mapping[TopicPartition, PartitionOffsets]) -> ResetPlan:
    """The new offset of every partition, each within [earliest, latest]."""
    offsets: dict[TopicPartition, int] = {}
    clamped: list[Clamped] = []
    for tp, po in sorted(partitions.items()):
        if po.earliest > po.latest:
            raise ValueError(f"{tp}: log start {po.earliest} is after log end {po.latest}")
        requested = _requested(spec, tp, po)
        applied = min(max(requested, po.earliest), po.latest)
        if applied != requested:
            clamped.append(Clamped(tp, requested, applied))
        offsets[tp] = applied
    return ResetPlan(offsets, tuple(clamped))


# --- parsing the time options -------------------------------------------------------------


def parse_datetime_ms(text: str, *, default_tz: tzinfo | None = None) -> int:
    """``--to-datetime``: ISO 8601 ('YYYY-MM-DDTHH:mm:SS.sss', optionally with 'Z' or an
    offset like '+02:00') as ms since the epoch. Without a zone the time is local (as
    Kafka reads it), or in ``default_tz`` when given."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidOffsetResetError(
            f"--to-datetime expects ISO 8601 like 2024-01-31T12:00:00.000 (optionally with "
            f"Z or +HH:MM), got {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone() if default_tz is None else dt.replace(tzinfo=default_tz)
    return int(dt.timestamp() * 1000)


# Java's Duration.parse grammar: PnDTnHnMn.nS, each part optional and signed, and the whole
# optionally negated ("-PT6H3M").
_DURATION = re.compile(
    r"""(?P<neg>[-+]?)P
        (?:(?P<d>[-+]?\d+)D)?
        (?:T(?=[-+]?\d)
            (?:(?P<h>[-+]?\d+)H)?
            (?:(?P<m>[-+]?\d+)M)?
            (?:(?P<s>[-+]?\d+)(?:[.,](?P<frac>\d{0,9}))?S)?
        )?""",
    re.IGNORECASE | re.VERBOSE,
)


def parse_duration_ms(text: str) -> int:
    """``--by-duration``: an ISO 8601 duration (Java's ``Duration.parse``: 'P1DT2H',
    'PT30M', 'PT0.5S') in milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.group(k) for k in ("d", "h", "m", "s")):
        raise InvalidOffsetResetError(
            f"--by-duration expects an ISO 8601 duration PnDTnHnMnS (e.g. P1DT2H, PT30M), "
            f"got {text!r}"
        )
    days, hours, minutes, seconds = (int(match.group(k) or 0) for k in ("d", "h", "m", "s"))
    frac = match.group("frac") or ""
    millis = int((frac + "000")[:3]) if frac else 0
    if seconds < 0 or (match.group("s") or "").startswith("-"):
        millis = -millis
    total = ((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000 + millis
    return -total if match.group("neg") == "-" else total
