"""Consumer-group membership on the group coordinator, sans-IO.

``state.Group`` is one group's state machine (Kafka's GroupCoordinator logic); ``events``
holds what it takes and gives; ``members`` a member's record and the protocol vote;
``records`` what is persisted to ``__consumer_offsets`` and what DescribeGroups shows.
The runtime that feeds requests and time in, and writes records out, lives elsewhere.
"""

from broker.group.events import (
    GroupConfig,
    HeartbeatResult,
    JoinGroupMember,
    JoinGroupRequest,
    JoinGroupResult,
    LeaveGroupResult,
    MemberIdentity,
    MemberLeaveResult,
    Output,
    Respond,
    Response,
    StoreGroup,
    SyncGroupResult,
)
from broker.group.members import NEW_MEMBER_JOIN_TIMEOUT_MS, Member
from broker.group.membership import Group
from broker.group.records import (
    GroupDescription,
    GroupMetadataRecord,
    MemberDescription,
    MemberRecord,
)
from broker.group.state import TRANSITIONS, GroupState, GroupStateMachine, IllegalGroupTransition

__all__ = [
    "NEW_MEMBER_JOIN_TIMEOUT_MS",
    "TRANSITIONS",
    "Group",
    "GroupConfig",
    "GroupDescription",
    "GroupMetadataRecord",
    "GroupState",
    "GroupStateMachine",
    "HeartbeatResult",
    "IllegalGroupTransition",
    "JoinGroupMember",
    "JoinGroupRequest",
    "JoinGroupResult",
    "LeaveGroupResult",
    "Member",
    "MemberDescription",
    "MemberIdentity",
    "MemberLeaveResult",
    "MemberRecord",
    "Output",
    "Respond",
    "Response",
    "StoreGroup",
    "SyncGroupResult",
]
