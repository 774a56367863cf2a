"""Validated client settings, one frozen dataclass per client, in Kafka's names and units.

``ProducerConfig.build`` / ``ConsumerConfig.build`` take kafka-python's keyword arguments
and raise ``ConfigurationError`` (a ValueError) for anything invalid, before any I/O.
Durations are milliseconds, as in Kafka.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from client.assignors import ASSIGNORS, RebalanceProtocol
from client.cluster import ConnectionConfig, parse_bootstrap
from client.errors import ConfigurationError
from client.group.membership import common_rebalance_protocol
from proto.batch import CODEC_NONE, CODEC_ZSTD

__all__ = ["DEFAULT_BATCH_SIZE", "RECORD_OVERHEAD", "ConsumerConfig", "ProducerConfig"]

Serializer = Callable[[Any], bytes | None]
Deserializer = Callable[[Any], Any]

# Kafka's 16 KiB. Larger batches were measured and did not help: against the real broker
# (2 cores, 100-byte records, acks=1) 16 KiB gave ~790-800k records/s and 64 KiB
# ~690-770k, because the sender already packs every ready batch of a partition into one
# request, so requests grow with load whatever the batch size.
DEFAULT_BATCH_SIZE = 16384
RECORD_OVERHEAD = 32  # msgpack framing of one record, roughly
DEFAULT_RETRIES = 5
# Kafka's retries default (Integer.MAX_VALUE): an idempotent producer's retries cannot
# duplicate, so they go on until delivery_timeout_ms.
IDEMPOTENT_RETRIES = 2**31 - 1
MAX_IN_FLIGHT_IDEMPOTENT = 5  # the broker remembers the last 5 batches per producer


def _idempotence(enabled: bool | None, acks: int, retries: int | None, max_in_flight: int) -> bool:
    """Kafka 3.2+'s rule: idempotence is on by default, unless a setting conflicts with it
    (then it is silently off); asking for it explicitly with a conflict is an error. Here
    the default is on only with acks=all, so acks=1 keeps its non-idempotent fast path."""
    conflicts = []
    if acks != -1:
        conflicts.append(f"acks must be 'all' (not {acks})")
    if retries is not None and (type(retries) is not int or retries <= 0):
        conflicts.append(f"retries must be positive (not {retries!r})")
    if type(max_in_flight) is int and max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT:
        conflicts.append(
            f"max_in_flight_requests_per_connection must be at most "
            f"{MAX_IN_FLIGHT_IDEMPOTENT} (not {max_in_flight})"
        )
    if enabled is None:
        return not conflicts
    if type(enabled) is not bool:
        raise ConfigurationError(f"enable_idempotence must be True, False or None, not {enabled!r}")
    if enabled and conflicts:
        raise ConfigurationError(
            "enable_idempotence=True needs "
            + "; ".join(conflicts)
            + ": otherwise a retry could write a record twice or out of order"
        )
    return enabled


def _check_positive_ints(values: dict[str, Any]) -> None:
    for name, value in values.items():
        if type(value) is not int or value <= 0:
            raise ConfigurationError(f"{name} must be a positive int, not {value!r}")


def _check_non_negative(values: dict[str, Any]) -> None:
    for name, num in values.items():
        if not isinstance(num, int | float) or isinstance(num, bool) or num < 0:
            raise ConfigurationError(f"{name} must be a non-negative number, not {num!r}")


def _check_callables(values: dict[str, Any]) -> None:
    for name, fn in values.items():
        if fn is not None and not callable(fn):
            raise ConfigurationError(f"{name} must be callable")


def _connection(
    bootstrap_servers: str | Sequence[str],
    client_id: str | None,
    request_timeout_ms: int,
    retry_backoff_ms: int,
    metadata_max_age_ms: int,
) -> ConnectionConfig:
    return ConnectionConfig(
        tuple(parse_bootstrap(bootstrap_servers)),
        client_id=client_id,
        request_timeout_ms=request_timeout_ms,
        retry_backoff_ms=retry_backoff_ms,
        metadata_max_age_ms=metadata_max_age_ms,
    )


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """Validated producer settings; raises ConfigurationError for a bad value."""

    connection: ConnectionConfig
    acks: int = 1
    linger_ms: float = 5
    batch_size: int = DEFAULT_BATCH_SIZE
    codec: int = CODEC_NONE
    retries: int = 5
    max_in_flight_requests_per_connection: int = 5
    enable_idempotence: bool = False
    buffer_memory: int = 32 * 1024 * 1024
    max_request_size: int = 1024 * 1024
    max_block_ms: float = 60_000
    delivery_timeout_ms: float = 120_000
    key_serializer: Serializer | None = None
    value_serializer: Serializer | None = None

    @classmethod
    def build(
        cls,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        client_id: str | None = None,
        acks: int | str = 1,
        linger_ms: float = 5,
        batch_size: int = DEFAULT_BATCH_SIZE,
        compression_type: str | None = None,
        retries: int | None = None,
        retry_backoff_ms: int = 100,
        request_timeout_ms: int = 30_000,
        max_in_flight_requests_per_connection: int = 5,
        buffer_memory: int = 32 * 1024 * 1024,
        max_request_size: int = 1024 * 1024,
        max_block_ms: float = 60_000,
        delivery_timeout_ms: float = 120_000,
        metadata_max_age_ms: int = 300_000,
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        enable_idempotence: bool | None = None,
    ) -> ProducerConfig:
        if acks in ("all", -1, "-1"):
            acks_n = -1
        elif acks in (0, 1, "0", "1"):
            acks_n = int(acks)
        else:
            raise ConfigurationError(f"acks must be 0, 1, 'all' or -1, not {acks!r}")
        codecs = {None: CODEC_NONE, "none": CODEC_NONE, "zstd": CODEC_ZSTD}
        if compression_type not in codecs:
            raise ConfigurationError(
                f"compression_type must be None or 'zstd', not {compression_type!r}"
            )
        positive = {
            "batch_size": batch_size,
            "max_in_flight_requests_per_connection": max_in_flight_requests_per_connection,
            "buffer_memory": buffer_memory,
            "max_request_size": max_request_size,
        }
        _check_positive_ints(positive)
        idempotent = _idempotence(
            enable_idempotence, acks_n, retries, max_in_flight_requests_per_connection
        )
        if retries is None:
            retries = IDEMPOTENT_RETRIES if idempotent else DEFAULT_RETRIES
        _check_non_negative(
            {
                "linger_ms": linger_ms,
                "retries": retries,
                "max_block_ms": max_block_ms,
                "delivery_timeout_ms": delivery_timeout_ms,
            }
        )
        if batch_size > buffer_memory:
            raise ConfigurationError("batch_size must not exceed buffer_memory")
        _check_callables({"key_serializer": key_serializer, "value_serializer": value_serializer})
        conn = _connection(
            bootstrap_servers, client_id, request_timeout_ms, retry_backoff_ms, metadata_max_age_ms
        )
        return cls(
            conn,
            acks=acks_n,
            linger_ms=linger_ms,
            batch_size=batch_size,
            codec=codecs[compression_type],
            retries=retries,
            max_in_flight_requests_per_connection=max_in_flight_requests_per_connection,
            enable_idempotence=idempotent,
            buffer_memory=buffer_memory,
            max_request_size=max_request_size,
            max_block_ms=max_block_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            key_serializer=key_serializer,
            value_serializer=value_serializer,
        )


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Validated consumer settings; raises ConfigurationError naming the bad setting.

    Group settings follow Kafka's names and defaults. ``enable_auto_commit`` is True by
    default only with a ``group_id`` (Kafka: asking for it without one is an error). The
    rebalance timeout a member announces is ``max_poll_interval_ms``, as in Kafka.
    """

    connection: ConnectionConfig
    group_id: str | None = None
    auto_offset_reset: str = "latest"
    max_poll_records: int = 500
    fetch_max_wait_ms: int = 500
    fetch_min_bytes: int = 1
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    consumer_timeout_ms: float = math.inf
    key_deserializer: Deserializer | None = None
    value_deserializer: Deserializer | None = None
    group_instance_id: str | None = None
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    enable_auto_commit: bool = False
    auto_commit_interval_ms: int = 5_000
    partition_assignment_strategy: tuple[str, ...] = ("range", "cooperative-sticky")
    rebalance_protocol: RebalanceProtocol = RebalanceProtocol.EAGER
    allow_auto_create_topics: bool = True

    @property
    def rebalance_timeout_ms(self) -> int:
        return self.max_poll_interval_ms

    @classmethod
    def build(
        cls,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        client_id: str | None = None,
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        max_poll_records: int = 500,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 52_428_800,
        max_partition_fetch_bytes: int = 1_048_576,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        metadata_max_age_ms: int = 300_000,
        consumer_timeout_ms: float = math.inf,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        group_instance_id: str | None = None,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        enable_auto_commit: bool | None = None,
        auto_commit_interval_ms: int = 5_000,
        partition_assignment_strategy: str | Sequence[str] = ("range", "cooperative-sticky"),
        allow_auto_create_topics: bool = True,
    ) -> ConsumerConfig:
        if auto_offset_reset not in ("latest", "earliest", "none"):
            raise ConfigurationError(
                f"auto_offset_reset must be 'latest', 'earliest' or 'none', "
                f"not {auto_offset_reset!r}"
            )
        _check_positive_ints(
            {
                "max_poll_records": max_poll_records,
                "fetch_max_bytes": fetch_max_bytes,
                "max_partition_fetch_bytes": max_partition_fetch_bytes,
                "session_timeout_ms": session_timeout_ms,
                "heartbeat_interval_ms": heartbeat_interval_ms,
                "max_poll_interval_ms": max_poll_interval_ms,
                "auto_commit_interval_ms": auto_commit_interval_ms,
            }
        )
        _check_non_negative(
            {
                "fetch_max_wait_ms": fetch_max_wait_ms,
                "fetch_min_bytes": fetch_min_bytes,
                "consumer_timeout_ms": consumer_timeout_ms,
            }
        )
        _check_callables(
            {"key_deserializer": key_deserializer, "value_deserializer": value_deserializer}
        )
        for name, ident in (("group_id", group_id), ("group_instance_id", group_instance_id)):
            if ident is not None and (type(ident) is not str or not ident.strip()):
                raise ConfigurationError(f"{name} must be None or a non-empty str, not {ident!r}")
        if group_instance_id is not None and group_id is None:
            raise ConfigurationError("group_instance_id needs a group_id")
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ConfigurationError(
                f"heartbeat_interval_ms ({heartbeat_interval_ms}) must be lower than "
                f"session_timeout_ms ({session_timeout_ms})"
            )
        if enable_auto_commit is None:
            enable_auto_commit = group_id is not None
        elif type(enable_auto_commit) is not bool:
            raise ConfigurationError(
                f"enable_auto_commit must be True, False or None, not {enable_auto_commit!r}"
            )
        elif enable_auto_commit and group_id is None:
            raise ConfigurationError("enable_auto_commit=True needs a group_id to commit to")
        if type(allow_auto_create_topics) is not bool:
            raise ConfigurationError(
                f"allow_auto_create_topics must be True or False, not {allow_auto_create_topics!r}"
            )
        strategy = _assignment_strategy(partition_assignment_strategy)
        conn = _connection(
            bootstrap_servers, client_id, request_timeout_ms, retry_backoff_ms, metadata_max_age_ms
        )
        return cls(
            conn,
            group_id=group_id,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=max_poll_records,
            fetch_max_wait_ms=int(fetch_max_wait_ms),
            fetch_min_bytes=int(fetch_min_bytes),
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            consumer_timeout_ms=consumer_timeout_ms,
            key_deserializer=key_deserializer,
            value_deserializer=value_deserializer,
            group_instance_id=group_instance_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            enable_auto_commit=enable_auto_commit,
            auto_commit_interval_ms=auto_commit_interval_ms,
            partition_assignment_strategy=strategy,
            rebalance_protocol=common_rebalance_protocol(strategy),
            allow_auto_create_topics=allow_auto_create_topics,
        )


def _assignment_strategy(value: str | Sequence[str]) -> tuple[str, ...]:
    """Assignor names from client.assignors, in order of preference (a str is one name)."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not names:
        raise ConfigurationError(
            f"partition_assignment_strategy must name at least one assignor, not {value!r}"
        )
    out: list[str] = []
    for name in names:
        if name not in ASSIGNORS:
            raise ConfigurationError(
                f"partition_assignment_strategy: unknown assignor {name!r} "
                f"(known: {', '.join(sorted(ASSIGNORS))})"
            )
        if name in out:
            raise ConfigurationError(f"partition_assignment_strategy names {name!r} twice")
        out.append(name)
    return tuple(out)
