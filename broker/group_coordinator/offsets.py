"""Committed offsets: OffsetCommit (8), OffsetFetch (9) and OffsetDelete (47).

A commit is acknowledged like a produce with acks=all: all of a request's offsets go to
the group's ``__consumer_offsets`` partition in one batch, and only once every ISR member
has it does the cache change and the client hear success. OffsetFetch answers from the
cache, so it never shows a commit that could still be lost. Deletions (OffsetDelete)
write tombstones; the cache drops the offsets as the tombstones enter the leader's log
and the response waits for their replication.

``require_stable`` (KIP-447) is accepted and ignored: it waits out pending transactional
commits, and minibroker has no transactions, so every offset in the cache is stable.
"""

from __future__ import annotations

from broker.group import GroupState
from broker.group.offsets_records import OffsetCommitValue, offset_commit_record
from broker.group_coordinator.appender import AppendedBatch, Record, commit_error
from broker.group_coordinator.partition import CommittedOffset, LoadedGroup, OffsetsPartition
from broker.group_coordinator.runtime import GroupRuntime
from broker.metadata_cache import ClusterView, MetadataCache
from broker.topic_admin import view_with
from proto import group_messages as g
from proto.codec import unpackb
from proto.errors import (
    NONE,
    BrokerResponseError,
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    IllegalGenerationError,
    NonEmptyGroupError,
    OffsetMetadataTooLargeError,
    RemoteProtocolError,
    UnknownTopicOrPartitionError,
)

__all__ = ["offset_commit", "offset_delete", "offset_fetch", "subscribed_topics"]

CONSUMER_PROTOCOL_TYPE = "consumer"


# --- OffsetCommit -----------------------------------------------------------------------


def _commit_response(
    req: g.OffsetCommitRequest, codes: dict[tuple[str, int], int]
) -> g.OffsetCommitResponse:
    return g.OffsetCommitResponse(
        [
            g.OffsetCommitTopicResponse(
                t.name,
                [
                    g.OffsetCommitPartitionResponse(p.partition, codes[(t.name, p.partition)])
                    for p in t.partitions
                ],
            )
            for t in req.topics
        ]
    )


def _exists(view: ClusterView, topic: str, partition: int) -> bool:
    return view.partition(topic, partition) is not None


async def offset_commit(
    rt: GroupRuntime, cache: MetadataCache, req: g.OffsetCommitRequest
) -> g.OffsetCommitResponse:
    every = [(t.name, p.partition) for t in req.topics for p in t.partitions]
    # The only await before the append: ownership and membership are checked after it.
    view = await view_with(cache, sorted({t.name for t in req.topics}))
    part, error = rt.owner(req.group_id)
    if part is None:
        return _commit_response(req, dict.fromkeys(every, error))
    entry = part.groups.get(req.group_id)
    if entry is None:
        if req.generation_id >= 0:
            # Kafka: a commit from a generation of a group this coordinator does not know.
            return _commit_response(req, dict.fromkeys(every, IllegalGenerationError.code))
        entry = rt.new_group(part, req.group_id)  # a "simple" consumer's group, Empty
    error = entry.group.validate_commit(
        member_id=req.member_id,
        generation_id=req.generation_id,
        now_ms=rt.now_ms(),
        group_instance_id=req.group_instance_id,
    )
    rt.timers.schedule(part, entry)  # a valid commit is a heartbeat: its deadline moved
    if error != NONE:
        rt.forget_if_unused(part, entry)
        return _commit_response(req, dict.fromkeys(every, error))
    codes: dict[tuple[str, int], int] = {}
    items: list[tuple[tuple[str, int], OffsetCommitValue]] = []
    now_wall = rt.wall_ms()
    limit = rt.config.offset_metadata_max_bytes
    for t in req.topics:
        for p in t.partitions:
            tp = (t.name, p.partition)
            metadata = p.committed_metadata or ""
            if len(metadata.encode()) > limit:
                codes[tp] = OffsetMetadataTooLargeError.code
            elif not _exists(view, t.name, p.partition):
                codes[tp] = UnknownTopicOrPartitionError.code
            else:
                value = OffsetCommitValue(
                    p.committed_offset, p.committed_leader_epoch, metadata, now_wall
                )
                items.append((tp, value))
    if items:
        outcome = await _append_commits(rt, part, entry, items)
        codes.update(dict.fromkeys((tp for tp, _ in items), outcome))
    rt.forget_if_unused(part, entry)
    return _commit_response(req, codes)


