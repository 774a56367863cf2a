"""Finding the group coordinator and talking to it.

``CoordinatorLink`` looks the coordinator up with FindCoordinator (one lookup at a time,
in a background task that outlives a caller's deadline, so ``poll(timeout_ms=0)`` makes
progress across calls as Kafka's lookup future does) and keeps two connections to it:
the broker answers the requests of one connection one at a time, and a JoinGroup or
SyncGroup may be held for up to the rebalance timeout, so heartbeats, commits, offset
fetches and LeaveGroup use a connection of their own. A failed connection or a
NOT_COORDINATOR answer marks the coordinator unknown; both connections are closed (their
pending requests fail) and the next request looks it up again.
"""

from __future__ import annotations

import trio

from client.cluster import Cluster
from client.conn import BrokerConnection
from client.errors import (
    BrokerResponseError,
    ClientError,
    CoordinatorNotAvailableError,
    MinibrokerError,
    for_code,
)
from client.group.responses import FIND_COORDINATOR, Action, action_for
from client.logs import get_logger
from proto.group_messages import FindCoordinatorRequest, FindCoordinatorResponse
from proto.messages import Request, Response

__all__ = ["CoordinatorLink", "CoordinatorUnknownError"]

log = get_logger("client.group.discovery")


class CoordinatorUnknownError(CoordinatorNotAvailableError):
    """Raised by ``send`` when no coordinator is known (look it up first)."""


class CoordinatorLink:
    def __init__(self, group_id: str, cluster: Cluster, nursery: trio.Nursery) -> None:
        self.group_id = group_id
        self._cluster = cluster
        self._nursery = nursery
        self._config = cluster.config
        self.node: tuple[int, str, int] | None = None  # (node id, host, port)
        self._conns: dict[bool, BrokerConnection] = {}  # join? -> connection
        self._connect_lock = trio.Lock()
        self._lookup_done: trio.Event | None = None  # set while a lookup task runs
        self._lookup_error: MinibrokerError | None = None
        self._log = log.bind(group_id=group_id)

    @property
    def known(self) -> bool:
        return self.node is not None

    # -- lookup -------------------------------------------------------------------------

    async def ensure(self, deadline: float) -> bool:
        """Wait until the coordinator is known; False if ``deadline`` (trio time) passed
        first. Raises a non-retriable lookup error (the lookup task ends with it)."""
        while self.node is None:
            if self._lookup_done is None:
                self._lookup_done = trio.Event()
                self._lookup_error = None
                self._nursery.start_soon(self._lookup, self._lookup_done)
            done = self._lookup_done
            with trio.move_on_at(deadline):
                await done.wait()
            if not done.is_set():
                return False
            if self._lookup_error is not None:
                raise self._lookup_error
        return True

    async def _lookup(self, done: trio.Event) -> None:
        backoff = self._config.retry_backoff_ms / 1000
        try:
            while self.node is None:
                try:
                    resp = await self._cluster.request_any(FindCoordinatorRequest(self.group_id))
                    assert isinstance(resp, FindCoordinatorResponse)
                    code = resp.error_code
                except ClientError as exc:
                    self._log.info("find_coordinator_failed", error=str(exc))
                    await trio.sleep(backoff)
                    continue
                except BrokerResponseError as exc:  # request-level, e.g. UNSUPPORTED_VERSION
                    code = exc.code
                    resp = FindCoordinatorResponse(code, -1, "", -1, exc.message)
                action = action_for(FIND_COORDINATOR, code)
                if action is Action.OK:
                    self.node = (resp.node_id, resp.host, resp.port)
                    self._log.info("coordinator_found", node_id=resp.node_id)
                elif action is Action.BACKOFF:
                    self._log.info("coordinator_not_ready", error=for_code(code).name)
                    await trio.sleep(backoff)
                else:
                    self._lookup_error = for_code(code)(
                        resp.error_message or f"FindCoordinator for group {self.group_id!r}"
                    )
                    return
        finally:
            self._lookup_done = None
            done.set()

    def mark_unknown(self, reason: str, node: tuple[int, str, int] | None = None) -> None:
        """Forget the coordinator (unless ``node`` says the failure was of an older one)
        and close its connections: what is pending on them fails."""
        if self.node is None or (node is not None and node != self.node):
            return
        self._log.info("coordinator_unknown", node_id=self.node[0], reason=reason)
        self.node = None
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            self._nursery.start_soon(conn.aclose)

    # -- requests -------------------------------------------------------------------------

    async def send(
        self, request: Request, *, join: bool = False, timeout_ms: float | None = None
    ) -> Response:
        """Send to the coordinator. A broken or timed-out connection marks it unknown and
        raises the ClientError; a request-level error code raises its BrokerResponseError."""
        node = self.node
        if node is None:
            raise CoordinatorUnknownError(f"no coordinator known for group {self.group_id!r}")
        try:
            conn = await self._connection(node, join)
            return await conn.request(request, timeout_ms=timeout_ms)
        except ClientError as exc:
            self.mark_unknown(f"{type(request).__name__}: {exc}", node)
            raise

    async def _connection(self, node: tuple[int, str, int], join: bool) -> BrokerConnection:
        async with self._connect_lock:
            conn = self._conns.get(join)
            if conn is not None and conn.connected:
                return conn
            cfg = self._config
            conn = BrokerConnection(
                node[1], node[2], client_id=cfg.client_id, request_timeout_ms=cfg.request_timeout_ms
            )
            await conn.connect(self._nursery)
            if self.node != node:  # forgotten while we connected
                self._nursery.start_soon(conn.aclose)
                raise CoordinatorUnknownError(f"coordinator of {self.group_id!r} moved")
            self._conns[join] = conn
            return conn

    async def aclose(self) -> None:
        conns, self._conns = self._conns, {}
        self.node = None
        for conn in conns.values():
            await conn.aclose()
