"""Consumer-group API messages: coordinator discovery, membership and committed offsets.

Kafka's api keys and the field sets of Kafka's current versions (FindCoordinator v3,
OffsetCommit v8, OffsetFetch v7, JoinGroup v9, Heartbeat v4, LeaveGroup v5, SyncGroup v5,
DescribeGroups v5, ListGroups v4, DeleteGroups v2, OffsetDelete v0), without tagged fields
and without authorized-operations fields (minibroker has no ACLs). Errors are per partition,
per member or per group, where Kafka puts them. Registered in ``proto.messages``'s
``REQUEST_TYPES``; encoded by ``proto.codec`` like every other message. Sans-IO.

Group metadata (``JoinGroupProtocol.metadata``, ``SyncGroupAssignment.assignment``) is
opaque bytes here: the consumer's embedded protocol (``client/assignors.py``) owns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proto.api import ApiKey, Request, Response

__all__ = [
    "COORDINATOR_KEY_GROUP",
    "COORDINATOR_KEY_TRANSACTION",
    "NO_GENERATION",
    "NO_LEADER_EPOCH",
    "NO_OFFSET",
    "UNKNOWN_MEMBER_ID",
    "DeletableGroupResult",
    "DeleteGroupsRequest",
    "DeleteGroupsResponse",
    "DescribeGroupsRequest",
    "DescribeGroupsResponse",
    "DescribedGroup",
    "DescribedGroupMember",
    "FindCoordinatorRequest",
    "FindCoordinatorResponse",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "JoinGroupMemberMetadata",
    "JoinGroupProtocol",
    "JoinGroupRequest",
    "JoinGroupResponse",
    "LeaveGroupMember",
    "LeaveGroupMemberResponse",
    "LeaveGroupRequest",
    "LeaveGroupResponse",
    "ListGroupsRequest",
    "ListGroupsResponse",
    "ListedGroup",
    "OffsetCommitPartition",
    "OffsetCommitPartitionResponse",
    "OffsetCommitRequest",
    "OffsetCommitResponse",
    "OffsetCommitTopic",
    "OffsetCommitTopicResponse",
    "OffsetDeletePartition",
    "OffsetDeletePartitionResponse",
    "OffsetDeleteRequest",
    "OffsetDeleteResponse",
    "OffsetDeleteTopic",
    "OffsetDeleteTopicResponse",
    "OffsetFetchPartitionResponse",
    "OffsetFetchRequest",
    "OffsetFetchResponse",
    "OffsetFetchTopic",
    "OffsetFetchTopicResponse",
    "SyncGroupAssignment",
    "SyncGroupRequest",
    "SyncGroupResponse",
]

COORDINATOR_KEY_GROUP = 0  # Kafka's CoordinatorType.GROUP
COORDINATOR_KEY_TRANSACTION = 1  # not served here
UNKNOWN_MEMBER_ID = ""  # a member joining for the first time
NO_GENERATION = -1  # a commit from outside any group (a "simple" consumer)
NO_LEADER_EPOCH = -1
NO_OFFSET = -1  # OffsetFetch: nothing committed for this partition


# --- FindCoordinator (10) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FindCoordinatorResponse(Response):
    """The broker leading the key's ``__consumer_offsets`` partition; -1/""/-1 with an error."""

    error_code: int
    node_id: int
    host: str
    port: int
    error_message: str | None = None
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class FindCoordinatorRequest(Request):
    API_KEY = ApiKey.FIND_COORDINATOR
    RESPONSE = FindCoordinatorResponse
    key: str  # the group id
    key_type: int = COORDINATOR_KEY_GROUP


# --- OffsetCommit (8) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetCommitPartition:
    partition: int
    committed_offset: int  # the next offset to consume
    committed_leader_epoch: int = NO_LEADER_EPOCH
    committed_metadata: str | None = None


@dataclass(frozen=True, slots=True)
class OffsetCommitTopic:
    name: str
    partitions: list[OffsetCommitPartition]


@dataclass(frozen=True, slots=True)
class OffsetCommitPartitionResponse:
    partition: int
    error_code: int


@dataclass(frozen=True, slots=True)
class OffsetCommitTopicResponse:
    name: str
    partitions: list[OffsetCommitPartitionResponse]


@dataclass(frozen=True, slots=True)
class OffsetCommitResponse(Response):
    """Errors per partition only, as in Kafka (a group-level failure repeats on each)."""

    topics: list[OffsetCommitTopicResponse]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class OffsetCommitRequest(Request):
    """``generation_id`` -1 with an empty ``member_id``: a commit from outside any group."""

    API_KEY = ApiKey.OFFSET_COMMIT
    RESPONSE = OffsetCommitResponse
    group_id: str
    topics: list[OffsetCommitTopic]
    generation_id: int = NO_GENERATION
    member_id: str = UNKNOWN_MEMBER_ID
    group_instance_id: str | None = None


# --- OffsetFetch (9) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetFetchTopic:
    name: str
    partitions: list[int]


@dataclass(frozen=True, slots=True)
class OffsetFetchPartitionResponse:
    partition: int
    committed_offset: int  # NO_OFFSET: nothing committed
    error_code: int
    committed_leader_epoch: int = NO_LEADER_EPOCH
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class OffsetFetchTopicResponse:
    name: str
    partitions: list[OffsetFetchPartitionResponse]


