"""The async admin client: create, delete, list and describe topics; describe the cluster;
elect preferred leaders; consumer groups (``client.group_admin``).

CreateTopics, DeleteTopics and ElectLeaders go to the controller (retried after a metadata
refresh on NOT_CONTROLLER); the rest go to any broker. Per-topic errors are collected over
all the topics of a call and the first one is raised, naming its topic. ElectLeaders
answers per partition: ``elect_leaders`` returns those answers instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import trio

from client.cluster import Cluster, ConnectionConfig, parse_bootstrap
from client.errors import BrokerResponseError, IllegalStateError, NotControllerError, for_code
from client.group_admin import ConsumerGroupAdmin
from client.lifecycle import BackgroundTasks
from client.types import (
    BrokerDescription,
    ClusterDescription,
    NewTopic,
    PartitionDescription,
    TopicDescription,
    TopicPartition,
)
from proto.messages import (
    PREFERRED_ELECTION,
    CreatableTopic,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    ElectLeadersRequest,
    ElectLeadersResponse,
    ElectLeadersTopic,
    Request,
    Response,
)

__all__ = ["AsyncAdmin"]

_CONTROLLER_ATTEMPTS = 3


def _raise_first(results: Iterable[tuple[str, int, str | None]], action: str) -> None:
    """Raise the first per-topic error (after all topics were tried), naming its topic."""
    errors = [(name, code, msg) for name, code, msg in results if code != 0]
    if not errors:
        return
    name, code, msg = errors[0]
    detail = f"{action} topic {name!r} failed" + (f": {msg}" if msg else "")
    if len(errors) > 1:
        others = ", ".join(f"{n!r} ({for_code(c).name})" for n, c, _ in errors[1:])
        detail += f"; also failed: {others}"
    raise for_code(code)(detail)


class AsyncAdmin(ConsumerGroupAdmin):
    """Topic administration (consumer groups: ``ConsumerGroupAdmin``).
    ``async with AsyncAdmin(bootstrap_servers=...) as admin:``."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        client_id: str | None = None,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
    ) -> None:
        self.config = ConnectionConfig(
            tuple(parse_bootstrap(bootstrap_servers)),
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
        )
        self._cluster: Cluster | None = None
        self._tasks = BackgroundTasks()
        self._nursery: trio.Nursery | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncAdmin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        nursery = self._nursery = await self._tasks.open()
        self._cluster = Cluster(self.config, nursery)
        try:
            await self._cluster.refresh()
        except BaseException:
            await self._tasks.close()
            raise

    async def close(self) -> None:
        if self._closed or self._nursery is None:
            self._closed = True
            return
        self._closed = True
        assert self._nursery is not None and self._cluster is not None
        self._nursery.cancel_scope.cancel()
        try:
            await self._cluster.aclose()
        finally:
            await self._tasks.close()

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None or self._closed:
            raise IllegalStateError("admin client is not started or is closed")
        return self._cluster

    async def _to_controller(self, request: Request) -> Response:
        cluster = self.cluster
        for attempt in range(_CONTROLLER_ATTEMPTS):
            if cluster.controller_id in cluster.brokers:
                response = await cluster.request_node(cluster.controller_id, request)
            else:
                response = await cluster.request_any(request)
            results = getattr(response, "topics", [])
            top_level = getattr(response, "error_code", 0)
            if top_level != NotControllerError.code and not any(
                r.error_code == NotControllerError.code for r in results
            ):
                return response
            if attempt + 1 < _CONTROLLER_ATTEMPTS:
                await trio.sleep(self.config.retry_backoff_ms / 1000)
                await cluster.fetch_metadata([])
        return response

    async def create_topics(
        self, new_topics: Sequence[NewTopic], timeout_ms: int = 30_000, validate_only: bool = False
    ) -> None:
        request = CreateTopicsRequest(
            [
                CreatableTopic(
                    t.name,
                    t.num_partitions,
                    t.replication_factor,
                    {str(k): str(v) for k, v in t.topic_configs.items()},
                )
                for t in new_topics
            ],
            timeout_ms=timeout_ms,
            validate_only=validate_only,
        )
        response = await self._to_controller(request)
        assert isinstance(response, CreateTopicsResponse)
        _raise_first(((r.name, r.error_code, r.error_message) for r in response.topics), "create")

    async def delete_topics(self, topics: Sequence[str], timeout_ms: int = 30_000) -> None:
        response = await self._to_controller(DeleteTopicsRequest(list(topics), timeout_ms))
        assert isinstance(response, DeleteTopicsResponse)
        _raise_first(((r.name, r.error_code, r.error_message) for r in response.topics), "delete")

    async def list_topics(self) -> list[str]:
        md = await self.cluster.fetch_metadata(None)
        return sorted(t.name for t in md.topics if t.error_code == 0 and not t.is_internal)

    async def describe_topics(self, topics: Sequence[str] | None = None) -> list[TopicDescription]:
        md = await self.cluster.fetch_metadata(None if topics is None else list(topics))
        _raise_first(((t.name, t.error_code, None) for t in md.topics), "describe")
        return [
            TopicDescription(
                t.name,
                [
                    PartitionDescription(p.partition, p.leader, list(p.replicas), list(p.isr))
                    for p in sorted(t.partitions, key=lambda p: p.partition)
                ],
                t.is_internal,
            )
            for t in sorted(md.topics, key=lambda t: t.name)
        ]

    async def describe_cluster(self) -> ClusterDescription:
        md = await self.cluster.fetch_metadata([])
        return ClusterDescription(
            md.cluster_id,
            md.controller_id,
            [
                BrokerDescription(b.node_id, b.host, b.port, b.rack)
                for b in sorted(md.brokers, key=lambda b: b.node_id)
            ],
        )

    async def describe_configs(
        self, topics: Sequence[str], *, overrides_only: bool = False
    ) -> dict[str, dict[str, str]]:
        """Effective configs per topic (broker defaults overlaid by the topic's overrides);
        with ``overrides_only`` just the ones the topic sets itself."""
        response = await self.cluster.request_any(DescribeConfigsRequest(list(topics)))
        assert isinstance(response, DescribeConfigsResponse)
        _raise_first(
            ((r.name, r.error_code, r.error_message) for r in response.results), "describe configs"
        )
        if overrides_only:
            return {r.name: {k: r.configs[k] for k in r.overrides} for r in response.results}
        return {r.name: dict(r.configs) for r in response.results}

    async def elect_leaders(
        self,
        election_type: int = PREFERRED_ELECTION,
        partitions: Sequence[TopicPartition] | None = None,
        timeout_ms: int = 30_000,
    ) -> dict[TopicPartition, BrokerResponseError | None]:
        """Kafka's ``Admin.electLeaders``: move leadership to each partition's preferred
        replica (the first in its assignment). ``partitions`` None: every partition.

        Per partition: None when elected, else the error: ElectionNotNeededError (it
        already leads), PreferredLeaderNotAvailableError (not live or not in the ISR),
        UnknownTopicOrPartitionError. A request-level error (NOT_CONTROLLER after the
        retries, INVALID_REQUEST) is raised.
        """
        topics: list[ElectLeadersTopic] | None = None
        if partitions is not None:
            by_topic: dict[str, list[int]] = {}
            for tp in partitions:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            topics = [ElectLeadersTopic(t, sorted(set(ps))) for t, ps in sorted(by_topic.items())]
        response = await self._to_controller(ElectLeadersRequest(election_type, topics, timeout_ms))
        assert isinstance(response, ElectLeadersResponse)
        if response.error_code:
            raise for_code(response.error_code)(response.error_message or "elect leaders failed")
        return {
            TopicPartition(r.topic, p.partition): (
                None if p.error_code == 0 else for_code(p.error_code)(p.error_message)
            )
            for r in response.results
            for p in r.partitions
        }
