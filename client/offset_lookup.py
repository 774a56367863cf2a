"""ListOffsets for the consumer: offsets by timestamp (or earliest/latest), per leader.

Split out of ``client.consumer``: one request per leader broker, retrying retriable
errors after a metadata refresh until ``request_timeout_ms``.
"""

from __future__ import annotations

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

__all__ = ["list_offsets"]


async def list_offsets(
    cluster: Cluster, timestamps: dict[TopicPartition, int]
) -> dict[TopicPartition, tuple[int, int]]:
    """(offset, timestamp) per partition: ListOffsets to each leader, retrying retriable
    errors until request_timeout_ms."""
    cfg = cluster.config
    out: dict[TopicPartition, tuple[int, int]] = {}
    todo = {TopicPartition(*tp): ts for tp, ts in timestamps.items()}
    for tp in todo:
        await cluster.partitions_for(tp.topic)
    last_error: MinibrokerError | None = None
    with trio.move_on_after(cfg.request_timeout_ms / 1000):
        while todo:
            by_node: dict[int, list[TopicPartition]] = {}
            for tp in todo:
                leader = cluster.leader_for(tp)
                if leader is None:
                    parts = cluster.partitions.get(tp.topic)
                    if parts is not None and tp.partition >= len(parts):
                        raise UnknownTopicOrPartitionError(f"{tp} does not exist")
                    last_error = UnknownTopicOrPartitionError(f"no leader for {tp}")
                    continue
                by_node.setdefault(leader, []).append(tp)
            for node, tps in by_node.items():
                try:
                    resp = await cluster.request_node(node, _request(tps, todo))
                except (ClientError, BrokerResponseError) as exc:
                    if not exc.retriable:
                        raise
                    last_error = exc
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
                        err = for_code(p.error_code)(f"list offsets for {tp}")
                        if not err.retriable:
                            raise err
                        last_error = err
            if todo:
                await trio.sleep(cfg.retry_backoff_ms / 1000)
                await cluster.refresh()
    if todo:
        raise RequestTimedOutError(
            f"could not list offsets for {sorted(todo)} within {cfg.request_timeout_ms} ms"
        ) from last_error
    return out


def _request(
    tps: list[TopicPartition], timestamps: dict[TopicPartition, int]
) -> ListOffsetsRequest:
    topics: dict[str, list[ListOffsetsPartition]] = {}
    for tp in tps:
        topics.setdefault(tp.topic, []).append(ListOffsetsPartition(tp.partition, timestamps[tp]))
    return ListOffsetsRequest([ListOffsetsTopic(t, ps) for t, ps in topics.items()])