@dataclass(frozen=True, slots=True)
class OffsetFetchResponse(Response):
    """``error_code``: a group-level failure (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS)."""

    error_code: int
    topics: list[OffsetFetchTopicResponse]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class OffsetFetchRequest(Request):
    """``topics`` None: every partition the group has an offset for.
    ``require_stable``: wait out pending transactional commits (KIP-447)."""

    API_KEY = ApiKey.OFFSET_FETCH
    RESPONSE = OffsetFetchResponse
    group_id: str
    topics: list[OffsetFetchTopic] | None = None
    require_stable: bool = False


# --- JoinGroup (11) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinGroupProtocol:
    name: str  # an assignor, e.g. "range"
    metadata: bytes  # the member's subscription for it


@dataclass(frozen=True, slots=True)
class JoinGroupMemberMetadata:
    member_id: str
    metadata: bytes
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class JoinGroupResponse(Response):
    """``members`` only for the leader; ``skip_assignment`` (KIP-814) tells a static
    leader that rejoined without a rebalance not to assign again."""

    error_code: int
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader: str
    member_id: str
    members: list[JoinGroupMemberMetadata]
    skip_assignment: bool = False
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class JoinGroupRequest(Request):
    API_KEY = ApiKey.JOIN_GROUP
    RESPONSE = JoinGroupResponse
    group_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    member_id: str
    protocol_type: str
    protocols: list[JoinGroupProtocol]
    group_instance_id: str | None = None
    reason: str | None = None


# --- Heartbeat (12) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Response):
    error_code: int
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatRequest(Request):
    API_KEY = ApiKey.HEARTBEAT
    RESPONSE = HeartbeatResponse
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


# --- LeaveGroup (13) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaveGroupMember:
    """A static member may be named by ``group_instance_id`` alone (empty ``member_id``)."""

    member_id: str
    group_instance_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveGroupMemberResponse:
    member_id: str
    group_instance_id: str | None
    error_code: int


@dataclass(frozen=True, slots=True)
class LeaveGroupResponse(Response):
    error_code: int
    members: list[LeaveGroupMemberResponse]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class LeaveGroupRequest(Request):
    API_KEY = ApiKey.LEAVE_GROUP
    RESPONSE = LeaveGroupResponse
    group_id: str
    members: list[LeaveGroupMember]


# --- SyncGroup (14) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncGroupAssignment:
    member_id: str
    assignment: bytes


@dataclass(frozen=True, slots=True)
class SyncGroupResponse(Response):
    error_code: int
    assignment: bytes  # this member's; empty with an error
    protocol_type: str | None = None
    protocol_name: str | None = None
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class SyncGroupRequest(Request):
    """Only the leader sends ``assignments``; followers send an empty list."""

    API_KEY = ApiKey.SYNC_GROUP
    RESPONSE = SyncGroupResponse
    group_id: str
    generation_id: int
    member_id: str
    assignments: list[SyncGroupAssignment]
    group_instance_id: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None


# --- DescribeGroups (15) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DescribedGroupMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    member_metadata: bytes  # empty unless the group is Stable
    member_assignment: bytes  # empty unless the group is Stable


@dataclass(frozen=True, slots=True)
class DescribedGroup:
    """``group_state`` is a state name ("Stable", "Empty", ... or "Dead" for an unknown
    group, as Kafka answers); ``protocol_data`` the chosen assignor while Stable."""

    error_code: int
    group_id: str
    group_state: str
    protocol_type: str
    protocol_data: str
    members: list[DescribedGroupMember]


@dataclass(frozen=True, slots=True)
class DescribeGroupsResponse(Response):
    groups: list[DescribedGroup]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class DescribeGroupsRequest(Request):
    API_KEY = ApiKey.DESCRIBE_GROUPS
    RESPONSE = DescribeGroupsResponse
    groups: list[str]


# --- ListGroups (16) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    group_state: str


@dataclass(frozen=True, slots=True)
class ListGroupsResponse(Response):
    error_code: int
    groups: list[ListedGroup]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class ListGroupsRequest(Request):
    """Groups this broker coordinates; ``states_filter`` empty: every state (KIP-518)."""

    API_KEY = ApiKey.LIST_GROUPS
    RESPONSE = ListGroupsResponse
    states_filter: list[str] = field(default_factory=list)


# --- DeleteGroups (42) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeletableGroupResult:
    group_id: str
    error_code: int


@dataclass(frozen=True, slots=True)
class DeleteGroupsResponse(Response):
    results: list[DeletableGroupResult]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class DeleteGroupsRequest(Request):
    """Only Empty groups can be deleted (else NON_EMPTY_GROUP, 68); their offsets go too."""

    API_KEY = ApiKey.DELETE_GROUPS
    RESPONSE = DeleteGroupsResponse
    groups_names: list[str]


# --- OffsetDelete (47) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetDeletePartition:
    partition: int


@dataclass(frozen=True, slots=True)
class OffsetDeleteTopic:
    name: str
    partitions: list[OffsetDeletePartition]


@dataclass(frozen=True, slots=True)
class OffsetDeletePartitionResponse:
    partition: int
    error_code: int  # GROUP_SUBSCRIBED_TO_TOPIC (86) while a member consumes it


@dataclass(frozen=True, slots=True)
class OffsetDeleteTopicResponse:
    name: str
    partitions: list[OffsetDeletePartitionResponse]


@dataclass(frozen=True, slots=True)
class OffsetDeleteResponse(Response):
    error_code: int
    topics: list[OffsetDeleteTopicResponse]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class OffsetDeleteRequest(Request):
    """Delete committed offsets of a group (KIP-496): allowed for an Empty group, or for
    topics no member subscribes to."""

    API_KEY = ApiKey.OFFSET_DELETE
    RESPONSE = OffsetDeleteResponse
    group_id: str
    topics: list[OffsetDeleteTopic]
