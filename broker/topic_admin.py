"""Topic administration: CreateTopics, DeleteTopics, DescribeConfigs and the metadata
auto-create, written to the coordinator as one multi per topic.

Owns the coordinator writes that make or remove a topic and the rule for a topic's
effective log config. It never touches a partition's log: the controller and the replica
manager act on the new assignment when their watches fire.
"""

from __future__ import annotations

import uuid

import structlog
import trio

from broker import zk_layout as zl
from broker.config import BrokerConfig
from broker.log.config import LogConfig
from broker.metadata_cache import ClusterView, MetadataCache
from broker.topics import INTERNAL_TOPICS, assign_replicas, validate_topic_name
from coordinator.client import CoordinatorClient, CreateOp, DeleteOp
from proto import messages as m
from proto.errors import (
    BrokerRequestTimedOutError,
    BrokerResponseError,
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionMovedError,
    TopicAlreadyExistsError,
    TopicDeletionDisabledError,
    UnknownTopicOrPartitionError,
)

log = structlog.get_logger("broker.topic_admin")

# Coordinator errors that mean "not now": the session is moving to another member.
COORDINATOR_UNAVAILABLE = (ConnectionLossError, OperationTimeoutError, SessionMovedError)


def topic_log_config(broker_defaults: LogConfig, overrides: dict[str, str]) -> LogConfig:
    """A topic's effective log config: the broker's defaults overlaid by its overrides."""
    return LogConfig.from_props(overrides, broker_defaults) if overrides else broker_defaults


async def refresh_view(cache: MetadataCache) -> ClusterView:
    """Reload metadata; while the coordinator is unreachable (a member died and the
    session is moving to another), answer from the last view instead of failing."""
    try:
        return await cache.refresh_now()
    except COORDINATOR_UNAVAILABLE as exc:
        log.warning("metadata_refresh_failed", error=str(exc))
        return cache.view


async def view_with(cache: MetadataCache, topics: list[str]) -> ClusterView:
    """The current view, reloaded once if it lacks a topic (created a moment ago)."""
    view = cache.view
    if any(t not in view.topics for t in topics):
        view = await refresh_view(cache)
    return view


