"""The consumer protocol's embedded messages: the one definition of their format.

A consumer's JoinGroup metadata is its *subscription* and the leader's SyncGroup carries
each member's *assignment* (Kafka's ConsumerProtocolSubscription and
ConsumerProtocolAssignment). The group protocol treats both as opaque bytes; they are
defined here, beside the other wire formats, because both sides read them: the client's
assignors (``client/assignors.py`` wraps these values in its own types) and the broker's
group coordinator, which looks inside only where it must know what a member asks for.

On the wire each is a msgpack array led by a format version::

    subscription  [version, topics, owned [[topic, [partitions]]], user_data, generation]
    assignment    [version, [[topic, [partitions]]], user_data]

Fields are only ever appended: a reader takes the fields it knows from any newer version
and ignores the rest. Pure functions; malformed bytes raise ``RemoteProtocolError`` only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from proto.codec import from_wire, packb, to_wire, unpackb
from proto.errors import RemoteProtocolError

__all__ = [
    "CONSUMER_PROTOCOL_TYPE",
    "METADATA_VERSION",
    "ConsumerProtocolAssignment",
    "ConsumerProtocolSubscription",
    "Partitions",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
]

CONSUMER_PROTOCOL_TYPE = "consumer"
METADATA_VERSION = 0

# (topic, partition) pairs; the client's TopicPartition is one.
Partitions = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ConsumerProtocolSubscription:
    """What a member asks for (``topics``, ``user_data``) and what it holds
    (``owned_partitions``, of ``generation``; -1: none)."""

    topics: tuple[str, ...]
    owned_partitions: Partitions = ()
    user_data: bytes = b""
    generation: int = -1


@dataclass(frozen=True, slots=True)
class ConsumerProtocolAssignment:
    partitions: Partitions
    user_data: bytes = b""


@dataclass(frozen=True, slots=True)
class _TopicPartitions:
    topic: str
    partitions: list[int]


@dataclass(frozen=True, slots=True)
class _SubscriptionV0:
    topics: list[str]
    owned_partitions: list[_TopicPartitions]
    user_data: bytes
    generation: int


@dataclass(frozen=True, slots=True)
class _AssignmentV0:
    partitions: list[_TopicPartitions]
    user_data: bytes


def _group(tps: Iterable[tuple[str, int]]) -> list[_TopicPartitions]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, partition in tps:
        by_topic[topic].append(partition)
    return [_TopicPartitions(t, sorted(ps)) for t, ps in sorted(by_topic.items())]


def _ungroup(groups: Iterable[_TopicPartitions]) -> Partitions:
    return tuple((g.topic, p) for g in groups for p in g.partitions)


def _fields(data: bytes, arity: int, what: str) -> list[object]:
    """The fields after the version, cut to the ones this reader knows."""
    value = unpackb(data)
    if type(value) is not list or not value or type(value[0]) is not int or value[0] < 0:
        raise RemoteProtocolError(f"{what}: expected [version, ...]")
    if len(value) - 1 < arity:
        raise RemoteProtocolError(f"{what} v{value[0]}: {len(value) - 1} fields, need {arity}")
    return value[1 : 1 + arity]


def encode_subscription(sub: ConsumerProtocolSubscription) -> bytes:
    wire = _SubscriptionV0(
        list(sub.topics), _group(sub.owned_partitions), sub.user_data, sub.generation
    )
    return packb([METADATA_VERSION, *to_wire(wire)])


def decode_subscription(data: bytes) -> ConsumerProtocolSubscription:
    wire = from_wire(_SubscriptionV0, _fields(data, 4, "subscription"))
    return ConsumerProtocolSubscription(
        tuple(wire.topics), _ungroup(wire.owned_partitions), wire.user_data, wire.generation
    )


def encode_assignment(assignment: ConsumerProtocolAssignment) -> bytes:
    wire = _AssignmentV0(_group(assignment.partitions), assignment.user_data)
    return packb([METADATA_VERSION, *to_wire(wire)])


def decode_assignment(data: bytes) -> ConsumerProtocolAssignment:
    """An empty assignment may arrive as no bytes at all (the coordinator fills members
    the leader left out with empty bytes)."""
    if not data:
        return ConsumerProtocolAssignment(())
    wire = from_wire(_AssignmentV0, _fields(data, 2, "assignment"))
    return ConsumerProtocolAssignment(_ungroup(wire.partitions), wire.user_data)
