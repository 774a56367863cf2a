"""Kafka's metadata layout in the coordinator: paths and znode payloads. Pure, no I/O.

| path                                          | kind       | payload            |
|-----------------------------------------------|------------|--------------------|
| ``/cluster/id``                               | persistent | ClusterId          |
| ``/brokers/ids/<id>``                         | ephemeral  | BrokerRegistration |
| ``/brokers/topics/<t>``                       | persistent | TopicAssignment    |
| ``/brokers/topics/<t>/partitions/<p>/state``  | persistent | PartitionState     |
| ``/config/topics/<t>``                        | persistent | TopicConfigZnode   |
| ``/controller``                               | ephemeral  | ControllerZnode    |
| ``/controller_epoch``                         | persistent | the epoch, decimal |
| ``/latest_producer_id_block``                 | persistent | ProducerIdBlock    |

Payloads are JSON, as in Kafka, so ``minibroker zk get`` shows something a person can read.
A payload that does not parse raises ``InvalidRequestError`` naming the path: corrupt
metadata is reported, never guessed around.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.listeners import DEFAULT_LISTENER_NAME, Endpoint, parse_endpoint
from proto.errors import InvalidConfigurationError, InvalidRequestError

CLUSTER_ID = "/cluster/id"
BROKER_IDS = "/brokers/ids"
TOPICS = "/brokers/topics"
CONFIG_TOPICS = "/config/topics"
DELETE_TOPICS = "/admin/delete_topics"
CONTROLLER = "/controller"
CONTROLLER_EPOCH = "/controller_epoch"
# The last block of producer ids a broker reserved (``broker/producer_ids.py``).
LATEST_PRODUCER_ID_BLOCK = "/latest_producer_id_block"

BASE_PATHS = (BROKER_IDS, TOPICS, CONFIG_TOPICS, DELETE_TOPICS, "/cluster")


def broker_path(broker_id: int) -> str:
    return f"{BROKER_IDS}/{broker_id}"


def topic_path(topic: str) -> str:
    return f"{TOPICS}/{topic}"


def partitions_path(topic: str) -> str:
    return f"{TOPICS}/{topic}/partitions"


def partition_path(topic: str, partition: int) -> str:
    return f"{TOPICS}/{topic}/partitions/{partition}"


def partition_state_path(topic: str, partition: int) -> str:
    return f"{TOPICS}/{topic}/partitions/{partition}/state"


def topic_config_path(topic: str) -> str:
    return f"{CONFIG_TOPICS}/{topic}"


def _load(path: str, data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"znode {path} holds invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidRequestError(f"znode {path} must hold a JSON object")
    return obj


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """``host``/``port`` are the inter-broker listener's (what replica fetchers dial);
    ``endpoints`` every advertised listener, a lone PLAINTEXT one at host:port if empty."""

    broker_id: int
    host: str
    port: int
    rack: str | None
    timestamp_ms: int
    endpoints: tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        if not self.endpoints:
            only = (Endpoint(DEFAULT_LISTENER_NAME, self.host, self.port),)
            object.__setattr__(self, "endpoints", only)

    def endpoint(self, listener: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == listener), None)

    def encode(self) -> bytes:
        return _dump(
            {
                "version": 5,
                "host": self.host,
                "port": self.port,
                "endpoints": [str(e) for e in self.endpoints],
                "listener_security_protocol_map": {e.name: "PLAINTEXT" for e in self.endpoints},
                "rack": self.rack,
                "timestamp": str(self.timestamp_ms),
            }
        )

    @classmethod
    def decode(cls, broker_id: int, data: bytes) -> BrokerRegistration:
        path = broker_path(broker_id)
        obj = _load(path, data)
        try:
            endpoints = tuple(parse_endpoint(str(e), "endpoints") for e in obj.get("endpoints", []))
            return cls(
                broker_id,
                str(obj["host"]),
                int(obj["port"]),
                obj.get("rack"),
                int(obj["timestamp"]),
                endpoints,
            )
        except (KeyError, ValueError, TypeError, InvalidConfigurationError) as exc:
            raise InvalidRequestError(f"znode {path}: bad broker registration: {exc}") from exc


@dataclass(frozen=True, slots=True)
class TopicAssignment:
    topic_id: str
    partitions: dict[int, list[int]]  # partition -> replica broker ids, preferred leader first

    def encode(self) -> bytes:
        return _dump(
            {
                "version": 3,
                "topic_id": self.topic_id,
                "partitions": {str(p): r for p, r in sorted(self.partitions.items())},
            }
        )

    @classmethod
    def decode(cls, topic: str, data: bytes) -> TopicAssignment:
        path = topic_path(topic)
        obj = _load(path, data)
        try:
            parts = {int(p): [int(b) for b in r] for p, r in obj["partitions"].items()}
            return cls(str(obj["topic_id"]), parts)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidRequestError(f"znode {path}: bad topic assignment: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PartitionState:
    leader: int
    leader_epoch: int
    isr: list[int]
    controller_epoch: int = 0

    def encode(self) -> bytes:
        return _dump(
            {
                "version": 1,
                "leader": self.leader,
                "leader_epoch": self.leader_epoch,
                "isr": self.isr,
                "controller_epoch": self.controller_epoch,
            }
        )

    @classmethod
    def decode(cls, path: str, data: bytes) -> PartitionState:
        obj = _load(path, data)
        try:
            return cls(
                int(obj["leader"]),
                int(obj["leader_epoch"]),
                [int(b) for b in obj["isr"]],
                int(obj.get("controller_epoch", 0)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidRequestError(f"znode {path}: bad partition state: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ControllerZnode:
    broker_id: int
    timestamp_ms: int

    def encode(self) -> bytes:
        return _dump(
            {"version": 1, "brokerid": self.broker_id, "timestamp": str(self.timestamp_ms)}
        )

    @classmethod
    def decode(cls, data: bytes) -> ControllerZnode:
        obj = _load(CONTROLLER, data)
        try:
            return cls(int(obj["brokerid"]), int(obj["timestamp"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidRequestError(f"znode {CONTROLLER}: bad controller: {exc}") from exc


def decode_controller_epoch(data: bytes) -> int:
    try:
        return int(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"znode {CONTROLLER_EPOCH}: bad epoch {data!r}") from exc


def encode_topic_config(config: dict[str, str]) -> bytes:
    return _dump({"version": 1, "config": dict(sorted(config.items()))})


def decode_topic_config(topic: str, data: bytes) -> dict[str, str]:
    path = topic_config_path(topic)
    obj = _load(path, data)
    config = obj.get("config", {})
    if not isinstance(config, dict):
        raise InvalidRequestError(f"znode {path}: config must be an object")
    return {str(k): str(v) for k, v in config.items()}
