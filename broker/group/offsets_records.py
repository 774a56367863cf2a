"""The records of ``__consumer_offsets``: keys, values, tombstones, and loading a partition.

Kafka's record kinds, told apart by the key's version as in Kafka's GroupMetadataManager:

* key version 0 or 1: an offset commit, ``(group, topic, partition)``; the value holds the
  committed offset, its leader epoch, the client's metadata string and the commit time.
* key version 2: a group's metadata, ``group``; the value is ``GroupMetadataRecord``.
* value None (a tombstone): the offset or the group was deleted. Compaction keeps the
  last record per key, so a tombstone is what makes a deletion outlive compaction.

Keys and values are msgpack arrays that start with their version (not Kafka's binary
schemas). A key must encode to the same bytes every time, since compaction compares key
bytes; this module always writes offset keys as version 1. Readers take the fields they
know from a newer value version (fields are only appended); a key of an unknown version is
skipped by the loader, as Kafka skips record types it does not know.

A group lives in partition ``partition_for(group_id)`` (Kafka's
``abs(groupId.hashCode) % offsets.topic.num.partitions``, with Java's ``String.hashCode``),
so a Kafka client's choice of coordinator and ours agree. Sans-IO: no log access here; the
runtime reads the partition and feeds ``OffsetsPartitionState.apply``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.group.records import GroupMetadataRecord
from proto.codec import packb, unpackb
from proto.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_OFFSETS_TOPIC_PARTITIONS",
    "GROUP_METADATA_KEY_VERSION",
    "OFFSETS_TOPIC",
    "OFFSET_COMMIT_KEY_VERSION",
    "OFFSET_COMMIT_VALUE_VERSION",
    "GroupMetadataKey",
    "OffsetCommitKey",
    "OffsetCommitValue",
    "OffsetsKey",
    "OffsetsPartitionState",
    "StoredRecord",
    "decode_group_metadata_value",
    "decode_key",
    "decode_offset_commit_value",
    "encode_group_metadata_value",
    "encode_key",
    "encode_offset_commit_value",
    "group_metadata_record",
    "group_tombstone",
    "java_string_hashcode",
    "load_offsets_partition",
    "offset_commit_record",
    "offset_tombstone",
    "partition_for",
]

OFFSETS_TOPIC = "__consumer_offsets"
DEFAULT_OFFSETS_TOPIC_PARTITIONS = 50  # Kafka's offsets.topic.num.partitions
OFFSET_COMMIT_KEY_VERSION = 1  # Kafka reads 0 and 1 alike; it writes 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3  # the field set of Kafka's OffsetCommitValue v3

_INT32 = 1 << 32
_INT32_MIN = -(1 << 31)


def java_string_hashcode(s: str) -> int:
    """Java's ``String.hashCode()``: ``sum(c[i] * 31**(n-1-i))`` over UTF-16 code units,
    in 32-bit two's complement (a character outside the BMP counts as two surrogates)."""
    units = s.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) % _INT32
    return h - _INT32 if h >= 1 << 31 else h


