"""What the group state machine is configured with and what it hands back (sans-IO values).

Every input of ``broker.group.state.Group`` returns a list of ``Output``:

- ``Respond(request_id, response)``: answer the request the runtime registered under
  ``request_id``. A JoinGroup or SyncGroup may be answered much later, from the output of
  another member's request or of ``tick`` (Kafka's delayed join and sync).
- ``StoreGroup(store_id, record)``: append the group metadata record to the group's
  ``__consumer_offsets`` partition (acks=all) and report the outcome with
  ``Group.store_completed(store_id, error)``; some responses wait for it.

Error fields are Kafka's wire codes (``proto.errors``), 0 for success.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.group.records import GroupMetadataRecord
from proto.errors import NONE

__all__ = [
    "GroupConfig",
    "HeartbeatResult",
    "JoinGroupMember",
    "JoinGroupRequest",
    "JoinGroupResult",
    "LeaveGroupResult",
    "MemberIdentity",
    "MemberLeaveResult",
    "Output",
    "Respond",
    "Response",
    "StoreGroup",
    "SyncGroupResult",
]


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """The coordinator's group settings, Kafka's broker config names and defaults."""

    group_min_session_timeout_ms: int = 6_000
    group_max_session_timeout_ms: int = 1_800_000
    # The first rebalance of an Empty group waits this long for more members (each new
    # member during the wait extends it, up to the rebalance timeout).
    group_initial_rebalance_delay_ms: int = 3_000
    group_max_size: int | None = None  # Kafka: Int.MaxValue

    def __post_init__(self) -> None:
        if not 0 < self.group_min_session_timeout_ms <= self.group_max_session_timeout_ms:
            raise ValueError("need 0 < group.min.session.timeout.ms <= group.max...")
        if self.group_initial_rebalance_delay_ms < 0:
            raise ValueError("group.initial.rebalance.delay.ms must be >= 0")
        if self.group_max_size is not None and self.group_max_size < 1:
            raise ValueError("group.max.size must be >= 1")


@dataclass(frozen=True, slots=True)
class JoinGroupRequest:
    """A JoinGroup as the state machine needs it. ``member_id`` is "" on a first join;
    ``protocols`` are (name, metadata) in order of preference. ``rebalance_timeout_ms``
    is the consumer's max.poll.interval.ms."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int


@dataclass(frozen=True, slots=True)
class MemberIdentity:
    """One entry of a LeaveGroup (KIP-345 batch): a member id, an instance id, or both."""

    member_id: str = ""
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class JoinGroupMember:
    """What the leader learns of each member: its id and its metadata for the chosen
    protocol (for consumers, the encoded subscription)."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinGroupResult:
    """``members`` is filled for the leader only; followers get an empty tuple."""

    error: int
    member_id: str
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: tuple[JoinGroupMember, ...] = ()

    @property
    def is_leader(self) -> bool:
        return self.error == NONE and self.leader_id == self.member_id


@dataclass(frozen=True, slots=True)
class SyncGroupResult:
    error: int
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    error: int


@dataclass(frozen=True, slots=True)
class MemberLeaveResult:
    member_id: str
    group_instance_id: str | None
    error: int


@dataclass(frozen=True, slots=True)
class LeaveGroupResult:
    """``error`` is group-level; each member's own outcome is in ``members``."""

    error: int
    members: tuple[MemberLeaveResult, ...] = ()


Response = JoinGroupResult | SyncGroupResult | HeartbeatResult | LeaveGroupResult


@dataclass(frozen=True, slots=True)
class Respond:
    request_id: int
    response: Response


@dataclass(frozen=True, slots=True)
class StoreGroup:
    store_id: int
    record: GroupMetadataRecord


Output = Respond | StoreGroup
