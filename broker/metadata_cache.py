"""The broker's view of cluster metadata, kept current from the coordinator by watches.

``MetadataCache.run`` loads brokers, topics, partition states and topic configs, publishes
an immutable ``ClusterView`` and reloads whenever one of its watches fires. Request handlers
read ``cache.view`` without awaiting; a miss for a topic that was created a moment ago is
answered by ``refresh_now``, which reloads before the handler gives up.

Watches are one-shot and the client keeps every watcher it is given until it fires, so the
cache passes a watcher only for paths whose previous watch has already fired (``_armed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from broker import zk_layout as zl
from coordinator.client import CoordinatorClient, WatchedEvent
from proto.errors import (
    ConnectionLossError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
    SessionMovedError,
)

log = structlog.get_logger("broker.metadata")


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    replicas: list[int]
    state: zl.PartitionState | None  # None until the state znode exists
    version: int = -1  # the state znode's version (for compare-and-set), -1 without one


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: str
    partitions: dict[int, PartitionInfo]
    config: dict[str, str]


@dataclass(frozen=True, slots=True)
class ClusterView:
    cluster_id: str | None = None
    brokers: dict[int, zl.BrokerRegistration] = field(default_factory=dict)
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    controller_id: int = -1  # from ``/controller``; -1 while there is none

    def partition(self, topic: str, partition: int) -> PartitionInfo | None:
        t = self.topics.get(topic)
        return None if t is None else t.partitions.get(partition)


class MetadataCache:
    def __init__(
        self,
        zk: CoordinatorClient,
        on_change: Callable[[ClusterView], None] | None = None,
    ) -> None:
        self._zk = zk
        self._on_change = on_change
        self.view = ClusterView()
        self._dirty = trio.Event()
        self._armed: set[str] = set()
        self._loads_started = 0
        self._loaded_through = 0
        self._load_lock = trio.Lock()

    def _watcher(self, event: WatchedEvent) -> None:
        self._armed.discard(event.path)
        self._dirty.set()

    def _watch(self, path: str) -> Callable[[WatchedEvent], None] | None:
        if path in self._armed:
            return None
        self._armed.add(path)
        return self._watcher

    async def _children(self, path: str) -> list[str]:
        try:
            return await self._zk.get_children(path, watch=self._watch(path))
        except NoNodeError:
            self._armed.discard(path)
            return []

    async def _data(self, path: str) -> bytes | None:
        data, _version = await self._data_version(path)
        return data

    async def _data_version(self, path: str) -> tuple[bytes | None, int]:
        """A znode's data and version; (None, -1) when it does not exist."""
        try:
            data, stat = await self._zk.get(path, watch=self._watch(path))
            return data, stat.version
        except NoNodeError:
            # A watch on a missing node is an exists watch: arm it so creation wakes us.
            self._armed.discard(path)
            if await self._zk.exists(path, watch=self._watch(path)) is not None:
                self._dirty.set()
            return None, -1

    async def _load(self) -> ClusterView:
        cluster_id = await self._data(zl.CLUSTER_ID)
        brokers: dict[int, zl.BrokerRegistration] = {}
        for child in await self._children(zl.BROKER_IDS):
            if not child.isdigit():
                continue
            data = await self._data(zl.broker_path(int(child)))
            if data is not None:
                brokers[int(child)] = zl.BrokerRegistration.decode(int(child), data)
        topics: dict[str, TopicInfo] = {}
        for name in await self._children(zl.TOPICS):
            info = await self._load_topic(name)
            if info is not None:
                topics[name] = info
        raw_controller = await self._data(zl.CONTROLLER)
        controller_id = (
            zl.ControllerZnode.decode(raw_controller).broker_id if raw_controller else -1
        )
        return ClusterView(
            cluster_id.decode() if cluster_id else None, brokers, topics, controller_id
        )

    async def _load_topic(self, name: str) -> TopicInfo | None:
        data = await self._data(zl.topic_path(name))
        if data is None:
            return None
        assignment = zl.TopicAssignment.decode(name, data)
        partitions: dict[int, PartitionInfo] = {}
        for p, replicas in assignment.partitions.items():
            path = zl.partition_state_path(name, p)
            raw, version = await self._data_version(path)
            state = zl.PartitionState.decode(path, raw) if raw is not None else None
            partitions[p] = PartitionInfo(name, p, replicas, state, version)
        raw_config = await self._data(zl.topic_config_path(name))
        config = zl.decode_topic_config(name, raw_config) if raw_config else {}
        return TopicInfo(name, assignment.topic_id, partitions, config)

    async def refresh_now(self) -> ClusterView:
        """Reload at once (used on a cache miss); concurrent callers share one reload."""
        want = self._loads_started + 1  # a load that starts after this call
        async with self._load_lock:
            if self._loaded_through < want:
                self._loads_started += 1
                number = self._loads_started
                view = await self._load()
                self._loaded_through = number
                self._publish(view)
        return self.view

    def _publish(self, view: ClusterView) -> None:
        old, self.view = self.view, view
        if view != old:
            log.info(
                "metadata_updated",
                brokers=sorted(view.brokers),
                topics=len(view.topics),
            )
            if self._on_change is not None:
                self._on_change(view)

    def mark_dirty(self) -> None:
        """Force a reload (after a session loss, when watches may have been missed)."""
        self._armed.clear()
        self._dirty.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.refresh_now()
        task_status.started()
        delay = 0.05
        while True:
            await self._dirty.wait()
            # Replaced only here: a ``refresh_now`` from elsewhere must not orphan the
            # event this loop waits on (a watch firing meanwhile would never wake it).
            self._dirty = trio.Event()
            try:
                await self.refresh_now()
                delay = 0.05
            except SessionExpiredError:
                # The session is gone: the broker replaces it with a new one and a new cache
                # loop; this one ends quietly.
                log.info("metadata_session_expired")
                return
            except (ConnectionLossError, OperationTimeoutError, SessionMovedError) as exc:
                # The session is moving to another coordinator member: try again shortly
                # (the client queues requests until it reconnects).
                log.warning("metadata_refresh_failed", error=str(exc), retry_s=delay)
                self._dirty.set()
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)
