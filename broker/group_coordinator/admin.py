"""The admin requests of the group coordinator: DescribeGroups (15), ListGroups (16) and
DeleteGroups (42).

Each answers for the groups this broker coordinates; an admin client asks every broker
(ListGroups) or each group's coordinator (DescribeGroups, DeleteGroups). Deleting a group
writes tombstones for its record and every offset in one batch; the group is gone from
memory as soon as they are in the leader's log, and the answer waits for their
replication (a failure there is reported, the deletion stands in the log).
"""

from __future__ import annotations

import trio

from broker.group import GroupState
from broker.group_coordinator.appender import AppendedBatch, commit_error
from broker.group_coordinator.runtime import GroupRuntime
from proto import group_messages as g
from proto.errors import (
    NONE,
    BrokerResponseError,
    CoordinatorLoadInProgressError,
    GroupIdNotFoundError,
    NonEmptyGroupError,
)

__all__ = ["delete_groups", "describe_groups", "list_groups"]


def _describe(rt: GroupRuntime, group_id: str) -> g.DescribedGroup:
    part, error = rt.owner(group_id)
    if part is None:
        return g.DescribedGroup(error, group_id, "", "", "", [])
    entry = part.groups.get(group_id)
    if entry is None:  # Kafka describes an unknown group as Dead, without an error
        return g.DescribedGroup(NONE, group_id, GroupState.DEAD.value, "", "", [])
    d = entry.group.describe()
    return g.DescribedGroup(
        NONE,
        d.group_id,
        d.state,
        d.protocol_type,
        d.protocol,
        [
            g.DescribedGroupMember(
                x.member_id,
                x.group_instance_id,
                x.client_id,
                x.client_host,
                x.metadata,
                x.assignment,
            )
            for x in d.members
        ],
    )


async def describe_groups(
    rt: GroupRuntime, req: g.DescribeGroupsRequest
) -> g.DescribeGroupsResponse:
    return g.DescribeGroupsResponse([_describe(rt, gid) for gid in req.groups])


async def list_groups(rt: GroupRuntime, req: g.ListGroupsRequest) -> g.ListGroupsResponse:
    """Every group of the partitions this broker has loaded, in the states asked for
    (KIP-518: any, when the filter is empty; names compared ignoring case).
    COORDINATOR_LOAD_IN_PROGRESS, with the groups known so far, while one still loads."""
    wanted = {s.lower() for s in req.states_filter}
    error = NONE
    listed: list[g.ListedGroup] = []
    for part in rt.partitions.values():
        if not part.loaded:
            error = CoordinatorLoadInProgressError.code
            continue
        for gid, entry in part.groups.items():
            state = entry.group.state.value
            if not wanted or state.lower() in wanted:
                listed.append(g.ListedGroup(gid, entry.group.protocol_type or "", state))
    listed.sort(key=lambda x: x.group_id)
    return g.ListGroupsResponse(error, listed)


async def delete_groups(rt: GroupRuntime, req: g.DeleteGroupsRequest) -> g.DeleteGroupsResponse:
    """Only an Empty group goes (NON_EMPTY_GROUP), with its offsets; an unknown one is
    GROUP_ID_NOT_FOUND."""
    codes: dict[str, int] = {}
    batches: dict[str, AppendedBatch] = {}
    for gid in req.groups_names:
        if gid in codes:
            continue
        part, error = rt.owner(gid)
        entry = part.groups.get(gid) if part is not None else None
        if part is None:
            codes[gid] = error
        elif entry is None or entry.group.state is GroupState.DEAD:
            codes[gid] = GroupIdNotFoundError.code
        elif entry.group.state is not GroupState.EMPTY:
            codes[gid] = NonEmptyGroupError.code
        else:
            try:
                batch = rt.delete_offsets(
                    part, gid, sorted(part.group_offsets(gid)), with_group=True
                )
            except BrokerResponseError as exc:
                codes[gid] = commit_error(exc.code)  # nothing written: the group stays
                continue
            codes[gid] = entry.group.delete(rt.now_ms())
            del part.groups[gid]
            if batch is not None:
                batches[gid] = batch
            rt.log.info("group_deleted", group=gid, partition=part.partition)

    async def wait(gid: str, batch: AppendedBatch) -> None:
        codes[gid] = commit_error(await rt.appender.replicated(batch))

    async with trio.open_nursery() as nursery:
        for gid, batch in batches.items():
            nursery.start_soon(wait, gid, batch)
    return g.DeleteGroupsResponse([g.DeletableGroupResult(gid, codes[gid]) for gid in codes])
