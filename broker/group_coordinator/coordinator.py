"""The group coordinator's request entry points (Kafka's GroupCoordinator).

FindCoordinator names the leader of the group's ``__consumer_offsets`` partition (creating
the topic on first use); JoinGroup, SyncGroup, Heartbeat and LeaveGroup check that this
broker coordinates the group, turn the wire request into the state machine's input
(``broker.group``), hold it until the group answers and turn the answer back into the wire
response. Offsets (OffsetCommit, OffsetFetch, OffsetDelete) are ``offsets.py``; the admin
requests (DescribeGroups, ListGroups, DeleteGroups) are ``admin.py``.

The ``Broker`` owns one ``GroupCoordinator`` for its whole life (groups outlive coordinator
sessions); each session's ``RequestHandler`` registers ``handlers()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from broker.config import BrokerConfig
from broker.group import (
    HeartbeatResult,
    JoinGroupRequest,
    JoinGroupResult,
    LeaveGroupResult,
    MemberIdentity,
    SyncGroupResult,
)
from broker.group.offsets_records import OFFSETS_TOPIC, partition_for
from broker.group_coordinator import admin, offsets
from broker.group_coordinator.context import client_host, client_id
from broker.group_coordinator.partition import LoadedGroup, OffsetsPartition
from broker.group_coordinator.retention import expire_offsets
from broker.group_coordinator.runtime import GroupRuntime
from broker.group_coordinator.topic import OffsetsTopicCreator
from broker.listeners import CURRENT_LISTENER
from broker.metadata_cache import MetadataCache
from broker.purgatory import FetchPurgatory
from broker.replica_manager import ReplicaManager
from broker.topic_admin import TopicAdmin, view_with
from proto import group_messages as g
from proto import messages as m
from proto.errors import (
    NONE,
    CoordinatorNotAvailableError,
    InvalidGroupIdError,
    InvalidRequestError,
    MinibrokerError,
    UnknownMemberIdError,
)

__all__ = ["GroupCoordinator"]

log = structlog.get_logger("broker.group_coordinator")

Handler = Callable[[Any], Awaitable[m.Response | None]]

_UNKNOWN_MEMBER = UnknownMemberIdError.code


class GroupCoordinator:
    def __init__(
        self,
        config: BrokerConfig,
        replicas: ReplicaManager,
        purgatory: FetchPurgatory,
        *,
        cache: Callable[[], MetadataCache],
        topic_admin: Callable[[], TopicAdmin],
    ) -> None:
        self.config = config
        self.runtime = GroupRuntime(config, replicas, purgatory)
        self._cache = cache
        self._topic = OffsetsTopicCreator(config, topic_admin)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the runtime (loads, appends, timers) and the offset retention task."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.runtime.run)
            nursery.start_soon(self._retention_loop)
            task_status.started()

    async def _retention_loop(self) -> None:
        interval = self.config.offsets_retention_check_interval_ms / 1000
        while True:
            await trio.sleep(interval)
            expire_offsets(self.runtime)

    def roles_changed(self) -> None:
        """The replica manager's leaderships changed: load and unload partitions."""
        self.runtime.roles_changed()

    def handlers(self) -> dict[type[m.Request], Handler]:
        rt = self.runtime
        return {
            g.FindCoordinatorRequest: self.find_coordinator,
            g.JoinGroupRequest: self.join_group,
            g.SyncGroupRequest: self.sync_group,
            g.HeartbeatRequest: self.heartbeat,
            g.LeaveGroupRequest: self.leave_group,
            g.OffsetCommitRequest: lambda req: offsets.offset_commit(rt, self._cache(), req),
            g.OffsetFetchRequest: lambda req: offsets.offset_fetch(rt, req),
            g.OffsetDeleteRequest: lambda req: offsets.offset_delete(rt, req),
            g.DescribeGroupsRequest: lambda req: admin.describe_groups(rt, req),
            g.ListGroupsRequest: lambda req: admin.list_groups(rt, req),
            g.DeleteGroupsRequest: lambda req: admin.delete_groups(rt, req),
        }

    # --- FindCoordinator ------------------------------------------------------------

    async def find_coordinator(self, req: g.FindCoordinatorRequest) -> g.FindCoordinatorResponse:
        if req.key_type != g.COORDINATOR_KEY_GROUP:
            return _no_coordinator(
                InvalidRequestError.code,
                f"coordinator key type {req.key_type} is not served (transactions are not "
                "supported); use key type 0, a group",
            )
        view = await view_with(self._cache(), [OFFSETS_TOPIC])
        topic = view.topics.get(OFFSETS_TOPIC)
        if topic is None or not topic.partitions:
            try:
                await self._topic.ensure()
            except MinibrokerError as exc:
                log.warning("offsets_topic_not_created", error=str(exc))
            return _no_coordinator(
                CoordinatorNotAvailableError.code, f"{OFFSETS_TOPIC} is being created"
            )
        p = partition_for(req.key, len(topic.partitions))
        info = topic.partitions.get(p)
        leader = info.state.leader if info is not None and info.state is not None else -1
        # The leader's address on the listener this request came in on (as Metadata).
        listener = CURRENT_LISTENER.get(None) or self.config.listener_plan.inter_broker
        registration = view.brokers.get(leader)
        endpoint = registration.endpoint(listener) if registration is not None else None
        if endpoint is None:
            return _no_coordinator(
                CoordinatorNotAvailableError.code, f"{OFFSETS_TOPIC}-{p} has no reachable leader"
            )
        return g.FindCoordinatorResponse(NONE, leader, endpoint.host, endpoint.port)

    # --- membership -----------------------------------------------------------------

    def _group(self, group_id: str) -> tuple[OffsetsPartition | None, LoadedGroup | None, int]:
        """The partition and group for a membership request, or the error to answer."""
        if not group_id:
            return None, None, InvalidGroupIdError.code
        part, error = self.runtime.owner(group_id)
        if part is None:
            return None, None, error
        return part, part.groups.get(group_id), NONE

    async def join_group(self, req: g.JoinGroupRequest) -> g.JoinGroupResponse:
        part, entry, error = self._group(req.group_id)
        if part is None:
            return _join_response(JoinGroupResult(error, req.member_id))
        if entry is None:
            if req.member_id:  # Kafka: a known member id for a group that is not here
                return _join_response(JoinGroupResult(_UNKNOWN_MEMBER, req.member_id))
            entry = self.runtime.new_group(part, req.group_id)
        join = JoinGroupRequest(
            member_id=req.member_id,
            group_instance_id=req.group_instance_id,
            client_id=client_id(),
            client_host=client_host(),
            protocol_type=req.protocol_type,
            protocols=tuple((p.name, p.metadata) for p in req.protocols),
            session_timeout_ms=req.session_timeout_ms,
            rebalance_timeout_ms=req.rebalance_timeout_ms,
        )
        group = entry.group
        result = await self.runtime.call(
            part, entry, lambda rid: group.join(rid, join, self.runtime.now_ms())
        )
        self.runtime.forget_if_unused(part, entry)
        assert isinstance(result, JoinGroupResult)
        return _join_response(result)

    async def sync_group(self, req: g.SyncGroupRequest) -> g.SyncGroupResponse:
        part, entry, error = self._group(req.group_id)
        if part is None or entry is None:
            return g.SyncGroupResponse(error or _UNKNOWN_MEMBER, b"")
        assignments = {a.member_id: a.assignment for a in req.assignments}
        group = entry.group
        result = await self.runtime.call(
            part,
            entry,
            lambda rid: group.sync(
                rid,
                member_id=req.member_id,
                generation_id=req.generation_id,
                assignments=assignments,
                now_ms=self.runtime.now_ms(),
                group_instance_id=req.group_instance_id,
                protocol_type=req.protocol_type,
                protocol_name=req.protocol_name,
            ),
        )
        assert isinstance(result, SyncGroupResult)
        return g.SyncGroupResponse(
            result.error, result.assignment, result.protocol_type, result.protocol_name
        )

    async def heartbeat(self, req: g.HeartbeatRequest) -> g.HeartbeatResponse:
        part, entry, error = self._group(req.group_id)
        if part is None or entry is None:
            return g.HeartbeatResponse(error or _UNKNOWN_MEMBER)
        group = entry.group
        result = await self.runtime.call(
            part,
            entry,
            lambda rid: group.heartbeat(
                rid,
                member_id=req.member_id,
                generation_id=req.generation_id,
                now_ms=self.runtime.now_ms(),
                group_instance_id=req.group_instance_id,
            ),
        )
        assert isinstance(result, HeartbeatResult)
        return g.HeartbeatResponse(result.error)

    async def leave_group(self, req: g.LeaveGroupRequest) -> g.LeaveGroupResponse:
        part, entry, error = self._group(req.group_id)
        if part is None:
            return g.LeaveGroupResponse(error, [])
        if entry is None:  # Kafka: each member is unknown, the request itself is fine
            return g.LeaveGroupResponse(
                NONE,
                [
                    g.LeaveGroupMemberResponse(x.member_id, x.group_instance_id, _UNKNOWN_MEMBER)
                    for x in req.members
                ],
            )
        who = [MemberIdentity(x.member_id, x.group_instance_id) for x in req.members]
        group = entry.group
        result = await self.runtime.call(
            part, entry, lambda rid: group.leave(rid, who, self.runtime.now_ms())
        )
        assert isinstance(result, LeaveGroupResult)
        return g.LeaveGroupResponse(
            result.error,
            [
                g.LeaveGroupMemberResponse(x.member_id, x.group_instance_id, x.error)
                for x in result.members
            ],
        )


def _no_coordinator(code: int, message: str) -> g.FindCoordinatorResponse:
    return g.FindCoordinatorResponse(code, -1, "", -1, message)


def _join_response(result: JoinGroupResult) -> g.JoinGroupResponse:
    return g.JoinGroupResponse(
        result.error,
        result.generation_id,
        result.protocol_type,
        result.protocol_name,
        result.leader_id,
        result.member_id,
        [
            g.JoinGroupMemberMetadata(x.member_id, x.metadata, x.group_instance_id)
            for x in result.members
        ],
    )