def partition_for(group_id: str, num_partitions: int = DEFAULT_OFFSETS_TOPIC_PARTITIONS) -> int:
    """The ``__consumer_offsets`` partition whose leader coordinates ``group_id``."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    h = java_string_hashcode(group_id)
    # Kafka's Utils.abs: Math.abs(Integer.MIN_VALUE) is still negative, so it maps to 0.
    return (0 if h == _INT32_MIN else abs(h)) % num_partitions


# --- keys -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetCommitKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupMetadataKey:
    group: str


OffsetsKey = OffsetCommitKey | GroupMetadataKey


def encode_key(key: OffsetsKey) -> bytes:
    if isinstance(key, OffsetCommitKey):
        return packb([OFFSET_COMMIT_KEY_VERSION, key.group, key.topic, key.partition])
    return packb([GROUP_METADATA_KEY_VERSION, key.group])


def decode_key(data: bytes) -> OffsetsKey | None:
    """The key of a ``__consumer_offsets`` record; None for a key version this code does
    not know (a newer record kind). Anything malformed raises RemoteProtocolError."""
    fields = unpackb(data)
    if type(fields) is not list or not fields or type(fields[0]) is not int:
        raise RemoteProtocolError(f"__consumer_offsets key is not [version, ...]: {fields!r:.60}")
    version = fields[0]
    if version in (0, 1):
        if len(fields) != 4:
            raise RemoteProtocolError(f"offset commit key has {len(fields)} fields, not 4")
        _, group, topic, partition = fields
        _check(group, str, "group")
        _check(topic, str, "topic")
        _check(partition, int, "partition")
        return OffsetCommitKey(group, topic, partition)
    if version == GROUP_METADATA_KEY_VERSION:
        if len(fields) != 2:
            raise RemoteProtocolError(f"group metadata key has {len(fields)} fields, not 2")
        _check(fields[1], str, "group")
        return GroupMetadataKey(fields[1])
    if version < 0:
        raise RemoteProtocolError(f"__consumer_offsets key version {version}")
    return None


# --- values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetCommitValue:
    """A committed position: ``offset`` is the next offset the group will consume."""

    offset: int
    leader_epoch: int = -1
    metadata: str = ""  # Kafka stores a null commit metadata as ""
    commit_timestamp_ms: int = -1


def encode_offset_commit_value(value: OffsetCommitValue) -> bytes:
    return packb(
        [
            OFFSET_COMMIT_VALUE_VERSION,
            value.offset,
            value.leader_epoch,
            value.metadata,
            value.commit_timestamp_ms,
        ]
    )


def decode_offset_commit_value(data: bytes) -> OffsetCommitValue:
    fields = unpackb(data)
    if type(fields) is not list or len(fields) < 5 or type(fields[0]) is not int:
        raise RemoteProtocolError(f"offset commit value is not [version, 4 fields]: {fields!r:.60}")
    if fields[0] < OFFSET_COMMIT_VALUE_VERSION:
        raise RemoteProtocolError(f"offset commit value version {fields[0]}")
    _, offset, leader_epoch, metadata, timestamp = fields[:5]  # newer versions append
    _check(offset, int, "offset")
    _check(leader_epoch, int, "leader_epoch")
    _check(metadata, str, "metadata")
    _check(timestamp, int, "commit_timestamp_ms")
    return OffsetCommitValue(offset, leader_epoch, metadata, timestamp)


def encode_group_metadata_value(record: GroupMetadataRecord) -> bytes:
    """Versioned by ``records.RECORD_VERSION`` inside the map."""
    return packb(record.to_dict())


def decode_group_metadata_value(data: bytes) -> GroupMetadataRecord:
    return GroupMetadataRecord.from_dict(unpackb(data))


def _check(value: Any, tp: type, name: str) -> None:
    if type(value) is not tp:  # bool is an int subclass, and is no partition or offset
        raise RemoteProtocolError(f"{name}: expected {tp.__name__}, got {value!r:.60}")


# --- whole records (key bytes, value bytes or None) -------------------------------------


def offset_commit_record(
    group: str, topic: str, partition: int, value: OffsetCommitValue
) -> tuple[bytes, bytes]:
    return encode_key(OffsetCommitKey(group, topic, partition)), encode_offset_commit_value(value)


def offset_tombstone(group: str, topic: str, partition: int) -> tuple[bytes, None]:
    return encode_key(OffsetCommitKey(group, topic, partition)), None


def group_metadata_record(record: GroupMetadataRecord) -> tuple[bytes, bytes]:
    return encode_key(GroupMetadataKey(record.group_id)), encode_group_metadata_value(record)


def group_tombstone(group: str) -> tuple[bytes, None]:
    return encode_key(GroupMetadataKey(group)), None


# --- loading a partition ----------------------------------------------------------------


class StoredRecord(Protocol):
    """What the loader needs of a log record (``proto.batch.Record`` is one)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass
class OffsetsPartitionState:
    """What one ``__consumer_offsets`` partition says, applied record by record in offset
    order: the last record per key wins and a tombstone removes the key.

    Groups and offsets are independent, as in Kafka: a group's deletion writes a tombstone
    for each of its offsets too, and offsets committed from outside any group (generation
    -1) have no group record at all.
    """

    groups: dict[str, GroupMetadataRecord] = field(default_factory=dict)
    offsets: dict[tuple[str, str, int], OffsetCommitValue] = field(default_factory=dict)
    skipped: int = 0  # records with a key version this code does not know

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            raise RemoteProtocolError("__consumer_offsets record without a key")
        decoded = decode_key(key)
        if decoded is None:
            self.skipped += 1
        elif isinstance(decoded, OffsetCommitKey):
            tp = (decoded.group, decoded.topic, decoded.partition)
            if value is None:
                self.offsets.pop(tp, None)
            else:
                self.offsets[tp] = decode_offset_commit_value(value)
        elif value is None:
            self.groups.pop(decoded.group, None)
        else:
            record = decode_group_metadata_value(value)
            if record.group_id != decoded.group:
                raise RemoteProtocolError(
                    f"group record for {record.group_id!r} under the key of {decoded.group!r}"
                )
            self.groups[decoded.group] = record

    def group_offsets(self, group: str) -> dict[tuple[str, int], OffsetCommitValue]:
        """The committed offsets of one group, by (topic, partition)."""
        return {(t, p): v for (g, t, p), v in self.offsets.items() if g == group}


def load_offsets_partition(records: Iterable[StoredRecord]) -> OffsetsPartitionState:
    """Rebuild the groups and committed offsets of one partition from its records in
    offset order: what a broker runs when it becomes the partition's leader, before it
    answers as the coordinator of the partition's groups."""
    state = OffsetsPartitionState()
    for record in records:
        state.apply(record.key, record.value)
    return state
