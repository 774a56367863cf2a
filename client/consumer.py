"""The async consumer: manual assignment, positions, and a prefetching fetch loop.

A background task keeps one Fetch in flight per broker for the assigned partitions whose
buffer has room (one completed fetch being consumed plus one prefetched), so the next
records are on their way while the application processes the previous ones. ``poll()``
only decodes what is buffered (client.fetcher) and resets positions that are unknown or
out of range per ``auto_offset_reset``. Consumer groups (subscribe/commit) are a later
issue; ``subscribe()`` raises NotImplementedError.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trio

from client.cluster import Cluster
from client.config import ConsumerConfig
from client.errors import (
    BrokerResponseError,
    ClientError,
    ConfigurationError,
    IllegalStateError,
    MinibrokerError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    for_code,
)
from client.fetcher import CompletedFetch, PartitionState, scan_batches
from client.lifecycle import BackgroundTasks
from client.logs import get_logger
from client.types import ConsumerRecord, OffsetAndTimestamp, TopicPartition
from proto.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
)

__all__ = ["AsyncConsumer"]

log = get_logger("client.consumer")

_PREFETCH = 2  # completed fetches buffered per partition: the one being read + one ahead


class AsyncConsumer:
    """Reads records from assigned partitions. ``async with AsyncConsumer(...) as c:``."""

    def __init__(self, *topics: str, **configs: Any) -> None:
        self.config = ConsumerConfig.build(**configs)
        if topics and self.config.group_id is not None:
            raise NotImplementedError(
                "consumer groups are not implemented yet: pass no group_id to read every "
                "partition of the topics, or use assign()"
            )
        self._initial_topics = topics
        self._assignment: dict[TopicPartition, PartitionState] = {}
        self._cluster: Cluster | None = None
        self._tasks = BackgroundTasks()
        self._nursery: trio.Nursery | None = None
        self._fetch_wake = trio.Event()
        self._data = trio.Event()
        self._fetching: set[int] = set()
        self._rotate = 0
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        nursery = self._nursery = await self._tasks.open()
        try:
            self._cluster = Cluster(self.config.connection, nursery)
            self._cluster.listeners.append(self._wake_fetcher)
            await self._cluster.refresh(self._initial_topics)
            if self._initial_topics:
                tps: list[TopicPartition] = []
                for t in self._initial_topics:
                    parts = await self._cluster.partitions_for(t)
                    tps.extend(TopicPartition(t, p.partition) for p in parts)
                self.assign(tps)
        except BaseException:
            await self._tasks.close()
            raise
        nursery.start_soon(self._fetch_loop)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._nursery is None:
            return
        assert self._nursery is not None and self._cluster is not None
        self._nursery.cancel_scope.cancel()
        try:
            await self._cluster.aclose()
        finally:
            await self._tasks.close()

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise IllegalStateError("consumer not started: use 'async with' or start()")
        return self._cluster

    # --- assignment and positions -------------------------------------------------------

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "subscribe() needs consumer groups, which are not implemented yet: use assign()"
        )

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        new: dict[TopicPartition, PartitionState] = {}
        for tp in partitions:
            tp = TopicPartition(*tp)
            new[tp] = self._assignment.get(tp) or PartitionState()
        self._assignment = new
        self.cluster.wanted.update(tp.topic for tp in new)
        self._fetch_wake.set()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def _state(self, tp: TopicPartition) -> PartitionState:
        st = self._assignment.get(tp)
        if st is None:
            raise IllegalStateError(f"{tp} is not assigned to this consumer")
        return st

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if offset < 0:
            raise ConfigurationError(f"offset must be >= 0, not {offset}")
        self._state(partition).seek(offset)
        self._fetch_wake.set()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        await self._seek_to(partitions, EARLIEST_TIMESTAMP)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        await self._seek_to(partitions, LATEST_TIMESTAMP)

    async def _seek_to(self, partitions: Sequence[TopicPartition], ts: int) -> None:
        tps = list(partitions) or list(self._assignment)
        for tp in tps:
            self._state(tp)
        offsets = await self._list_offsets({tp: ts for tp in tps})
        for tp, (offset, _) in offsets.items():
            self._state(tp).seek(offset)
        self._fetch_wake.set()

    async def position(self, partition: TopicPartition) -> int:
        st = self._state(partition)
        if st.position is None:
            await self._update_positions()
        if st.error is not None:
            raise st.error
        assert st.position is not None
        return st.position

    def highwater(self, partition: TopicPartition) -> int | None:
        hw = self._state(partition).high_watermark
        return hw if hw >= 0 else None

    async def beginning_offsets(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        res = await self._list_offsets({tp: EARLIEST_TIMESTAMP for tp in partitions})
        return {tp: off for tp, (off, _) in res.items()}

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        res = await self._list_offsets({tp: LATEST_TIMESTAMP for tp in partitions})
        return {tp: off for tp, (off, _) in res.items()}

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        for tp, ts in timestamps.items():
            if ts < 0:
                raise ConfigurationError(f"timestamp for {tp} must be >= 0, not {ts}")
        res = await self._list_offsets(dict(timestamps))
        return {
            tp: OffsetAndTimestamp(off, ts) if off >= 0 else None for tp, (off, ts) in res.items()
        }

    async def topics(self) -> set[str]:
        md = await self.cluster.fetch_metadata(None)
        return {t.name for t in md.topics if t.error_code == 0}

    async def partitions_for_topic(self, topic: str) -> set[int] | None:
        try:
            parts = await self.cluster.partitions_for(topic)
        except UnknownTopicOrPartitionError:
            return None
        return {p.partition for p in parts}

    async def _list_offsets(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int]]:
        """ListOffsets to each leader, retrying retriable errors until request_timeout_ms."""
        cluster = self.cluster
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
                        resp = await cluster.request_node(node, _list_offsets_request(tps, todo))
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

    async def _update_positions(self) -> None:
        need = {tp: st for tp, st in self._assignment.items() if st.position is None}
        if not need:
            return
        reset = self.config.auto_offset_reset
        if reset == "none":
            for tp, st in need.items():
                if st.error is None:
                    st.error = OffsetOutOfRangeError(
                        f"{tp} has no valid position and auto_offset_reset is 'none'"
                    )
            return
        ts = EARLIEST_TIMESTAMP if reset == "earliest" else LATEST_TIMESTAMP
        offsets = await self._list_offsets(dict.fromkeys(need, ts))
        for tp, (offset, _) in offsets.items():
            st = need[tp]
            if st.position is None:  # unless a seek() raced with us
                st.seek(offset)
        self._fetch_wake.set()

    # --- polling ------------------------------------------------------------------------

    async def poll(
        self, timeout_ms: float = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records fetched for the assignment, at most ``max_records`` in all."""
        limit = max_records or self.config.max_poll_records
        deadline = trio.current_time() + timeout_ms / 1000
        while True:
            self._data = trio.Event()
            await self._update_positions()
            records = self._collect(limit)
            if records:
                self._fetch_wake.set()
                return records
            if trio.current_time() >= deadline:
                return {}
            with trio.move_on_at(deadline):
                await self._data.wait()

    def _collect(self, limit: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        items = list(self._assignment.items())
        if not items:
            return out
        self._rotate = (self._rotate + 1) % len(items)
        items = items[self._rotate :] + items[: self._rotate]
        count = 0
        for tp, st in items:
            if st.error is not None:
                err, st.error = st.error, None
                if out:  # hand back what we have; the error comes on the next poll
                    st.error = err
                    break
                raise err
            while st.completed and count < limit and st.position is not None:
                cf = st.completed[0]
                records = cf.take(limit - count, st.position)
                if records:
                    count += len(records)
                    out.setdefault(tp, []).extend(records)
                    st.position = records[-1].offset + 1
                if cf.exhausted:
                    st.completed.popleft()
                    st.position = max(st.position, cf.end_offset)
            if count >= limit:
                break
        kd, vd = self.config.key_deserializer, self.config.value_deserializer
        if kd is not None or vd is not None:
            for tp, recs in out.items():
                out[tp] = [
                    r._replace(
                        key=kd(r.key) if kd is not None and r.key is not None else r.key,
                        value=vd(r.value) if vd is not None and r.value is not None else r.value,
                    )
                    for r in recs
                ]
        return out

    # --- the fetch loop -----------------------------------------------------------------

    def _wake_fetcher(self) -> None:
        self._fetch_wake.set()

    async def _fetch_loop(self) -> None:
        backoff = self.config.connection.retry_backoff_ms / 1000
        while True:
            self._fetch_wake = trio.Event()
            cluster = self.cluster
            cluster.refresh_if_stale()
            now = trio.current_time()
            delay = math.inf
            by_node: dict[int, list[TopicPartition]] = {}
            for tp, st in self._assignment.items():
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
                    assert self._nursery is not None
                    self._nursery.start_soon(self._fetch, node, tps)
            with trio.move_on_after(delay if delay != math.inf else 3600):
                await self._fetch_wake.wait()

    async def _fetch(self, node: int, tps: list[TopicPartition]) -> None:
        cfg = self.config
        states = {tp: self._assignment[tp] for tp in tps}
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
        cluster = self.cluster
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
            self._fetch_wake.set()
        got_data = False
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition)
                sent = states.get(tp)
                if sent is None or self._assignment.get(tp) is not sent:
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
            self._data.set()


def _list_offsets_request(
    tps: list[TopicPartition], timestamps: dict[TopicPartition, int]
) -> ListOffsetsRequest:
    topics: dict[str, list[ListOffsetsPartition]] = {}
    for tp in tps:
        topics.setdefault(tp.topic, []).append(ListOffsetsPartition(tp.partition, timestamps[tp]))
    return ListOffsetsRequest([ListOffsetsTopic(t, ps) for t, ps in topics.items()])
