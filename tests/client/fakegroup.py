"""The fake broker of ``fakebroker`` plus a group coordinator: the broker's own sans-IO
``broker.group.Group`` state machine, driven over real TCP on trio's clock.

FindCoordinator names ``coordinator_node``; group requests sent to another node get
NOT_COORDINATOR. Group records are "stored" at once (no __consumer_offsets); committed
offsets live in a dict. ``move_coordinator`` unloads every group (held requests get
NOT_COORDINATOR) and rebuilds it on the new node from its last stored record, as a new
coordinator does. Tests inject errors per api with ``request_errors`` (whole request) or
``group_errors`` (the error field of the next response of that api).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from broker.group import (
    Group,
    GroupConfig,
    GroupMetadataRecord,
    HeartbeatResult,
    JoinGroupResult,
    LeaveGroupResult,
    MemberIdentity,
    Output,
    Respond,
    Response,
    StoreGroup,
    SyncGroupResult,
)
from broker.group import JoinGroupRequest as GroupJoin
from proto.api import ApiKey, RequestHeader
from proto.api import Response as WireResponse
from proto.errors import NONE, NotCoordinatorError
from proto.group_messages import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupMemberMetadata,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupMemberResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitPartitionResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitTopicResponse,
    OffsetFetchPartitionResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchTopicResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from proto.messages import Request
from tests.client.fakebroker import FakeCluster

GROUP_CONFIG = GroupConfig(group_min_session_timeout_ms=100, group_initial_rebalance_delay_ms=0)
_NOT_COORDINATOR = NotCoordinatorError.code
_GROUP_APIS = (
    JoinGroupRequest,
    SyncGroupRequest,
    HeartbeatRequest,
    LeaveGroupRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
)


def _now() -> int:
    return int(trio.current_time() * 1000)


class GroupCluster(FakeCluster):
    def __init__(self, group_config: GroupConfig = GROUP_CONFIG) -> None:
        super().__init__()
        self.group_config = group_config
        self.coordinator_node = 0
        self.groups: dict[str, Group] = {}
        self.group_records: dict[str, GroupMetadataRecord] = {}
        self.committed: dict[tuple[str, str, int], tuple[int, str | None]] = {}
        self.group_errors: dict[ApiKey, list[int]] = {}
        self._ids = itertools.count()
        self._rids = itertools.count(1)
        self._replies: dict[int, Response] = {}
        self._replied = trio.Event()
        self._timers_changed = trio.Event()

    # -- the group state machines ---------------------------------------------------

    def group(self, group_id: str) -> Group:
        g = self.groups.get(group_id)
        if g is None:
            g = self.groups[group_id] = Group(
                group_id,
                config=self.group_config,
                now_ms=_now(),
                new_member_id=lambda prefix: f"{prefix}-{next(self._ids)}",
            )
        return g

    def _collect(self, group: Group, outputs: list[Output]) -> None:
        while outputs:
            out = outputs.pop(0)
            if isinstance(out, Respond):
                self._replies[out.request_id] = out.response
            else:
                assert isinstance(out, StoreGroup)
                self.group_records[group.group_id] = out.record
                outputs.extend(group.store_completed(out.store_id, NONE, _now()))
        self._replied.set()
        self._replied = trio.Event()
        self._timers_changed.set()

    async def _reply(self, rid: int) -> Response:
        while rid not in self._replies:
            await self._replied.wait()
        return self._replies.pop(rid)

    async def run_timers(self) -> None:
        """Tick each group when its next deadline passes."""
        while True:
            self._timers_changed = trio.Event()
            deadlines = [
                (d, g) for g in self.groups.values() if (d := g.next_deadline_ms()) is not None
            ]
            if deadlines:
                deadline, group = min(deadlines, key=lambda x: x[0])
                if deadline <= _now():
                    self._collect(group, group.tick(_now()))
                    continue
                with trio.move_on_at(deadline / 1000):
                    await self._timers_changed.wait()
            else:
                await self._timers_changed.wait()

    def move_coordinator(self, node: int) -> None:
        """The group's offsets partition moved: unload, and load on ``node``."""
        for gid, group in list(self.groups.items()):
            self._collect(group, group.unload(_now()))
            record = self.group_records.get(gid)
            del self.groups[gid]
            if record is not None:
                self.groups[gid] = Group.from_record(
                    record, config=self.group_config, now_ms=_now()
                )
        self.coordinator_node = node

    # -- serving ----------------------------------------------------------------------

    async def _answer(
        self, node_id: int, header: RequestHeader, req: Request
    ) -> WireResponse | None:
        if isinstance(req, FindCoordinatorRequest):
            host, port = self.addresses[self.coordinator_node]
            return FindCoordinatorResponse(0, self.coordinator_node, host, port)
        if not isinstance(req, _GROUP_APIS):
            return await super()._answer(node_id, header, req)
        injected = self.group_errors.get(req.API_KEY)
        error = injected.pop(0) if injected else NONE
        if node_id != self.coordinator_node:
            error = _NOT_COORDINATOR
        if isinstance(req, OffsetCommitRequest):
            return self._commit(req, error)
        if isinstance(req, OffsetFetchRequest):
            return self._fetch_offsets(req, error)
        if error:
            return _error_response(req, error)
        group, rid = self.group(req.group_id), next(self._rids)
        if isinstance(req, JoinGroupRequest):
            self._collect(group, group.join(rid, _join(req, header), _now()))
            result = await self._reply(rid)
            assert isinstance(result, JoinGroupResult)
            return JoinGroupResponse(
                result.error,
                result.generation_id,
                result.protocol_type,
                result.protocol_name,
                result.leader_id,
                result.member_id,
                [
                    JoinGroupMemberMetadata(m.member_id, m.metadata, m.group_instance_id)
                    for m in result.members
                ],
            )
        if isinstance(req, SyncGroupRequest):
            outputs = group.sync(
                rid,
                member_id=req.member_id,
                generation_id=req.generation_id,
                assignments={a.member_id: a.assignment for a in req.assignments},
                now_ms=_now(),
                group_instance_id=req.group_instance_id,
                protocol_type=req.protocol_type,
                protocol_name=req.protocol_name,
            )
            self._collect(group, outputs)
            sync = await self._reply(rid)
            assert isinstance(sync, SyncGroupResult)
            return SyncGroupResponse(
                sync.error, sync.assignment, sync.protocol_type, sync.protocol_name
            )
        if isinstance(req, HeartbeatRequest):
            outputs = group.heartbeat(
                rid,
                member_id=req.member_id,
                generation_id=req.generation_id,
                now_ms=_now(),
                group_instance_id=req.group_instance_id,
            )
            self._collect(group, outputs)
            beat = await self._reply(rid)
            assert isinstance(beat, HeartbeatResult)
            return HeartbeatResponse(beat.error)
        assert isinstance(req, LeaveGroupRequest)
        who = [MemberIdentity(m.member_id, m.group_instance_id) for m in req.members]
        self._collect(group, group.leave(rid, who, _now()))
        left = await self._reply(rid)
        assert isinstance(left, LeaveGroupResult)
        return LeaveGroupResponse(
            left.error,
            [
                LeaveGroupMemberResponse(m.member_id, m.group_instance_id, m.error)
                for m in left.members
            ],
        )

    def _commit(self, req: OffsetCommitRequest, error: int) -> OffsetCommitResponse:
        if not error:
            error = self.group(req.group_id).validate_commit(
                member_id=req.member_id,
                generation_id=req.generation_id,
                now_ms=_now(),
                group_instance_id=req.group_instance_id,
            )
        topics = []
        for t in req.topics:
            parts = []
            for p in t.partitions:
                if not error:
                    key = (req.group_id, t.name, p.partition)
                    self.committed[key] = (p.committed_offset, p.committed_metadata)
                parts.append(OffsetCommitPartitionResponse(p.partition, error))
            topics.append(OffsetCommitTopicResponse(t.name, parts))
        return OffsetCommitResponse(topics)

    def _fetch_offsets(self, req: OffsetFetchRequest, error: int) -> OffsetFetchResponse:
        if error:
            return OffsetFetchResponse(error, [])
        topics = []
        for t in req.topics or []:
            parts = []
            for p in t.partitions:
                offset, meta = self.committed.get((req.group_id, t.name, p), (-1, None))
                parts.append(OffsetFetchPartitionResponse(p, offset, 0, -1, meta))
            topics.append(OffsetFetchTopicResponse(t.name, parts))
        return OffsetFetchResponse(0, topics)


