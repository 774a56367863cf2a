"""The consumer's fetch loop: one Fetch in flight per broker, prefetching ahead of poll().

A background task keeps one Fetch in flight per broker for the assigned partitions whose
buffer has room (one completed fetch being consumed plus one prefetched), so the next
records are on their way while the application processes the previous ones. Responses
to fetches sent before a seek (or for partitions unassigned meanwhile) are dropped.
Split out of ``client.consumer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from client.cluster import Cluster
from client.config import ConsumerConfig
from client.errors import BrokerResponseError, ClientError, OffsetOutOfRangeError, for_code
from client.fetcher import CompletedFetch, PartitionState, scan_batches
from client.logs import get_logger
from client.types import TopicPartition
from proto.messages import FetchPartition, FetchRequest, FetchResponse, FetchTopic

__all__ = ["FetchLoop"]

log = get_logger("client.consumer")

_PREFETCH = 2  # completed fetches buffered per partition: the one being read + one ahead


class FetchLoop:
    def __init__(
        self,
        config: ConsumerConfig,
        cluster: Cluster,
        nursery: trio.Nursery,
        assignment: Callable[[], dict[TopicPartition, PartitionState]],
        on_data: Callable[[], None],
    ) -> None:
        self._config = config
        self._cluster = cluster
        self._nursery = nursery
        self._assignment = assignment
        self._on_data = on_data
        self._wake = trio.Event()
        self._fetching: set[int] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = self._config.connection.retry_backoff_ms / 1000
        while True:
            self._wake = trio.Event()
            cluster = self._cluster
            cluster.refresh_if_stale()
            now = trio.current_time()
            delay = math.inf
            by_node: dict[int, list[TopicPartition]] = {}
            for tp, st in self._assignment().items():
                if (
                    st.position is None
                    or st.in_flight
                    or st.paused
                    or st.error is not None
                    or len(st.completed) >= _PREFETCH
                ):
                    continue
                if st.retry_at > now:
                    delay = min(delay, st.retry_at - now)
                    continue
                leader = cluster.leader_for(tp)
                if leader is None:
                    cluster.request_update()
                    delay = min(delay, backoff)
                    continue
                by_node.setdefault(leader, []).append(tp)
            for node, tps in by_node.items():
                if node not in self._fetching:
                    self._fetching.add(node)
                    self._nursery.start_soon(self._fetch, node, tps)
            with trio.move_on_after(delay if delay != math.inf else 3600):
                await self._wake.wait()

    async def _fetch(self, node: int, tps: list[TopicPartition]) -> None:
        cfg = self._config
        # Started soon, not now: a rebalance or reset may have dropped some meanwhile.
        assignment = self._assignment()
        states = {
            tp: st
            for tp in tps
            if (st := assignment.get(tp)) is not None and st.position is not None
        }
        if not states:
            self._fetching.discard(node)
            self._wake.set()
            return
        epochs = {tp: st.epoch for tp, st in states.items()}
        topics: dict[str, list[FetchPartition]] = {}
        for tp, st in states.items():
            st.in_flight = True
            topics.setdefault(tp.topic, []).append(
                FetchPartition(tp.partition, st.fetch_offset, cfg.max_partition_fetch_bytes)
            )
        request = FetchRequest(
            cfg.fetch_max_wait_ms,
            cfg.fetch_min_bytes,
            cfg.fetch_max_bytes,
            [FetchTopic(t, ps) for t, ps in topics.items()],
        )
        cluster = self._cluster
        backoff = cfg.connection.retry_backoff_ms / 1000
        try:
            conn = await cluster.connection(node)
            response = await conn.request(
                request, timeout_ms=cfg.connection.request_timeout_ms + cfg.fetch_max_wait_ms
            )
            assert isinstance(response, FetchResponse)
        except (ClientError, BrokerResponseError) as exc:
            log.info("fetch_failed", node_id=node, error=str(exc))
            cluster.request_update()
            retry_at = trio.current_time() + backoff
            for st in states.values():
                st.retry_at = retry_at
            return
        finally:
            for st in states.values():
                st.in_flight = False
            self._fetching.discard(node)
            self._wake.set()
        got_data = False
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition)
                sent = states.get(tp)
                if sent is None or self._assignment().get(tp) is not sent:
                    continue  # not asked for, or unassigned meanwhile
                st = sent
                if st.epoch != epochs[tp]:
                    continue  # seeked meanwhile
                if p.error_code == 0:
                    st.high_watermark = p.high_watermark
                    st.log_start_offset = p.log_start_offset
                    records = p.records
                    assert isinstance(records, bytes)
                    end = scan_batches(records) if records else -1
                    if end > st.fetch_offset:
                        st.completed.append(CompletedFetch(tp, records, st.epoch, end))
                        st.fetch_offset = end
                        got_data = True
                elif p.error_code == OffsetOutOfRangeError.code:
                    log.info(
                        "offset_out_of_range",
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=st.fetch_offset,
                        reset=cfg.auto_offset_reset,
                    )
                    st.reset()
                    got_data = True  # wake poll() so that it resets the position
                else:
                    err = for_code(p.error_code)(p.error_message or f"fetch from {tp}")
                    if err.retriable:
                        cluster.request_update()
                        st.retry_at = trio.current_time() + backoff
                    else:
                        st.error = err
                        got_data = True
        if got_data:
            self._on_data()
