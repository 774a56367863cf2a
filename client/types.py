"""The client's public value types: what users pass in and get back.

NamedTuples where a value is created per record (cheap to build and unpack), frozen
dataclasses with slots for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "BrokerDescription",
    "ClusterDescription",
    "ConsumerGroupDescription",
    "ConsumerGroupListing",
    "ConsumerRecord",
    "GroupMemberDescription",
    "GroupPartitionOffsets",
    "NewTopic",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed. ``offset`` is -1 when acks=0."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple):
    """One fetched record; ``key``/``value`` went through the deserializers, if any."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Any
    value: Any
    headers: Sequence[tuple[str, bytes]]


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


class OffsetAndMetadata(NamedTuple):
    """A committed position: ``offset`` is the next record to consume (Kafka's meaning)."""

    offset: int
    metadata: str = ""
    leader_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class NewTopic:
    name: str
    num_partitions: int = 1
    replication_factor: int = 1
    topic_configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    partitions: list[PartitionDescription]
    is_internal: bool = False


@dataclass(frozen=True, slots=True)
class BrokerDescription:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    cluster_id: str | None
    controller_id: int
    brokers: list[BrokerDescription]


# --- consumer-group administration (client.group_admin) ---------------------------------


class ConsumerGroupListing(NamedTuple):
    """One group as ListGroups reports it; ``state`` is Kafka's name ("Stable", "Empty")."""

    group_id: str
    state: str
    protocol_type: str


@dataclass(frozen=True, slots=True)
class GroupMemberDescription:
    """A member of a group. ``assignment`` is decoded only for protocol type "consumer"
    while the group is Stable (the coordinator sends it only then); else empty."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    assignment: tuple[TopicPartition, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupPartitionOffsets:
    """One partition of a group: committed offset, log end offset and lag (log end minus
    committed). None where unknown: nothing committed, or the log end not readable."""

    topic_partition: TopicPartition
    committed_offset: int | None
    log_end_offset: int | None
    lag: int | None
    member_id: str | None = None  # the member it is assigned to, if any


@dataclass(frozen=True, slots=True)
class ConsumerGroupDescription:
    """A group's state, members and offsets. A group the coordinator does not know has
    state "Dead" and nothing else (as Kafka describes it)."""

    group_id: str
    state: str
    protocol_type: str
    protocol: str  # the assignor chosen for this generation ("range", ...); "" if none
    coordinator: BrokerDescription
    members: list[GroupMemberDescription] = field(default_factory=list)
    offsets: list[GroupPartitionOffsets] = field(default_factory=list)