def _join(req: JoinGroupRequest, header: RequestHeader) -> GroupJoin:
    return GroupJoin(
        req.member_id,
        req.group_instance_id,
        header.client_id or "",
        "127.0.0.1",
        req.protocol_type,
        tuple((p.name, p.metadata) for p in req.protocols),
        req.session_timeout_ms,
        req.rebalance_timeout_ms,
    )


def _error_response(req: Request, error: int) -> WireResponse:
    if isinstance(req, JoinGroupRequest):
        return JoinGroupResponse(error, -1, None, None, "", req.member_id, [])
    if isinstance(req, SyncGroupRequest):
        return SyncGroupResponse(error, b"")
    if isinstance(req, HeartbeatRequest):
        return HeartbeatResponse(error)
    assert isinstance(req, LeaveGroupRequest)
    return LeaveGroupResponse(error, [])


@asynccontextmanager
async def running_group_cluster(
    brokers: int = 1, topics: dict[str, int] | None = None, config: GroupConfig = GROUP_CONFIG
) -> AsyncIterator[GroupCluster]:
    cluster = GroupCluster(config)
    async with trio.open_nursery() as nursery:
        for node_id in range(brokers):
            await nursery.start(cluster.serve_broker, node_id)
        for name, n in (topics or {}).items():
            cluster.create_topic(name, n)
        nursery.start_soon(cluster.run_timers)
        yield cluster
        nursery.cancel_scope.cancel()
