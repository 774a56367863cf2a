"""Broker settings, by Kafka's names, validated once at start.

``--set name=value`` on the command line feeds ``BrokerConfig.from_settings``. Broker-level
log defaults (``log.segment.bytes``, ``log.retention.ms``, ...) go to the storage engine's
``LogConfig.from_broker_props``; the rest are the broker's own (below). An unknown name or a
bad value raises ``InvalidConfigurationError`` naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from broker.group.events import GroupConfig
from broker.listeners import (
    DEFAULT_LISTENER_NAME,
    Endpoint,
    ListenerPlan,
    parse_endpoints,
    parse_protocol_map,
)
from broker.log.config import BROKER_TO_TOPIC_CONFIG, LogConfig
from proto.errors import InvalidConfigurationError
from proto.framing import DEFAULT_MAX_FRAME_SIZE

DEFAULT_BROKER_PORT = 9092
DEFAULT_COORDINATOR_PORT = 2181


def _int(name: str, value: str, lo: int, hi: int = 2**63 - 1) -> int:
    try:
        n = int(value)
    except ValueError:
        raise InvalidConfigurationError(f"{name}={value!r}: not an integer") from None
    if not lo <= n <= hi:
        raise InvalidConfigurationError(f"{name}={n}: must be between {lo} and {hi}")
    return n


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise InvalidConfigurationError(f"{name}={value!r}: must be true or false")


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(default_port)
    if not host:
        raise InvalidConfigurationError(f"{text!r}: missing host")
    try:
        p = int(port)
    except ValueError:
        raise InvalidConfigurationError(f"{text!r}: port is not a number") from None
    if not 0 <= p <= 65535:
        raise InvalidConfigurationError(f"{text!r}: port out of range")
    return host.strip("[]"), p


# Replication settings (Kafka's names): name -> (low, high) bounds.
_REPLICA_SETTINGS: dict[str, tuple[int, int]] = {
    "replica.fetch.wait.max.ms": (0, 600_000),
    "replica.fetch.min.bytes": (1, 2**31 - 1),
    "replica.fetch.max.bytes": (1, 2**31 - 1),
    "replica.fetch.response.max.bytes": (1, 2**31 - 1),
    "replica.fetch.backoff.ms": (0, 600_000),
    "replica.lag.time.max.ms": (1, 2**31 - 1),
    "replica.high.watermark.checkpoint.interval.ms": (1, 2**31 - 1),
}

# Controlled shutdown and leader balance (Kafka's names): name -> (low, high) bounds.
_CONTROLLER_INT_SETTINGS: dict[str, tuple[int, int]] = {
    "controlled.shutdown.max.retries": (0, 1000),
    "controlled.shutdown.retry.backoff.ms": (0, 600_000),
    "controller.socket.timeout.ms": (1, 2**31 - 1),
    "leader.imbalance.check.interval.seconds": (1, 2**31 - 1),
    "leader.imbalance.per.broker.percentage": (0, 100),
}
_CONTROLLER_BOOL_SETTINGS = ("controlled.shutdown.enable", "auto.leader.rebalance.enable")

# The group coordinator (Kafka's names): name -> (low, high) bounds. group.max.size is
# Kafka's Int.MaxValue by default: unset here means unlimited.
_GROUP_SETTINGS: dict[str, tuple[int, int]] = {
    "offsets.topic.num.partitions": (1, 100_000),
    "offsets.topic.replication.factor": (1, 1000),
    "offsets.topic.segment.bytes": (14, 2**31 - 1),
    "offsets.retention.minutes": (1, 2**31 - 1),
    "offsets.retention.check.interval.ms": (1, 2**31 - 1),
    "offsets.commit.timeout.ms": (1, 2**31 - 1),
    "offset.metadata.max.bytes": (0, 2**31 - 1),
    "group.min.session.timeout.ms": (1, 2**31 - 1),
    "group.max.session.timeout.ms": (1, 2**31 - 1),
    "group.initial.rebalance.delay.ms": (0, 2**31 - 1),
    "group.max.size": (1, 2**31 - 1),
}


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    broker_id: int
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_BROKER_PORT
    advertised_host: str | None = None
    advertised_port: int | None = None
    # Kafka's named listeners (broker/listeners.py); unset: the one listen_host:listen_port.
    listeners: tuple[Endpoint, ...] = ()
    advertised_listeners: tuple[Endpoint, ...] | None = None
    inter_broker_listener_name: str | None = None
    listener_security_protocol_map: dict[str, str] | None = None
    coordinator: str = f"127.0.0.1:{DEFAULT_COORDINATOR_PORT}"
    data_dir: str = "./data"
    rack: str | None = None
    num_partitions: int = 1
    default_replication_factor: int = 1
    auto_create_topics_enable: bool = False
    delete_topic_enable: bool = True
    socket_request_max_bytes: int = DEFAULT_MAX_FRAME_SIZE
    zookeeper_session_timeout_ms: int = 18_000
    zookeeper_connection_timeout_ms: int = 18_000
    log_retention_check_interval_ms: int = 300_000
    log_flush_scheduler_interval_ms: int = 1_000
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_min_bytes: int = 1
    replica_fetch_max_bytes: int = 1024 * 1024
    replica_fetch_response_max_bytes: int = 10 * 1024 * 1024
    replica_fetch_backoff_ms: int = 1_000
    replica_lag_time_max_ms: int = 30_000
    replica_high_watermark_checkpoint_interval_ms: int = 5_000
    # Stand for controller election (every broker does, as Kafka's ZooKeeper mode; tests of
    # the leader's own ISR rules turn it off so dead followers stay in the ISR).
    controller_enable: bool = True
    # On a clean stop, ask the controller to move this broker's leaderships first.
    controlled_shutdown_enable: bool = True
    controlled_shutdown_max_retries: int = 3
    controlled_shutdown_retry_backoff_ms: int = 5_000
    controller_socket_timeout_ms: int = 30_000
    # The controller moves leadership back to preferred replicas (Kafka's defaults).
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    leader_imbalance_per_broker_percentage: int = 10
    # The group coordinator (broker/group_coordinator/), Kafka's defaults.
    offsets_topic_num_partitions: int = 50
    offsets_topic_replication_factor: int = 3  # created with min(this, live brokers)
    offsets_topic_segment_bytes: int = 104_857_600
    offsets_retention_minutes: int = 10_080
    offsets_retention_check_interval_ms: int = 600_000
    offsets_commit_timeout_ms: int = 5_000
    offset_metadata_max_bytes: int = 4_096
    group_min_session_timeout_ms: int = 6_000
    group_max_session_timeout_ms: int = 1_800_000
    group_initial_rebalance_delay_ms: int = 3_000
    group_max_size: int | None = None
    log: LogConfig = field(default_factory=LogConfig)
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, broker_id: int, settings: Mapping[str, str], **kw: object
    ) -> BrokerConfig:
        own: dict[str, object] = {}
        log_props: dict[str, str] = {}
        for name, value in settings.items():
            if name in BROKER_TO_TOPIC_CONFIG:
                log_props[name] = value
            elif name == "num.partitions":
                own["num_partitions"] = _int(name, value, 1, 100_000)
            elif name == "default.replication.factor":
                own["default_replication_factor"] = _int(name, value, 1, 1000)
            elif name == "auto.create.topics.enable":
                own["auto_create_topics_enable"] = _bool(name, value)
            elif name == "delete.topic.enable":
                own["delete_topic_enable"] = _bool(name, value)
            elif name == "socket.request.max.bytes":
                own["socket_request_max_bytes"] = _int(name, value, 1024, 2**31 - 1)
            elif name == "zookeeper.session.timeout.ms":
                own["zookeeper_session_timeout_ms"] = _int(name, value, 1000, 600_000)
            elif name == "zookeeper.connection.timeout.ms":
                own["zookeeper_connection_timeout_ms"] = _int(name, value, 100, 600_000)
            elif name == "log.retention.check.interval.ms":
                own["log_retention_check_interval_ms"] = _int(name, value, 1)
            elif name == "log.flush.scheduler.interval.ms":
                own["log_flush_scheduler_interval_ms"] = _int(name, value, 1)
            elif name in _REPLICA_SETTINGS:
                own[name.replace(".", "_")] = _int(name, value, *_REPLICA_SETTINGS[name])
            elif name in _CONTROLLER_INT_SETTINGS:
                own[name.replace(".", "_")] = _int(name, value, *_CONTROLLER_INT_SETTINGS[name])
            elif name in _CONTROLLER_BOOL_SETTINGS:
                own[name.replace(".", "_")] = _bool(name, value)
            elif name in _GROUP_SETTINGS:
                own[name.replace(".", "_")] = _int(name, value, *_GROUP_SETTINGS[name])
            elif name == "broker.rack":
                own["rack"] = value
            elif name in ("listeners", "advertised.listeners"):
                own[name.replace(".", "_")] = parse_endpoints(value, name)
            elif name == "inter.broker.listener.name":
                own["inter_broker_listener_name"] = value.strip().upper()
            elif name == "listener.security.protocol.map":
                own["listener_security_protocol_map"] = parse_protocol_map(value)
            else:
                raise InvalidConfigurationError(f"unknown broker setting {name!r}")
        # The single-listener flags and named listeners are two ways to say one thing.
        if "listeners" in own and kw.get("listen_host") is not None:
            raise InvalidConfigurationError("listeners= and --listen both given: use one")
        if kw.get("advertised_host") is not None and (
            "listeners" in own or "advertised_listeners" in own
        ):
            raise InvalidConfigurationError(
                "--advertise goes with --listen; with listeners= use advertised.listeners="
            )
        log = LogConfig.from_broker_props(log_props)
        config = cls(broker_id=broker_id, log=log, settings=dict(settings), **own, **kw)  # type: ignore[arg-type]
        config.listener_plan  # noqa: B018 - validates the listener settings together, now
        config.group_config  # noqa: B018 - and the group session bounds
        return config

    @property
    def group_config(self) -> GroupConfig:
        """The group.* settings, as the group state machine takes them."""
        try:
            return GroupConfig(
                self.group_min_session_timeout_ms,
                self.group_max_session_timeout_ms,
                self.group_initial_rebalance_delay_ms,
                self.group_max_size,
            )
        except ValueError as exc:
            raise InvalidConfigurationError(f"group settings: {exc}") from None

    @property
    def listener_plan(self) -> ListenerPlan:
        """What to bind and register; the single --listen form unless listeners are named."""
        named = (
            self.listeners,
            self.advertised_listeners,
            self.inter_broker_listener_name,
            self.listener_security_protocol_map,
        )
        if not any(x is not None and x != () for x in named):
            return ListenerPlan.single(
                self.listen_host, self.listen_port, self.advertised_host, self.advertised_port
            )
        bind = self.listeners or (
            Endpoint(DEFAULT_LISTENER_NAME, self.listen_host, self.listen_port),
        )
        return ListenerPlan.from_settings(
            bind,
            self.advertised_listeners,
            self.inter_broker_listener_name,
            self.listener_security_protocol_map,
        )

    @property
    def advertised(self) -> tuple[str, int]:
        return (
            self.advertised_host or self.listen_host,
            self.advertised_port or self.listen_port,
        )
