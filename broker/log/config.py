"""Topic-level log configuration (Kafka's names) and the broker-level defaults behind it.

``LogConfig`` is the one validated object holding every setting the storage engine reads;
attribute names are Kafka's topic config names with ``.`` replaced by ``_``. Values are
validated on construction, so a ``LogConfig`` that exists is a valid one. Parsing string
properties (``from_props`` for topic overrides, ``from_broker_props`` for the broker's
``log.*`` defaults) raises ``InvalidConfigurationError`` naming the key, the value and what
is allowed. This module never touches files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from proto.errors import InvalidConfigurationError

__all__ = [
    "BROKER_LOG_CONFIGS",
    "BROKER_TO_TOPIC_CONFIG",
    "CLEANUP_POLICIES",
    "LONG_MAX",
    "TIMESTAMP_TYPES",
    "LogConfig",
]

LONG_MAX: Final = 2**63 - 1
INT_MAX: Final = 2**31 - 1
CLEANUP_POLICIES: Final = frozenset({"delete", "compact"})
TIMESTAMP_TYPES: Final = ("CreateTime", "LogAppendTime")


@dataclass(frozen=True, slots=True)
class _IntSpec:
    low: int
    high: int


# Kafka's validators for each topic-level setting (TopicConfig / LogConfig.configDef).
_INT_SPECS: Final[dict[str, _IntSpec]] = {
    "segment.bytes": _IntSpec(14, INT_MAX),
    "segment.ms": _IntSpec(1, LONG_MAX),
    "segment.index.bytes": _IntSpec(4, INT_MAX),
    "index.interval.bytes": _IntSpec(0, INT_MAX),
    "retention.ms": _IntSpec(-1, LONG_MAX),
    "retention.bytes": _IntSpec(-1, LONG_MAX),
    "flush.messages": _IntSpec(1, LONG_MAX),
    "flush.ms": _IntSpec(0, LONG_MAX),
    "max.message.bytes": _IntSpec(0, INT_MAX),
    "file.delete.delay.ms": _IntSpec(0, LONG_MAX),
    "min.insync.replicas": _IntSpec(1, INT_MAX),
    "delete.retention.ms": _IntSpec(0, LONG_MAX),
    "min.compaction.lag.ms": _IntSpec(0, LONG_MAX),
}


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Topic-level settings of one partition's log. Durations in ms; -1 means unlimited."""

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * 24 * 3600 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    index_interval_bytes: int = 4096
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    flush_messages: int = LONG_MAX
    flush_ms: int = LONG_MAX
    max_message_bytes: int = 1048588
    file_delete_delay_ms: int = 60000
    cleanup_policy: str = "delete"
    # Log compaction (broker/log/cleaner.py, docs/compaction.md): a log is cleaned when
    # its dirty bytes reach this share of its cleanable bytes; a tombstone stays
    # delete.retention.ms after the cleaning that first kept it; records younger than
    # min.compaction.lag.ms are not compacted.
    min_cleanable_dirty_ratio: float = 0.5
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0
    message_timestamp_type: str = "CreateTime"
    min_insync_replicas: int = 1
    unclean_leader_election_enable: bool = False

    def __post_init__(self) -> None:
        for name, spec in _INT_SPECS.items():
            value = getattr(self, _attr(name))
            if type(value) is not int or not spec.low <= value <= spec.high:
                raise _invalid(name, value, _int_allowed(spec))
        policy = self.cleanup_policy
        parts = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else []
        if not parts or any(p not in CLEANUP_POLICIES for p in parts):
            raise _invalid("cleanup.policy", policy, "a list of 'delete' and/or 'compact'")
        if ",".join(parts) != policy:
            object.__setattr__(self, "cleanup_policy", ",".join(parts))
        ratio = self.min_cleanable_dirty_ratio
        if type(ratio) not in (int, float) or not 0 <= ratio <= 1:
            raise _invalid("min.cleanable.dirty.ratio", ratio, _RATIO_ALLOWED)
        object.__setattr__(self, "min_cleanable_dirty_ratio", float(ratio))
        if self.message_timestamp_type not in TIMESTAMP_TYPES:
            raise _invalid(
                "message.timestamp.type", self.message_timestamp_type, " or ".join(TIMESTAMP_TYPES)
            )
        if type(self.unclean_leader_election_enable) is not bool:
            raise _invalid(
                "unclean.leader.election.enable", self.unclean_leader_election_enable, "a bool"
            )

    @property
    def delete_enabled(self) -> bool:
        """Retention applies only when the cleanup policy contains ``delete``."""
        return "delete" in self.cleanup_policy.split(",")

    @property
    def compact_enabled(self) -> bool:
        """The log cleaner compacts the log only when the cleanup policy contains ``compact``."""
        return "compact" in self.cleanup_policy.split(",")

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @classmethod
    def names(cls) -> list[str]:
        """Kafka's names of every setting, in declaration order."""
        return [f.name.replace("_", ".") for f in dataclasses.fields(cls)]

    @classmethod
    def from_props(cls, props: Mapping[str, str], base: LogConfig | None = None) -> LogConfig:
        """Overlay topic-level string properties (Kafka's names) on ``base``."""
        known = set(cls.names())
        changes: dict[str, Any] = {}
        for key, raw in props.items():
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise InvalidConfigurationError(
                    f"unknown topic config {key!r} (value {raw!r}); known: {allowed}"
                )
            changes[_attr(key)] = _parse(key, raw, key)
        return dataclasses.replace(base if base is not None else cls(), **changes)

    @classmethod
    def from_broker_props(cls, props: Mapping[str, str]) -> LogConfig:
        """The broker's defaults from its ``log.*`` settings; other broker keys are ignored.

        Where Kafka has several units for one setting (``log.retention.ms`` / ``.minutes`` /
        ``.hours``), the finest unit present wins, as in Kafka.
        """
        changes: dict[str, Any] = {}
        chosen: dict[str, int] = {}  # topic name -> multiplier of the value taken
        for key, raw in props.items():
            target = BROKER_LOG_CONFIGS.get(key)
            if target is None:
                continue
            topic_name, unit = target
            if topic_name in chosen and chosen[topic_name] <= unit:
                continue
            if unit == 1:
                value = _parse(topic_name, raw, key)
            else:
                count = _parse_int(raw, key, _IntSpec(-1, LONG_MAX // unit))
                value = count * unit if count >= 0 else count
                _parse(topic_name, str(value), key)
            chosen[topic_name] = unit
            changes[_attr(topic_name)] = value
        return dataclasses.replace(cls(), **changes)

    def to_props(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name.replace("_", ".")] = (
                ("true" if value else "false") if isinstance(value, bool) else str(value)
            )
        return out


# Broker-level name -> (topic-level name, multiplier to ms). Kafka's KafkaConfig names.
BROKER_LOG_CONFIGS: Final[dict[str, tuple[str, int]]] = {
    "log.segment.bytes": ("segment.bytes", 1),
    "log.roll.ms": ("segment.ms", 1),
    "log.roll.hours": ("segment.ms", 3600 * 1000),
    "log.index.size.max.bytes": ("segment.index.bytes", 1),
    "log.index.interval.bytes": ("index.interval.bytes", 1),
    "log.retention.ms": ("retention.ms", 1),
    "log.retention.minutes": ("retention.ms", 60 * 1000),
    "log.retention.hours": ("retention.ms", 3600 * 1000),
    "log.retention.bytes": ("retention.bytes", 1),
    "log.flush.interval.messages": ("flush.messages", 1),
    "log.flush.interval.ms": ("flush.ms", 1),
    "message.max.bytes": ("max.message.bytes", 1),
    "log.segment.delete.delay.ms": ("file.delete.delay.ms", 1),
    "log.cleanup.policy": ("cleanup.policy", 1),
    "log.cleaner.min.cleanable.ratio": ("min.cleanable.dirty.ratio", 1),
    "log.cleaner.delete.retention.ms": ("delete.retention.ms", 1),
    "log.cleaner.min.compaction.lag.ms": ("min.compaction.lag.ms", 1),
    "log.message.timestamp.type": ("message.timestamp.type", 1),
    "min.insync.replicas": ("min.insync.replicas", 1),
    "unclean.leader.election.enable": ("unclean.leader.election.enable", 1),
}

# Broker-level name -> topic-level name, for callers that only need to route settings.
BROKER_TO_TOPIC_CONFIG: Final[dict[str, str]] = {
    broker_name: topic_name for broker_name, (topic_name, _unit) in BROKER_LOG_CONFIGS.items()
}


_RATIO_ALLOWED: Final = "a number in [0, 1]"


def _attr(name: str) -> str:
    return name.replace(".", "_")


def _int_allowed(spec: _IntSpec) -> str:
    if spec.high in (INT_MAX, LONG_MAX):
        return f"an integer >= {spec.low}"
    return f"an integer in [{spec.low}, {spec.high}]"


def _invalid(name: str, value: object, allowed: str) -> InvalidConfigurationError:
    return InvalidConfigurationError(f"invalid value {value!r} for {name}: expected {allowed}")


def _parse_int(raw: str, key: str, spec: _IntSpec) -> int:
    try:
        value = int(raw.strip())
    except (ValueError, AttributeError):
        raise _invalid(key, raw, _int_allowed(spec)) from None
    if not spec.low <= value <= spec.high:
        raise _invalid(key, raw, _int_allowed(spec))
    return value


def _parse(name: str, raw: str, key: str) -> Any:
    """Parse the string value of topic setting ``name``; errors name ``key`` (as given)."""
    if not isinstance(raw, str):
        raise _invalid(key, raw, "a string value")
    spec = _INT_SPECS.get(name)
    if spec is not None:
        return _parse_int(raw, key, spec)
    value = raw.strip()
    if name == "cleanup.policy":
        parts = [p.strip() for p in value.split(",")]
        if not value or any(p not in CLEANUP_POLICIES for p in parts):
            raise _invalid(key, raw, "'delete', 'compact' or 'delete,compact'")
        return ",".join(parts)
    if name == "min.cleanable.dirty.ratio":
        try:
            ratio = float(value)
        except ValueError:
            raise _invalid(key, raw, _RATIO_ALLOWED) from None
        if not 0 <= ratio <= 1:  # also refuses nan
            raise _invalid(key, raw, _RATIO_ALLOWED)
        return ratio
    if name == "message.timestamp.type":
        if value not in TIMESTAMP_TYPES:
            raise _invalid(key, raw, " or ".join(TIMESTAMP_TYPES))
        return value
    if name == "unclean.leader.election.enable":
        if value.lower() not in ("true", "false"):
            raise _invalid(key, raw, "true or false")
        return value.lower() == "true"
    raise AssertionError(f"no parser for {name}")  # every field has one above
