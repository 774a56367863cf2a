"""The client's view of the cluster: brokers, topic partitions, leaders, and connections.

``Cluster`` owns the metadata cache and one ``BrokerConnection`` per broker address. It
bootstraps from the configured list, refreshes metadata for the topics its client cares
about (single-flight, at most once per ``retry_backoff_ms`` unless forced), and reconnects
lazily: a failed connection is dropped and the next request opens a new one. Listeners
(the producer's sender, the consumer's fetcher) are told after every update.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from client.conn import BrokerConnection
from client.errors import (
    BrokerResponseError,
    ClientError,
    ConfigurationError,
    ConnectionFailedError,
    NoBrokersAvailableError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)
from client.logs import get_logger
from client.types import TopicPartition
from proto.messages import (
    BrokerMetadata,
    MetadataRequest,
    MetadataResponse,
    PartitionMetadata,
    Request,
    Response,
)

__all__ = ["Cluster", "ConnectionConfig", "parse_bootstrap"]

log = get_logger("client.cluster")

Address = tuple[str, int]


def parse_bootstrap(servers: str | Iterable[str]) -> list[Address]:
    """``"h:p,h:p"`` (or a list of ``"h:p"``) as (host, port) pairs."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[Address] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigurationError(f"bootstrap server {item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ConfigurationError("bootstrap_servers is empty")
    return out


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """What every client shares: where to start and how long to wait, in ms."""

    bootstrap_servers: tuple[Address, ...]
    client_id: str | None = None
    request_timeout_ms: int = 30_000
    retry_backoff_ms: int = 100
    metadata_max_age_ms: int = 300_000

    def __post_init__(self) -> None:
        for name in ("request_timeout_ms", "retry_backoff_ms", "metadata_max_age_ms"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a non-negative number, not {value!r}")


class Cluster:
    def __init__(self, config: ConnectionConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self._nursery = nursery
        self.brokers: dict[int, BrokerMetadata] = {}
        self.partitions: dict[str, list[PartitionMetadata]] = {}
        self.topic_errors: dict[str, int] = {}
        self.cluster_id: str | None = None
        self.controller_id = -1
        self.wanted: set[str] = set()
        self.listeners: list[Callable[[], None]] = []
        self._conns: dict[Address, BrokerConnection] = {}
        self._connect_locks: dict[Address, trio.Lock] = {}
        self._refresh_lock = trio.Lock()
        self._last_refresh = -float("inf")
        self._update_task_running = False
        self._closed = False

    # --- metadata -------------------------------------------------------------------

    def leader_for(self, tp: TopicPartition) -> int | None:
        parts = self.partitions.get(tp.topic)
        if parts is None or tp.partition >= len(parts):
            return None
        leader = parts[tp.partition].leader
        return leader if leader >= 0 and leader in self.brokers else None

    def available_partitions(self, topic: str) -> list[int]:
        return [p.partition for p in self.partitions.get(topic, ()) if p.leader in self.brokers]

    async def refresh(self, topics: Iterable[str] = (), *, force: bool = True) -> None:
        """Fetch metadata for ``wanted`` plus ``topics`` now (or wait for a running one)."""
        topics = list(topics)
        self.wanted.update(topics)
        started = trio.current_time()
        async with self._refresh_lock:
            if self._last_refresh >= started and not set(topics) - self.partitions.keys():
                return  # someone refreshed while we waited for the lock
            if not force:
                delay = self._last_refresh + self.config.retry_backoff_ms / 1000
                await trio.sleep_until(delay)
            response = await self.request_any(MetadataRequest(sorted(self.wanted)))
            assert isinstance(response, MetadataResponse)
            self._apply(response)
            self._last_refresh = trio.current_time()
        for listener in list(self.listeners):
            listener()

    def refresh_if_stale(self) -> None:
        """Schedule a refresh when the cache is older than metadata_max_age_ms."""
        if trio.current_time() - self._last_refresh > self.config.metadata_max_age_ms / 1000:
            self.request_update()

    def request_update(self) -> None:
        """Ask for a background refresh (after the backoff); cheap to call repeatedly."""
        if not self._update_task_running and not self._closed:
            self._update_task_running = True
            self._nursery.start_soon(self._update_task)

    async def _update_task(self) -> None:
        try:
            while not self._closed:
                try:
                    await self.refresh(force=False)
                    return
                except (ClientError, BrokerResponseError) as exc:
                    log.info("metadata_refresh_failed", error=str(exc))
                    await trio.sleep(self.config.retry_backoff_ms / 1000)
        finally:
            self._update_task_running = False

    async def fetch_metadata(self, topics: list[str] | None) -> MetadataResponse:
        """One Metadata request (``None``: every topic); also updates the cache."""
        response = await self.request_any(MetadataRequest(topics))
        assert isinstance(response, MetadataResponse)
        self._apply(response, partial=topics is not None)
        return response

    def _apply(self, response: MetadataResponse, *, partial: bool = True) -> None:
        self.brokers = {b.node_id: b for b in response.brokers}
        self.cluster_id = response.cluster_id
        self.controller_id = response.controller_id
        for t in response.topics:
            if t.error_code == 0 or t.partitions:
                self.partitions[t.name] = sorted(t.partitions, key=lambda p: p.partition)
                self.topic_errors.pop(t.name, None)
            else:
                self.partitions.pop(t.name, None)
                self.topic_errors[t.name] = t.error_code
        if not partial:
            seen = {t.name for t in response.topics}
            for name in list(self.partitions):
                if name not in seen:
                    del self.partitions[name]

    async def partitions_for(self, topic: str) -> list[PartitionMetadata]:
        """The partitions of ``topic``, fetching metadata if unknown.

        Raises UnknownTopicOrPartitionError if the cluster does not know the topic.
        """
        parts = self.partitions.get(topic)
        if parts is None:
            await self.refresh([topic])
            parts = self.partitions.get(topic)
            if parts is None:
                raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        return parts

    # --- connections ----------------------------------------------------------------

    async def connection(self, node_id: int) -> BrokerConnection:
        broker = self.brokers.get(node_id)
        if broker is None:
            raise ConnectionFailedError(f"broker {node_id} is not in the metadata")
        return await self._connect((broker.host, broker.port))

    async def _connect(self, addr: Address) -> BrokerConnection:
        lock = self._connect_locks.setdefault(addr, trio.Lock())
        async with lock:
            conn = self._conns.get(addr)
            if conn is not None and conn.connected:
                return conn
            conn = BrokerConnection(
                addr[0],
                addr[1],
                client_id=self.config.client_id,
                request_timeout_ms=self.config.request_timeout_ms,
            )
            await conn.connect(self._nursery)
            self._conns[addr] = conn
            return conn

    def _candidates(self) -> list[Address]:
        live = [a for a, c in self._conns.items() if c.connected]
        known = [(b.host, b.port) for b in self.brokers.values()]
        random.shuffle(known)
        boot = list(self.config.bootstrap_servers)
        out: list[Address] = []
        for a in live + known + boot:
            if a not in out:
                out.append(a)
        return out

    async def request_any(self, request: Request) -> Response:
        """Send to any reachable broker (connected ones first, then the bootstrap list)."""
        last: BaseException | None = None
        for addr in self._candidates():
            try:
                conn = await self._connect(addr)
                return await conn.request(request)
            except (ConnectionFailedError, RequestTimedOutError) as exc:
                last = exc  # dead or frozen: the next one
        tried = ",".join(f"{h}:{p}" for h, p in self._candidates())
        raise NoBrokersAvailableError(f"no broker answered at {tried}") from last

    async def request_node(self, node_id: int, request: Request) -> Response:
        conn = await self.connection(node_id)
        return await conn.request(request)

    async def aclose(self) -> None:
        self._closed = True
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            await conn.aclose()
