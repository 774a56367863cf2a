"""Consumer-group administration for the admin client: list, describe (with lag), list and
alter committed offsets, delete. ``AsyncAdmin`` inherits these methods.

A group lives on its coordinator (the leader of its ``__consumer_offsets`` partition), so
each call first asks any broker FindCoordinator and then talks to that broker. The
coordinator may be moving or loading its partition: COORDINATOR_NOT_AVAILABLE,
COORDINATOR_LOAD_IN_PROGRESS and NOT_COORDINATOR (and a lost connection) make the call
look the coordinator up again after ``retry_backoff_ms``, until ``request_timeout_ms``
has passed; then the last of those errors is raised. ListGroups goes to every broker,
since each knows only the groups it coordinates; like Kafka's admin, a broker that cannot
answer fails the listing rather than silently dropping its groups.

Log start/end offsets and offsets by timestamp come from the partitions' leaders
(``list_log_offsets``), which the reset-offsets tool also uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import trio

from client.assignors import CONSUMER_PROTOCOL_TYPE, decode_assignment
from client.cluster import Cluster, ConnectionConfig
from client.errors import (
    BrokerResponseError,
    ClientError,
    ConfigurationError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    MinibrokerError,
    NotCoordinatorError,
    UnknownMemberIdError,
    for_code,
)
from client.log_offsets import by_topic, list_log_offsets
from client.types import (
    BrokerDescription,
    ConsumerGroupDescription,
    ConsumerGroupListing,
    GroupMemberDescription,
    GroupPartitionOffsets,
    OffsetAndMetadata,
    TopicPartition,
)
from proto.errors import GroupIdNotFoundError, InvalidGroupIdError, NonEmptyGroupError
from proto.group_messages import (
    NO_LEADER_EPOCH,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitTopic,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchTopic,
)
from proto.messages import (
    LATEST_TIMESTAMP,
    Request,
    Response,
)

__all__ = ["ConsumerGroupAdmin"]

DEAD = "Dead"  # Kafka's state for a group its coordinator does not know
_COORDINATOR_MOVED = frozenset(
    {
        CoordinatorLoadInProgressError.code,
        CoordinatorNotAvailableError.code,
        NotCoordinatorError.code,
    }
)


# Kafka's exception messages for the per-group errors of DeleteGroups.
_DELETE_REASONS = {
    NonEmptyGroupError.code: "The group is not empty.",
    GroupIdNotFoundError.code: "The group id does not exist.",
}


def _check_group_id(group_id: str) -> None:
    if not isinstance(group_id, str) or not group_id:
        raise InvalidGroupIdError(f"group id must be a non-empty string, not {group_id!r}")


class ConsumerGroupAdmin:
    """The consumer-group half of ``AsyncAdmin`` (which provides ``cluster`` and
    ``config``)."""

    config: ConnectionConfig

    @property
    def cluster(self) -> Cluster:
        raise NotImplementedError

    # --- coordinator discovery ----------------------------------------------------------

    async def _find_coordinator(self, group_id: str) -> BrokerDescription:
        """One FindCoordinator; a coordinator error is raised for the caller's retry loop."""
        cluster = self.cluster
        response = await cluster.request_any(FindCoordinatorRequest(group_id))
        assert isinstance(response, FindCoordinatorResponse)
        if response.error_code:
            raise for_code(response.error_code)(
                f"coordinator of group {group_id!r}: {response.error_message or 'not found'}"
            )
        if response.node_id not in cluster.brokers:
            await cluster.fetch_metadata([])  # a broker that joined since our last look
            if response.node_id not in cluster.brokers:
                raise CoordinatorNotAvailableError(
                    f"coordinator {response.node_id} of group {group_id!r} is not in the metadata"
                )
        return BrokerDescription(response.node_id, response.host, response.port)

    async def _to_coordinator(
        self, group_id: str, request: Request, error_of: Callable[[Response], int]
    ) -> tuple[BrokerDescription, Response]:
        """Send ``request`` to the group's coordinator, looking it up again while it moves.

        ``error_of`` picks the group-level error code out of the response; the response is
        returned as it is for any code but the coordinator-moved ones."""
        cfg = self.config
        last: MinibrokerError | None = None
        with trio.move_on_after(cfg.request_timeout_ms / 1000):
            while True:
                try:
                    coordinator = await self._find_coordinator(group_id)
                    response = await self.cluster.request_node(coordinator.node_id, request)
                except (ClientError, BrokerResponseError) as exc:
                    retry = isinstance(exc, ClientError) or exc.code in _COORDINATOR_MOVED
                    if not (retry and exc.retriable):
                        raise
                    last = exc
                else:
                    code = error_of(response)
                    if code not in _COORDINATOR_MOVED:
                        return coordinator, response
                    last = for_code(code)(f"group {group_id!r} at broker {coordinator.node_id}")
                await trio.sleep(cfg.retry_backoff_ms / 1000)
        assert last is not None
        if isinstance(last, BrokerResponseError):
            raise type(last)(
                f"{last.message}; still failing after {cfg.request_timeout_ms} ms"
            ) from last
        raise last

    # --- listing ------------------------------------------------------------------------

    async def list_consumer_groups(
        self, states: Iterable[str] | None = None
    ) -> list[ConsumerGroupListing]:
        """Every consumer group of the cluster (protocol type "consumer", or "" for a
        group that only commits offsets), sorted by id; ``states`` ("Stable", "Empty",
        ... any case) keeps only groups in those states."""
        wanted = sorted({s.lower() for s in states}) if states is not None else []
        cluster = self.cluster
        md = await cluster.fetch_metadata([])
        found: dict[str, ConsumerGroupListing] = {}
        for broker in sorted(md.brokers, key=lambda b: b.node_id):
            for g in await self._list_groups_at(broker.node_id, wanted):
                if g.protocol_type not in (CONSUMER_PROTOCOL_TYPE, ""):
                    continue
                if wanted and g.group_state.lower() not in wanted:
                    continue
                found[g.group_id] = ConsumerGroupListing(g.group_id, g.group_state, g.protocol_type)
        return [found[g] for g in sorted(found)]

    async def _list_groups_at(self, node_id: int, states: list[str]) -> list[ListedGroup]:
        cfg = self.config
        last: BrokerResponseError | None = None
        with trio.move_on_after(cfg.request_timeout_ms / 1000):
            while True:
                response = await self.cluster.request_node(node_id, ListGroupsRequest(states))
                assert isinstance(response, ListGroupsResponse)
                if response.error_code == 0:
                    return response.groups
                last = for_code(response.error_code)(f"list groups at broker {node_id}")
                if response.error_code not in _COORDINATOR_MOVED:
                    raise last
                await trio.sleep(cfg.retry_backoff_ms / 1000)
        assert last is not None
        raise last

    # --- describing ---------------------------------------------------------------------

    async def describe_consumer_groups(
        self, group_ids: Sequence[str]
    ) -> list[ConsumerGroupDescription]:
        """State, members and their assignments, and per partition (assigned or
        committed) the committed offset, log end offset and lag, in ``group_ids`` order.
        A group that does not exist is described with state "Dead" (as Kafka does)."""
        out = []
        for group_id in dict.fromkeys(group_ids):
            _check_group_id(group_id)
            out.append(await self._describe_group(group_id))
        return out

    async def _describe_group(self, group_id: str) -> ConsumerGroupDescription:
        def group_error(r: Response) -> int:
            assert isinstance(r, DescribeGroupsResponse)
            return r.groups[0].error_code if r.groups else 0

        coordinator, response = await self._to_coordinator(
            group_id, DescribeGroupsRequest([group_id]), group_error
        )
        assert isinstance(response, DescribeGroupsResponse)
        group = next((g for g in response.groups if g.group_id == group_id), None)
        if group is None or group.error_code == GroupIdNotFoundError.code:
            return ConsumerGroupDescription(group_id, DEAD, "", "", coordinator)
        if group.error_code:
            raise for_code(group.error_code)(f"describe group {group_id!r}")
        if group.group_state == DEAD:
            return ConsumerGroupDescription(group_id, DEAD, group.protocol_type, "", coordinator)
        members = _members(group)
        committed = await self.list_consumer_group_offsets(group_id)
        owner = {tp: m.member_id for m in members for tp in m.assignment}
        tps = sorted(owner.keys() | committed.keys())
        ends = await list_log_offsets(self.cluster, dict.fromkeys(tps, LATEST_TIMESTAMP))
        offsets = []
        for tp in tps:
            c = committed.get(tp)
            end = ends.get(tp)
            lag = end[0] - c.offset if c is not None and end is not None else None
            offsets.append(
                GroupPartitionOffsets(
                    tp,
                    None if c is None else c.offset,
                    None if end is None else end[0],
                    lag,
                    owner.get(tp),
                )
            )
        return ConsumerGroupDescription(
            group_id,
            group.group_state,
            group.protocol_type,
            group.protocol_data,
            coordinator,
            members,
            offsets,
        )

    # --- offsets ------------------------------------------------------------------------

    async def list_consumer_group_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets (of ``partitions``, or all); partitions without
        a committed offset are left out."""
        _check_group_id(group_id)
        topics = None
        if partitions is not None:
            topics = [OffsetFetchTopic(t, ps) for t, ps in sorted(by_topic(partitions).items())]

        def group_error(r: Response) -> int:
            assert isinstance(r, OffsetFetchResponse)
            return r.error_code

        _, response = await self._to_coordinator(
            group_id, OffsetFetchRequest(group_id, topics), group_error
        )
        assert isinstance(response, OffsetFetchResponse)
        if response.error_code:
            raise for_code(response.error_code)(f"fetch offsets of group {group_id!r}")
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition)
                if p.error_code:
                    raise for_code(p.error_code)(f"fetch offset of group {group_id!r} for {tp}")
                if p.committed_offset >= 0:
                    epoch = p.committed_leader_epoch
                    out[tp] = OffsetAndMetadata(
                        p.committed_offset,
                        p.metadata or "",
                        None if epoch == NO_LEADER_EPOCH else epoch,
                    )
        return out

    async def alter_consumer_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Commit ``offsets`` for the group from outside it (generation -1), as
        kafka-consumer-groups --reset-offsets does. Only an inactive group (Empty, or not
        existing yet) accepts it: a group with members answers UNKNOWN_MEMBER_ID, raised
        as UnknownMemberIdError saying so. Acknowledged once replicated."""
        _check_group_id(group_id)
        per_topic: dict[str, list[OffsetCommitPartition]] = {}
        for tp, om in sorted(offsets.items()):
            tp = TopicPartition(*tp)
            if not isinstance(om, OffsetAndMetadata) or om.offset < 0:
                raise ConfigurationError(
                    f"offset for {tp.topic}-{tp.partition} must be an OffsetAndMetadata >= 0"
                )
            epoch = NO_LEADER_EPOCH if om.leader_epoch is None else om.leader_epoch
            per_topic.setdefault(tp.topic, []).append(
                OffsetCommitPartition(tp.partition, om.offset, epoch, om.metadata)
            )
        if not per_topic:
            return
        request = OffsetCommitRequest(
            group_id, [OffsetCommitTopic(t, ps) for t, ps in per_topic.items()]
        )

        def group_error(r: Response) -> int:
            assert isinstance(r, OffsetCommitResponse)
            codes = [p.error_code for t in r.topics for p in t.partitions]
            return next((c for c in codes if c in _COORDINATOR_MOVED), 0)

        _, response = await self._to_coordinator(group_id, request, group_error)
        assert isinstance(response, OffsetCommitResponse)
        failed = [
            (TopicPartition(t.name, p.partition), p.error_code)
            for t in response.topics
            for p in t.partitions
            if p.error_code
        ]
        if not failed:
            return
        if any(code == UnknownMemberIdError.code for _, code in failed):
            raise UnknownMemberIdError(
                f"group {group_id!r} has active members: its offsets can only be altered "
                "while it is inactive (Empty); stop its consumers first"
            )
        tp, code = failed[0]
        raise for_code(code)(f"commit offset of group {group_id!r} for {tp}")

    # --- deleting -----------------------------------------------------------------------

    async def delete_consumer_groups(
        self, group_ids: Sequence[str]
    ) -> dict[str, BrokerResponseError | None]:
        """Delete each group and its offsets. Per group: None when deleted, else the
        error: NonEmptyGroupError (it has members), GroupIdNotFoundError. Errors that
        are not the group's own (no coordinator in time) are raised."""
        out: dict[str, BrokerResponseError | None] = {}
        for group_id in dict.fromkeys(group_ids):
            _check_group_id(group_id)

            def group_error(r: Response, group_id: str = group_id) -> int:
                assert isinstance(r, DeleteGroupsResponse)
                return next((x.error_code for x in r.results if x.group_id == group_id), 0)

            _, response = await self._to_coordinator(
                group_id, DeleteGroupsRequest([group_id]), group_error
            )
            code = group_error(response)
            if code:
                reason = _DELETE_REASONS.get(code, "could not be deleted")
                out[group_id] = for_code(code)(f"group {group_id!r}: {reason}")
            else:
                out[group_id] = None
        return out


def _members(group: DescribedGroup) -> list[GroupMemberDescription]:
    consumer = group.protocol_type == CONSUMER_PROTOCOL_TYPE
    return [
        GroupMemberDescription(
            m.member_id,
            m.group_instance_id,
            m.client_id,
            m.client_host,
            decode_assignment(m.member_assignment).partitions if consumer else (),
        )
        for m in group.members
    ]
