"""Request handling: one method per API, turning a typed request into a typed response.

Per-partition failures become error codes in the response; only a bug escapes as an
exception (the connection layer answers UNKNOWN_SERVER_ERROR and logs it). Produce and fetch
touch record batches as opaque bytes: the log validates headers and CRCs and assigns
offsets, fetch answers with file slices that the connection layer ``sendfile``s.
The topic-level requests (CreateTopics, DeleteTopics, DescribeConfigs, metadata
auto-create) are served by broker/topic_admin.py.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
import trio

from broker import controller_api
from broker.config import BrokerConfig
from broker.controller import Controller
from broker.listeners import CURRENT_LISTENER
from broker.log import Log, LogManager
from broker.metadata_cache import ClusterView, MetadataCache
from broker.partition_logs import open_partition_log
from broker.producer_ids import ProducerIdManager
from broker.purgatory import FetchPurgatory
from broker.replica_manager import ReplicaManager
from broker.replication import LeaderState
from broker.topic_admin import TopicAdmin, topic_log_config, view_with
from broker.topics import INTERNAL_TOPICS
from coordinator.client import CoordinatorClient
from proto import messages as m
from proto.codec import FileRecords
from proto.errors import (
    BrokerResponseError,
    InvalidRequestError,
    InvalidRequiredAcksError,
    LeaderNotAvailableError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    UnknownTopicOrPartitionError,
)

if TYPE_CHECKING:
    from broker.group_coordinator import GroupCoordinator

# topic_log_config is re-exported: the broker opens partition logs with it.
__all__ = ["Handler", "RequestHandler", "close_file_records", "topic_log_config"]

log = structlog.get_logger("broker.handlers")

Handler = Callable[[Any], Awaitable[m.Response | None]]


def _error(exc: BrokerResponseError) -> tuple[int, str | None]:
    return exc.code, exc.message


class RequestHandler:
    def __init__(
        self,
        config: BrokerConfig,
        logs: LogManager,
        cache: MetadataCache,
        zk: CoordinatorClient,
        purgatory: FetchPurgatory,
        replicas: ReplicaManager,
        groups: GroupCoordinator | None = None,
    ) -> None:
        self.broker_id = config.broker_id
        self.config = config
        self.logs = logs
        self.cache = cache
        self.zk = zk
        self.purgatory = purgatory
        self.replicas = replicas
        self.controller: Controller | None = None  # set by the broker with its session
        self.producer_ids = ProducerIdManager(config.broker_id, zk)
        self.topic_admin = TopicAdmin(config, cache, zk)
        self._handlers: dict[type[m.Request], Handler] = {
            m.ApiVersionsRequest: self.api_versions,
            m.MetadataRequest: self.metadata,
            m.ProduceRequest: self.produce,
            m.FetchRequest: self.fetch,
            m.ListOffsetsRequest: self.list_offsets,
            m.CreateTopicsRequest: self.topic_admin.create_topics,
            m.DeleteTopicsRequest: self.topic_admin.delete_topics,
            m.DescribeConfigsRequest: self.topic_admin.describe_configs,
            m.OffsetForLeaderEpochRequest: self.offset_for_leader_epoch,
            m.ControlledShutdownRequest: self.controlled_shutdown,
            m.ElectLeadersRequest: self.elect_leaders,
            m.InitProducerIdRequest: self.init_producer_id,
        }
        if groups is not None:  # the consumer-group APIs, served by the broker's coordinator
            self._handlers.update(groups.handlers())

    async def handle(self, request: m.Request) -> m.Response | None:
        return await self._handlers[type(request)](request)

    # --- helpers --------------------------------------------------------------------

    def _leader_log(self, view: ClusterView, topic: str, partition: int) -> Log:
        """The local log of a partition this broker leads, or the error that says why not."""
        info = view.partition(topic, partition)
        if info is None:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        if info.state is None or info.state.leader < 0:
            raise LeaderNotAvailableError(f"{topic}-{partition} has no leader")
        if info.state.leader != self.broker_id:
            raise NotLeaderForPartitionError(
                f"broker {self.broker_id} is not the leader of {topic}-{partition} "
                f"(leader: {info.state.leader})"
            )
        existing = self.logs.get_log(topic, partition)
        if existing is not None:
            return existing
        info_t = view.topics[topic]
        return open_partition_log(
            self.logs, info_t, partition, topic_log_config(self.config.log, info_t.config)
        )

    def _leader(self, view: ClusterView, topic: str, partition: int) -> tuple[Log, LeaderState]:
        """The log and leader state of a partition this broker leads."""
        plog = self._leader_log(view, topic, partition)
        state = self.replicas.leaders.get((topic, partition))
        if state is None:
            # A log opened just now. The replica manager's own view: the cache's may belong
            # to a coordinator session that has since expired (a long poll that outlived it),
            # and re-applying it would reinstate a deposed leader.
            self.replicas.on_view(self.replicas.view)
            state = self.replicas.leaders.get((topic, partition))
        if state is None:
            raise NotLeaderForPartitionError(
                f"broker {self.broker_id} is not yet leading {topic}-{partition}"
            )
        return plog, state

    # --- ApiVersions / Metadata ---------------------------------------------------------

    async def api_versions(self, _req: m.ApiVersionsRequest) -> m.ApiVersionsResponse:
        # Only what this broker answers (the wire may know more).
        return m.ApiVersionsResponse(
            0,
            [
                m.ApiVersionRange(int(cls.API_KEY), cls.MIN_VERSION, cls.MAX_VERSION)
                for cls in sorted(self._handlers, key=lambda c: int(c.API_KEY))
            ],
        )

    def handles(self, request: m.Request) -> bool:
        return type(request) in self._handlers

    async def metadata(self, req: m.MetadataRequest) -> m.MetadataResponse:
        view = await view_with(self.cache, req.topics or [])
        if req.topics and self.config.auto_create_topics_enable:
            view = await self.topic_admin.auto_create(view, req.topics)
        names = sorted(view.topics) if req.topics is None else req.topics
        live = view.brokers
        # Kafka's rule: addresses on the listener this request came in on; a broker without
        # that listener is left out (its partitions have no leader seen from here).
        listener = CURRENT_LISTENER.get(None) or self.config.listener_plan.inter_broker
        reachable = {bid: ep for bid, b in live.items() if (ep := b.endpoint(listener)) is not None}
        topics: list[m.TopicMetadata] = []
        for name in names:
            info = view.topics.get(name)
            if info is None:
                code = UnknownTopicOrPartitionError.code
                topics.append(m.TopicMetadata(code, name, False, []))
                continue
            parts: list[m.PartitionMetadata] = []
            for p, pinfo in sorted(info.partitions.items()):
                state = pinfo.state
                leader = state.leader if state is not None and state.leader in reachable else -1
                code = 0 if leader >= 0 else LeaderNotAvailableError.code
                parts.append(
                    m.PartitionMetadata(
                        code,
                        p,
                        leader,
                        state.leader_epoch if state else -1,
                        list(pinfo.replicas),
                        list(state.isr) if state else [],  # as stored: the controller
                        # keeps it live (Kafka answers the ISR of the partition state)
                        [b for b in pinfo.replicas if b not in live],
                    )
                )
            topics.append(m.TopicMetadata(0, name, name in INTERNAL_TOPICS, parts))
        brokers = [
            m.BrokerMetadata(bid, ep.host, ep.port, live[bid].rack)
            for bid, ep in sorted(reachable.items())
        ]
        return m.MetadataResponse(brokers, view.cluster_id, view.controller_id, topics)

    # --- Produce --------------------------------------------------------------------

    async def produce(self, req: m.ProduceRequest) -> m.ProduceResponse | None:
        """Append as leader. acks=all checks min.insync.replicas before appending (nothing
        written when the ISR is too small), then waits until the HW passes every appended
        batch or ``timeout_ms`` ends."""
        view = await view_with(self.cache, [t.name for t in req.topics])
        acks_ok = req.acks in (0, 1, -1)
        out: list[m.ProduceTopicResponse] = []
        waiting: dict[tuple[str, int], tuple[LeaderState, int]] = {}
        for t in req.topics:
            parts: list[m.ProducePartitionResponse] = []
            for pd in t.partitions:
                key = (t.name, pd.partition)
                try:
                    if not acks_ok:
                        raise InvalidRequiredAcksError(f"acks must be 0, 1 or -1, not {req.acks}")
                    plog, leader = self._leader(view, t.name, pd.partition)
                    if req.acks == -1 and not leader.enough_replicas_for_acks_all():
                        raise NotEnoughReplicasError(
                            f"{t.name}-{pd.partition}: ISR {leader.isr} is smaller than "
                            f"min.insync.replicas {leader.min_insync_replicas}"
                        )
                    info = plog.append(pd.records, leader_epoch=leader.leader_epoch)
                except BrokerResponseError as exc:
                    code, msg = _error(exc)
                    parts.append(m.ProducePartitionResponse(pd.partition, code, -1, -1, -1, msg))
                    continue
                if info.duplicate:  # an idempotent producer's retry: its original offsets
                    log.info(
                        "produce_duplicate",
                        topic=t.name,
                        partition=pd.partition,
                        first_offset=info.first_offset,
                        last_offset=info.last_offset,
                    )
                self.replicas.on_append(key, plog.log_end_offset)
                self.purgatory.notify(key)
                if req.acks == -1:
                    waiting[key] = (leader, info.last_offset)
                parts.append(
                    m.ProducePartitionResponse(
                        pd.partition,
                        0,
                        info.first_offset,
                        info.log_append_time_ms,
                        info.log_start_offset,
                    )
                )
            out.append(m.ProduceTopicResponse(t.name, parts))
        if req.acks == 0:
            return None
        if waiting:
            failed = await self.replicas.wait_acks_all(waiting, req.timeout_ms)
            if failed:
                out = [
                    m.ProduceTopicResponse(
                        t.name,
                        [
                            _failed(p, failed[(t.name, p.partition)])
                            if (t.name, p.partition) in failed
                            else p
                            for p in t.partitions
                        ],
                    )
                    for t in out
                ]
        return m.ProduceResponse(out)

    # --- Fetch ----------------------------------------------------------------------

    def _read_all(
        self, req: m.FetchRequest, view: ClusterView
    ) -> tuple[m.FetchResponse, int, bool]:
        budget = req.max_bytes
        total = 0
        errors = False
        topics: list[m.FetchTopicResponse] = []
        for t in req.topics:
            parts: list[m.FetchPartitionResponse] = []
            for fp in t.partitions:
                try:
                    plog, leader = self._leader(view, t.name, fp.partition)
                    leader.check_current_leader_epoch(fp.current_leader_epoch)
                    if req.replica_id >= 0:
                        self.replicas.on_follower_fetch(
                            (t.name, fp.partition), leader, req.replica_id, fp.fetch_offset
                        )
                        max_offset = leader.follower_fetch_limit
                    else:
                        max_offset = leader.consumer_fetch_limit
                    limit = min(fp.partition_max_bytes, max(budget, 0))
                    # Kafka's min-one-message: the first non-empty partition may exceed the budget.
                    result = plog.read(
                        fp.fetch_offset, limit if total else max(limit, 1), max_offset=max_offset
                    )
                except BrokerResponseError as exc:
                    errors = True
                    code, msg = _error(exc)
                    parts.append(m.FetchPartitionResponse(fp.partition, code, -1, -1, -1, b"", msg))
                    continue
                records: bytes | FileRecords = b""
                if result.records is not None and result.records.size > 0 and budget > 0:
                    fr = result.records
                    # Our own descriptor: the segment may be closed before the send finishes.
                    records = FileRecords(os.dup(fr.fd), fr.position, fr.size)
                    total += fr.size
                    budget -= fr.size
                hw = leader.high_watermark
                parts.append(
                    m.FetchPartitionResponse(
                        fp.partition, 0, hw, hw, result.log_start_offset, records
                    )
                )
            topics.append(m.FetchTopicResponse(t.name, parts))
        return m.FetchResponse(0, topics), total, errors

    async def fetch(self, req: m.FetchRequest) -> m.FetchResponse:
        view = await view_with(self.cache, [t.name for t in req.topics])
        deadline = trio.current_time() + max(req.max_wait_ms, 0) / 1000
        keys = [(t.name, p.partition) for t in req.topics for p in t.partitions]
        while True:
            resp, total, errors = self._read_all(req, view)
            remaining = deadline - trio.current_time()
            if total >= req.min_bytes or errors or remaining <= 0 or not keys:
                return resp
            close_file_records(resp)
            await self.purgatory.wait_any(keys, remaining)
            view = self.cache.view

    # --- ListOffsets ----------------------------------------------------------------

    async def list_offsets(self, req: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
        view = await view_with(self.cache, [t.name for t in req.topics])
        out: list[m.ListOffsetsTopicResponse] = []
        for t in req.topics:
            parts: list[m.ListOffsetsPartitionResponse] = []
            for lp in t.partitions:
                try:
                    plog, leader = self._leader(view, t.name, lp.partition)
                except BrokerResponseError as exc:
                    parts.append(m.ListOffsetsPartitionResponse(lp.partition, exc.code, -1, -1))
                    continue
                if lp.timestamp == m.EARLIEST_TIMESTAMP:
                    ts, offset = -1, plog.log_start_offset
                elif lp.timestamp == m.LATEST_TIMESTAMP:
                    # Consumers see the committed end (the HW); replicas the log end.
                    latest = plog.log_end_offset if req.replica_id >= 0 else leader.high_watermark
                    ts, offset = -1, latest
                else:
                    found = plog.offset_for_timestamp(lp.timestamp)
                    offset, ts = found if found is not None else (-1, -1)
                parts.append(m.ListOffsetsPartitionResponse(lp.partition, 0, ts, offset))
            out.append(m.ListOffsetsTopicResponse(t.name, parts))
        return m.ListOffsetsResponse(out)

    # --- OffsetForLeaderEpoch -------------------------------------------------------

    async def offset_for_leader_epoch(
        self, req: m.OffsetForLeaderEpochRequest
    ) -> m.OffsetForLeaderEpochResponse:
        """Where ``leader_epoch`` (or the largest one below it) ends in the leader's log."""
        view = await view_with(self.cache, [t.name for t in req.topics])
        out: list[m.OffsetForLeaderTopicResult] = []
        for t in req.topics:
            parts: list[m.EpochEndOffsetResult] = []
            for op in t.partitions:
                try:
                    plog, leader = self._leader(view, t.name, op.partition)
                    leader.check_current_leader_epoch(op.current_leader_epoch)
                except BrokerResponseError as exc:
                    code, msg = _error(exc)
                    parts.append(m.EpochEndOffsetResult(code, op.partition, -1, -1, msg))
                    continue
                epoch, end = plog.end_offset_for_epoch(op.leader_epoch)
                parts.append(m.EpochEndOffsetResult(0, op.partition, epoch, end))
            out.append(m.OffsetForLeaderTopicResult(t.name, parts))
        return m.OffsetForLeaderEpochResponse(out)

    # --- InitProducerId ------------------------------------------------------------

    async def init_producer_id(self, req: m.InitProducerIdRequest) -> m.InitProducerIdResponse:
        """A new producer id with epoch 0: Kafka's answer when there is no transactional
        id, whatever id and epoch the producer sends (transactions are not supported)."""
        try:
            if req.transactional_id is not None:
                raise InvalidRequestError("transactions are not supported")
            producer_id = await self.producer_ids.generate()
        except BrokerResponseError as exc:
            return m.InitProducerIdResponse(exc.code, -1, -1, error_message=exc.message)
        return m.InitProducerIdResponse(0, producer_id, 0)

    # --- ControlledShutdown / ElectLeaders (served by the controller) ---------------

    async def controlled_shutdown(
        self, req: m.ControlledShutdownRequest
    ) -> m.ControlledShutdownResponse:
        return await controller_api.controlled_shutdown(self.controller, req)

    async def elect_leaders(self, req: m.ElectLeadersRequest) -> m.ElectLeadersResponse:
        return await controller_api.elect_leaders(self.controller, req)


def _failed(
    resp: m.ProducePartitionResponse, exc: BrokerResponseError
) -> m.ProducePartitionResponse:
    code, msg = _error(exc)
    return dataclasses.replace(resp, error_code=code, error_message=msg)


def close_file_records(resp: m.FetchResponse) -> None:
    """Close the descriptors a fetch response holds (after sending it, or when dropped)."""
    for t in resp.topics:
        for p in t.partitions:
            if isinstance(p.records, FileRecords):
                os.close(p.records.fd)
