"""What a group leaves behind: the record the coordinator persists, and the DescribeGroups view.

``GroupMetadataRecord`` is Kafka's GroupMetadataValue: written to the group's partition of
``__consumer_offsets`` (keyed by group id, compacted) when a generation's assignment is
stored, when a group becomes Empty and when a static member is replaced. A coordinator
that takes over the partition rebuilds the group from the last one
(``Group.from_record``). ``to_dict``/``from_dict`` give a plain msgpack-friendly shape; a
stored value that does not match it raises ``RemoteProtocolError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from proto.errors import (
    BrokerRequestTimedOutError,
    CoordinatorNotAvailableError,
    InvalidFetchSizeError,
    KafkaStorageError,
    MessageSizeTooLargeError,
    NotCoordinatorError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RebalanceInProgressError,
    RecordListTooLargeError,
    RemoteProtocolError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
)

if TYPE_CHECKING:
    from broker.group.state import GroupStateMachine

__all__ = [
    "RECORD_VERSION",
    "GroupDescription",
    "GroupMetadataRecord",
    "MemberDescription",
    "MemberRecord",
    "describe_group",
    "group_record",
    "store_error",
]

RECORD_VERSION = 0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MemberRecord:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes  # the member's metadata for the group's protocol
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadataRecord:
    """One generation of a group, as stored. No members: the group is Empty."""

    group_id: str
    protocol_type: str | None
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp_ms: int
    members: tuple[MemberRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "group_id": self.group_id,
            "protocol_type": self.protocol_type,
            "generation": self.generation,
            "protocol": self.protocol,
            "leader": self.leader,
            "current_state_timestamp_ms": self.current_state_timestamp_ms,
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "rebalance_timeout_ms": m.rebalance_timeout_ms,
                    "session_timeout_ms": m.session_timeout_ms,
                    "subscription": m.subscription,
                    "assignment": m.assignment,
                }
                for m in self.members
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> GroupMetadataRecord:
        d = _map(data, "group metadata record")
        version = _field(d, "version", int)
        if version < 0:
            raise RemoteProtocolError(f"group metadata record version {version}")
        members = d.get("members")
        if not isinstance(members, list):
            raise RemoteProtocolError("group metadata record: members is not a list")
        record = cls(
            group_id=_field(d, "group_id", str),
            protocol_type=_optional(d, "protocol_type", str),
            generation=_field(d, "generation", int),
            protocol=_optional(d, "protocol", str),
            leader=_optional(d, "leader", str),
            current_state_timestamp_ms=_field(d, "current_state_timestamp_ms", int),
            members=tuple(_member(m) for m in members),
        )
        if record.members and (record.protocol is None or record.leader is None):
            raise RemoteProtocolError("group metadata record with members but no protocol/leader")
        if record.leader is not None and record.leader not in {m.member_id for m in record.members}:
            raise RemoteProtocolError(f"group leader {record.leader!r} is not a member")
        return record


def _member(data: Any) -> MemberRecord:
    d = _map(data, "member record")
    return MemberRecord(
        member_id=_field(d, "member_id", str),
        group_instance_id=_optional(d, "group_instance_id", str),
        client_id=_field(d, "client_id", str),
        client_host=_field(d, "client_host", str),
        rebalance_timeout_ms=_field(d, "rebalance_timeout_ms", int),
        session_timeout_ms=_field(d, "session_timeout_ms", int),
        subscription=_field(d, "subscription", bytes),
        assignment=_field(d, "assignment", bytes),
    )


def _map(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RemoteProtocolError(f"{what} is not a map: {type(data).__name__}")
    return data


def _field(d: dict[str, Any], name: str, tp: type[T]) -> T:
    value = d.get(name)
    # bool is an int subclass; a stored bool is not a valid count or id.
    if type(value) is not tp:
        raise RemoteProtocolError(f"field {name!r}: expected {tp.__name__}, got {value!r:.60}")
    return value


def _optional(d: dict[str, Any], name: str, tp: type[T]) -> T | None:
    return None if d.get(name) is None else _field(d, name, tp)


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes  # empty unless the group is Stable
    assignment: bytes  # empty unless the group is Stable


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """DescribeGroups for one group (Kafka's GroupSummary): protocol and member metadata
    only while Stable, as Kafka shows them."""

    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: tuple[MemberDescription, ...]


def group_record(
    group: GroupStateMachine, assignment: Mapping[str, bytes] | None = None
) -> GroupMetadataRecord:
    """The group as Kafka stores it; ``assignment`` (the leader's, about to be stored)
    overrides the members' current ones."""
    name = group.protocol_name
    members = group.members.values()
    return GroupMetadataRecord(
        group_id=group.group_id,
        protocol_type=group.protocol_type,
        generation=group.generation_id,
        protocol=name,
        leader=group.leader_id if members else None,
        current_state_timestamp_ms=group.state_timestamp_ms,
        members=tuple(
            MemberRecord(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                rebalance_timeout_ms=m.rebalance_timeout_ms,
                session_timeout_ms=m.session_timeout_ms,
                subscription=m.metadata(name) if name is not None else b"",
                assignment=(
                    assignment.get(m.member_id, b"") if assignment is not None else m.assignment
                )
                or b"",
            )
            for m in members
        ),
    )


def describe_group(group: GroupStateMachine) -> GroupDescription:
    stable = group.state.value == "Stable"
    name = group.protocol_name if stable else None
    return GroupDescription(
        group_id=group.group_id,
        state=group.state.value,
        protocol_type=group.protocol_type or "",
        protocol=name or "",
        members=tuple(
            MemberDescription(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                metadata=m.metadata(name) if name is not None else b"",
                assignment=(m.assignment or b"") if name is not None else b"",
            )
            for m in group.members.values()
        ),
    )


# Kafka's GroupMetadataManager.storeGroup: what a failed append of the group record tells
# the members waiting on it.
_STORE_ERRORS: dict[int, int] = {
    UnknownTopicOrPartitionError.code: CoordinatorNotAvailableError.code,
    NotEnoughReplicasError.code: CoordinatorNotAvailableError.code,
    NotEnoughReplicasAfterAppendError.code: CoordinatorNotAvailableError.code,
    NotLeaderForPartitionError.code: NotCoordinatorError.code,
    KafkaStorageError.code: NotCoordinatorError.code,
    BrokerRequestTimedOutError.code: RebalanceInProgressError.code,
    MessageSizeTooLargeError.code: UnknownServerError.code,
    RecordListTooLargeError.code: UnknownServerError.code,
    InvalidFetchSizeError.code: UnknownServerError.code,
}


def store_error(append_error: int) -> int:
    """The group-level error for a failed append of a group record."""
    return _STORE_ERRORS.get(append_error, append_error)
