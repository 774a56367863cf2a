"""Offset retention (Kafka 2.1+, KIP-211), run every offsets.retention.check.interval.ms.

Which committed offsets expire, offsets.retention.minutes after:

- a group with a protocol (consumers under group management) that is Empty: all its
  offsets, counted from when it became Empty. A group with members keeps them however
  old, so a consumer that commits rarely never loses its position while it is alive.
- a Stable consumer group: offsets of topics no member subscribes to any more, counted
  from their commit.
- a group without a protocol (a client that commits with generation -1 and manages its
  own partitions): each offset, counted from its commit.

Expired offsets get tombstones; an Empty group left with no offsets (and no member id
handed out) is removed, with a tombstone for its record. Times are wall time: the commit
time in each offset, the state time the runtime stored in the group record.
"""

from __future__ import annotations

from broker.group import GroupState
from broker.group_coordinator.appender import AppendedBatch
from broker.group_coordinator.offsets import CONSUMER_PROTOCOL_TYPE, subscribed_topics
from broker.group_coordinator.partition import (
    CommittedOffset,
    LoadedGroup,
    OffsetsPartition,
    is_empty_and_unused,
)
from broker.group_coordinator.runtime import GroupRuntime
from proto.errors import NONE, BrokerResponseError

__all__ = ["expire_offsets", "expired_offsets"]


def expired_offsets(
    entry: LoadedGroup,
    offsets: dict[tuple[str, int], CommittedOffset],
    now_ms: int,
    now_wall_ms: int,
    retention_ms: int,
) -> list[tuple[str, int]]:
    """The offsets of one group that have outlived ``retention_ms`` (see the module)."""
    group = entry.group

    def old(since_wall_ms: int) -> bool:
        return now_wall_ms - since_wall_ms >= retention_ms

    if group.protocol_type is None:
        return sorted(tp for tp, c in offsets.items() if old(c.value.commit_timestamp_ms))
    if group.state is GroupState.EMPTY:
        return sorted(offsets) if old(entry.state_wall_ms(now_ms, now_wall_ms)) else []
    if group.state is GroupState.STABLE and group.protocol_type == CONSUMER_PROTOCOL_TYPE:
        name = group.protocol_name
        subscribed = subscribed_topics(
            [m.metadata(name) for m in group.members.values()] if name is not None else []
        )
        if subscribed is None:
            return []
        return sorted(
            tp
            for tp, c in offsets.items()
            if tp[0] not in subscribed and old(c.value.commit_timestamp_ms)
        )
    return []


def expire_offsets(rt: GroupRuntime) -> int:
    """One retention pass over every loaded partition; the number of offsets expired."""
    retention_ms = rt.config.offsets_retention_minutes * 60_000
    now, now_wall = rt.now_ms(), rt.wall_ms()
    total = 0
    for part in list(rt.partitions.values()):
        if part.loaded:
            total += _expire_partition(rt, part, now, now_wall, retention_ms)
    return total


def _expire_partition(
    rt: GroupRuntime, part: OffsetsPartition, now: int, now_wall: int, retention_ms: int
) -> int:
    expired_total = 0
    for gid, entry in list(part.groups.items()):
        offsets = part.group_offsets(gid)
        expired = expired_offsets(entry, offsets, now, now_wall, retention_ms)
        left = {tp: c for tp, c in offsets.items() if tp not in set(expired)}
        remove = is_empty_and_unused(entry, left)
        if not expired and not remove:
            continue
        try:
            batch = rt.delete_offsets(part, gid, expired, with_group=remove)
        except BrokerResponseError as exc:
            rt.log.warning("offsets_expiry_failed", group=gid, error=str(exc))
            continue  # nothing written: the next pass tries again
        if remove:
            entry.group.delete(now)
            del part.groups[gid]
        rt.log.info(
            "offsets_expired", group=gid, partition=part.partition, offsets=len(expired),
            group_removed=remove,
        )  # fmt: skip
        if batch is not None:
            rt.spawn(_settle, rt, gid, batch)
        expired_total += len(expired)
    return expired_total


async def _settle(rt: GroupRuntime, group_id: str, batch: AppendedBatch) -> None:
    error = await rt.appender.replicated(batch)
    if error != NONE:  # in the leader's log already; a new leader may not have it
        rt.log.warning("offsets_expiry_not_replicated", group=group_id, error=error)
