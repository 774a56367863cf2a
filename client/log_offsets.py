"""Log start, log end and offset-by-time lookups: ListOffsets to each partition's leader,
retried while leadership moves.

The consumer's positions (seek_to_beginning/end, offsets_for_times, auto_offset_reset)
use it with ``strict``: a partition that does not exist is an error. The admin's lag (log
end minus committed) and the reset-offsets planner use it without: a partition that no
longer exists (its topic was deleted after a group committed to it) is left out, so
``describe`` still shows the rest of the group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import trio

from client.cluster import Cluster
from client.errors import (
    BrokerResponseError,
    ClientError,
    MinibrokerError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    for_code,
)
from client.types import TopicPartition
from proto.messages import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
)

__all__ = ["by_topic", "list_log_offsets"]


def by_topic(tps: Iterable[TopicPartition]) -> dict[str, list[int]]:
    """Partition numbers per topic, sorted and without duplicates."""
    out: dict[str, list[int]] = {}
    for tp in tps:
        out.setdefault(tp.topic, []).append(tp.partition)
    return {t: sorted(set(ps)) for t, ps in out.items()}


async def list_log_offsets(
    cluster: Cluster, timestamps: Mapping[TopicPartition, int], *, strict: bool = False
) -> dict[TopicPartition, tuple[int, int]]:
    """(offset, timestamp) per partition from its leader: ``LATEST_TIMESTAMP`` gives the
    log end, ``EARLIEST_TIMESTAMP`` the log start, a time the first offset at or after it
    (-1 when there is none). Retriable errors (no leader yet, leader moved) are retried
    until ``request_timeout_ms``. A partition that does not exist (topic deleted since
    the offsets were committed) is left out, or raised with ``strict``. Metadata is
    asked for every topic, never by name: with auto.create.topics.enable a lookup by
    name would create again a topic that was deleted."""
    cfg = cluster.config
    todo = dict(timestamps)
    out: dict[TopicPartition, tuple[int, int]] = {}
    if not todo:
        return out
    await cluster.fetch_metadata(None)
    last: MinibrokerError | None = None

    def gone(tp: TopicPartition, err: MinibrokerError) -> None:
        if strict:
            raise err
        del todo[tp]

    with trio.move_on_after(cfg.request_timeout_ms / 1000):
        while todo:
            by_node: dict[int, list[TopicPartition]] = {}
            for tp in list(todo):
                parts = cluster.partitions.get(tp.topic)
                if parts is None or not 0 <= tp.partition < len(parts):
                    gone(tp, UnknownTopicOrPartitionError(f"{tp.topic}-{tp.partition}"))
                    continue
                leader = cluster.leader_for(tp)
                if leader is None:
                    last = UnknownTopicOrPartitionError(f"no leader for {tp}")
                    continue
                by_node.setdefault(leader, []).append(tp)
            for node, tps in by_node.items():
                topics = [
                    ListOffsetsTopic(
                        t, [ListOffsetsPartition(p, todo[TopicPartition(t, p)]) for p in ps]
                    )
                    for t, ps in by_topic(tps).items()
                ]
                try:
                    resp = await cluster.request_node(node, ListOffsetsRequest(topics))
                except (ClientError, BrokerResponseError) as exc:
                    if not exc.retriable:
                        raise
                    last = exc
                    continue
                assert isinstance(resp, ListOffsetsResponse)
                for t in resp.topics:
                    for p in t.partitions:
                        tp = TopicPartition(t.name, p.partition)
                        if tp not in todo:
                            continue
                        if p.error_code == 0:
                            out[tp] = (p.offset, p.timestamp)
                            del todo[tp]
                            continue
                        err = for_code(p.error_code)(f"list offsets of {tp}")
                        if not err.retriable:
                            gone(tp, err)
                        last = err
            if todo:
                await trio.sleep(cfg.retry_backoff_ms / 1000)
                await cluster.fetch_metadata(None)
    if todo:
        raise RequestTimedOutError(
            f"could not list offsets of {sorted(todo)} within {cfg.request_timeout_ms} ms"
        ) from last
    return out