class TopicAdmin:
    """The topic-level requests of one coordinator session."""

    def __init__(self, config: BrokerConfig, cache: MetadataCache, zk: CoordinatorClient) -> None:
        self.config = config
        self.cache = cache
        self.zk = zk

    def _topic_config(self, config: dict[str, str]) -> LogConfig:
        return topic_log_config(self.config.log, config)

    async def _multi(self, ops: list[CreateOp | DeleteOp], timeout_ms: int) -> None:
        """A coordinator multi, retried across a coordinator failover until ``timeout_ms``.

        Retrying is safe: a multi that did apply makes the retry fail with NodeExists or
        NoNode, which the callers already turn into the answer a retry deserves.
        """
        delay = 0.05
        with trio.move_on_after(timeout_ms / 1000):
            while True:
                try:
                    await self.zk.multi(ops)
                    return
                except COORDINATOR_UNAVAILABLE as exc:
                    log.warning("coordinator_write_retry", error=str(exc), retry_s=delay)
                    await trio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        raise BrokerRequestTimedOutError(f"the coordinator stayed unreachable for {timeout_ms} ms")

    async def auto_create(self, view: ClusterView, topics: list[str]) -> ClusterView:
        """auto.create.topics.enable: a metadata request for a missing topic creates it
        with the broker's num.partitions and default.replication.factor."""
        created = False
        for name in topics:
            if name in view.topics or name in INTERNAL_TOPICS:
                continue
            try:
                await self._create_topic(view, m.CreatableTopic(name, -1, -1), False)
                created = True
            except TopicAlreadyExistsError:
                created = True  # someone else just made it
            except BrokerResponseError as exc:
                log.info("auto_create_refused", topic=name, error=str(exc))
        return await refresh_view(self.cache) if created else view

    # --- CreateTopics / DeleteTopics / DescribeConfigs ------------------------------

    async def create_topics(self, req: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
        view = await refresh_view(self.cache)
        results: list[m.CreatableTopicResult] = []
        for topic in req.topics:
            try:
                await self._create_topic(view, topic, req.validate_only, req.timeout_ms)
            except BrokerResponseError as exc:
                results.append(m.CreatableTopicResult(topic.name, exc.code, exc.message))
                continue
            results.append(m.CreatableTopicResult(topic.name, 0))
        if not req.validate_only:
            await refresh_view(self.cache)
        return m.CreateTopicsResponse(results)

    async def _create_topic(
        self,
        view: ClusterView,
        topic: m.CreatableTopic,
        validate_only: bool,
        timeout_ms: int = 30_000,
    ) -> None:
        validate_topic_name(topic.name)
        if topic.name in view.topics:
            raise TopicAlreadyExistsError(f"topic {topic.name!r} already exists")
        self._topic_config(topic.configs)  # raises InvalidConfigurationError
        partitions = (
            topic.num_partitions if topic.num_partitions != -1 else self.config.num_partitions
        )
        rf = (
            topic.replication_factor
            if topic.replication_factor != -1
            else self.config.default_replication_factor
        )
        assignment = assign_replicas(list(view.brokers), partitions, rf)
        if validate_only:
            return
        ops: list[CreateOp | DeleteOp] = [
            CreateOp(zl.topic_config_path(topic.name), zl.encode_topic_config(topic.configs)),
            CreateOp(
                zl.topic_path(topic.name),
                zl.TopicAssignment(uuid.uuid4().hex, assignment).encode(),
            ),
            CreateOp(zl.partitions_path(topic.name)),
        ]
        for p, replicas in assignment.items():
            # Every replica starts in sync: all logs are empty.
            state = zl.PartitionState(leader=replicas[0], leader_epoch=0, isr=list(replicas))
            ops.append(CreateOp(zl.partition_path(topic.name, p)))
            ops.append(CreateOp(zl.partition_state_path(topic.name, p), state.encode()))
        try:
            await self._multi(ops, timeout_ms)
        except NodeExistsError as exc:
            raise TopicAlreadyExistsError(f"topic {topic.name!r} already exists") from exc
        log.info("topic_created", topic=topic.name, partitions=partitions, replication_factor=rf)

    async def delete_topics(self, req: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
        view = await refresh_view(self.cache)
        results: list[m.DeletableTopicResult] = []
        for name in req.topic_names:
            try:
                await self._delete_topic(view, name, req.timeout_ms)
            except BrokerResponseError as exc:
                results.append(m.DeletableTopicResult(name, exc.code, exc.message))
                continue
            results.append(m.DeletableTopicResult(name, 0))
        await refresh_view(self.cache)
        return m.DeleteTopicsResponse(results)

    async def _delete_topic(self, view: ClusterView, name: str, timeout_ms: int = 30_000) -> None:
        if not self.config.delete_topic_enable:
            raise TopicDeletionDisabledError("delete.topic.enable is false on this broker")
        info = view.topics.get(name)
        if info is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        ops: list[CreateOp | DeleteOp] = []
        for p in info.partitions:
            ops.append(DeleteOp(zl.partition_state_path(name, p)))
            ops.append(DeleteOp(zl.partition_path(name, p)))
        ops.append(DeleteOp(zl.partitions_path(name)))
        ops.append(DeleteOp(zl.topic_path(name)))
        ops.append(DeleteOp(zl.topic_config_path(name)))
        try:
            await self._multi(ops, timeout_ms)
        except NoNodeError as exc:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist") from exc
        log.info("topic_deleted", topic=name)

    async def describe_configs(self, req: m.DescribeConfigsRequest) -> m.DescribeConfigsResponse:
        view = await view_with(self.cache, req.topics)
        results: list[m.DescribeConfigsResult] = []
        for name in req.topics:
            info = view.topics.get(name)
            if info is None:
                err = UnknownTopicOrPartitionError.code
                results.append(
                    m.DescribeConfigsResult(name, err, {}, [], f"topic {name!r} does not exist")
                )
                continue
            effective = self._topic_config(info.config).to_props()
            results.append(m.DescribeConfigsResult(name, 0, effective, sorted(info.config)))
        return m.DescribeConfigsResponse(results)