async def _append_commits(
    rt: GroupRuntime,
    part: OffsetsPartition,
    entry: LoadedGroup,
    items: list[tuple[tuple[str, int], OffsetCommitValue]],
) -> int:
    """Append the commits in one batch, wait for acks=all, then update the cache; the
    client's error code (Kafka's mapping)."""
    group_id = entry.group.group_id
    records: list[Record] = [offset_commit_record(group_id, t, p, v) for (t, p), v in items]
    try:
        batch = rt.appender.append(part.partition, part.leader_epoch, records)
    except BrokerResponseError as exc:
        return commit_error(exc.code)
    part.pending_commits += 1
    try:
        error = await rt.appender.replicated(batch)
        # A group deleted (or the partition moved) meanwhile keeps what the log says.
        current = rt.partitions.get(part.partition) is part and part.groups.get(group_id) is entry
        if error == NONE and current:
            for i, (tp, value) in enumerate(items):
                part.set_offset(group_id, tp, CommittedOffset(value, batch.first_offset + i))
    finally:
        part.commit_settled()
    return commit_error(error)


# --- OffsetFetch ------------------------------------------------------------------------


def _fetched(partition: int, committed: CommittedOffset | None) -> g.OffsetFetchPartitionResponse:
    if committed is None:
        return g.OffsetFetchPartitionResponse(partition, g.NO_OFFSET, NONE, g.NO_LEADER_EPOCH, "")
    v = committed.value
    return g.OffsetFetchPartitionResponse(partition, v.offset, NONE, v.leader_epoch, v.metadata)


async def offset_fetch(rt: GroupRuntime, req: g.OffsetFetchRequest) -> g.OffsetFetchResponse:
    """The committed offsets of the group (every one when ``topics`` is None); NO_OFFSET
    (-1) for a partition without one, and for every partition of an unknown group."""
    part, error = rt.owner(req.group_id)
    if part is None:
        return g.OffsetFetchResponse(error, [])
    committed = part.group_offsets(req.group_id)
    if req.topics is None:
        by_topic: dict[str, list[int]] = {}
        for topic, p in sorted(committed):
            by_topic.setdefault(topic, []).append(p)
        wanted = [g.OffsetFetchTopic(t, ps) for t, ps in by_topic.items()]
    else:
        wanted = req.topics
    return g.OffsetFetchResponse(
        NONE,
        [
            g.OffsetFetchTopicResponse(
                t.name, [_fetched(p, committed.get((t.name, p))) for p in t.partitions]
            )
            for t in wanted
        ],
    )


# --- OffsetDelete -----------------------------------------------------------------------


def subscribed_topics(protocols: list[bytes]) -> set[str] | None:
    """The topics named by consumer subscriptions (``[version, topics, ...]``, the
    consumer's embedded protocol, client/assignors.py); None if one does not parse, so
    the caller assumes the worst."""
    topics: set[str] = set()
    for metadata in protocols:
        try:
            fields = unpackb(metadata)
        except RemoteProtocolError:
            return None
        if type(fields) is not list or len(fields) < 2 or type(fields[1]) is not list:
            return None
        if not all(type(t) is str for t in fields[1]):
            return None
        topics.update(fields[1])
    return topics


async def offset_delete(rt: GroupRuntime, req: g.OffsetDeleteRequest) -> g.OffsetDeleteResponse:
    """KIP-496: delete a group's offsets. An Empty group may lose any; a consumer group
    with members only those of topics no member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC);
    another active group none (NON_EMPTY_GROUP)."""
    part, error = rt.owner(req.group_id)
    if part is None:
        return g.OffsetDeleteResponse(error, [])
    entry = part.groups.get(req.group_id)
    if entry is None or entry.group.state is GroupState.DEAD:
        return g.OffsetDeleteResponse(GroupIdNotFoundError.code, [])
    group = entry.group
    subscribed: set[str] | None = set()
    if group.state is not GroupState.EMPTY:
        if group.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return g.OffsetDeleteResponse(NonEmptyGroupError.code, [])
        subscribed = subscribed_topics(
            [meta for member in group.members.values() for _, meta in member.protocols]
        )
    codes: dict[tuple[str, int], int] = {}
    for t in req.topics:
        for p in t.partitions:
            busy = subscribed is None or t.name in subscribed
            codes[(t.name, p.partition)] = GroupSubscribedToTopicError.code if busy else NONE
    committed = part.group_offsets(req.group_id)
    doomed = [tp for tp, code in codes.items() if code == NONE and tp in committed]
    batch: AppendedBatch | None = None
    try:
        batch = rt.delete_offsets(part, req.group_id, doomed)
    except BrokerResponseError as exc:
        codes.update(dict.fromkeys(doomed, commit_error(exc.code)))
    if batch is not None:
        outcome = commit_error(await rt.appender.replicated(batch))
        codes.update(dict.fromkeys(doomed, outcome))
    return g.OffsetDeleteResponse(
        NONE,
        [
            g.OffsetDeleteTopicResponse(
                t.name,
                [
                    g.OffsetDeletePartitionResponse(p.partition, codes[(t.name, p.partition)])
                    for p in t.partitions
                ],
            )
            for t in req.topics
        ],
    )
