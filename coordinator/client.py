"""The coordinator client (trio), in the manner of kazoo.

One background task owns the connection: it reads replies and notifications in order,
pings after a third of the negotiated session timeout without sending, declares the
connection dead after two thirds without receiving, and on loss fails every pending
request with ``ConnectionLossError`` (the transport error chained as its cause), goes
SUSPENDED, reconnects to the next host with the same session id and password, re-arms its
outstanding watches (SetWatches) and goes CONNECTED again, or LOST if the server says the
session expired. Requests are pipelined: each waits only for its own reply.

Watchers are called from the reader, before any later reply is handed out, which gives
ZooKeeper's guarantee: a client sees the notification before it can read the new data.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import structlog
import trio

from coordinator.client_conn import (
    MAX_BACKOFF_S,
    READ_SIZE,
    _Connection,
    _Pending,
    parse_hosts,
)
from coordinator.client_types import (
    CheckOp,
    CreateOp,
    DeleteOp,
    EventType,
    SessionState,
    SetDataOp,
    Stat,
    WatchedEvent,
    Watcher,
)
from proto.errors import (
    ConnectionFailedError,
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    RemoteProtocolError,
    SessionExpiredError,
    for_code,
)
from proto.zk import (
    PROTOCOL_VERSION,
    ClientProtocol,
    CloseSessionRequest,
    ConnectRequest,
    ConnectResponse,
    CreateFlags,
    CreateRequest,
    CreateResponse,
    DeleteRequest,
    ExistsRequest,
    ExistsResponse,
    GetChildrenRequest,
    GetChildrenResponse,
    GetDataRequest,
    GetDataResponse,
    MultiOp,
    MultiRequest,
    MultiResponse,
    OpCode,
    PingRequest,
    Reply,
    SetDataRequest,
    SetDataResponse,
    SetWatchesRequest,
    SyncRequest,
)

__all__ = [
    "CheckOp",
    "CoordinatorClient",
    "CreateOp",
    "DeleteOp",
    "EventType",
    "SessionState",
    "SetDataOp",
    "Stat",
    "WatchedEvent",
    "Watcher",
    "open_coordinator",
]

_DATA, _EXIST, _CHILD = "data", "exist", "child"


class CoordinatorClient:
    """A session with the coordinator. Get one from ``open_coordinator``."""

    def __init__(
        self,
        hosts: list[tuple[str, int]],
        *,
        session_timeout_ms: int,
        connect_timeout_ms: int,
        request_timeout_ms: int,
    ) -> None:
        self.hosts = hosts
        self.session_timeout_ms = session_timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.state = SessionState.SUSPENDED
        self.session_id = 0
        self.negotiated_timeout_ms = 0
        self._password = b""
        self._last_zxid = 0
        self._closing = False
        self._host_index = 0
        self._conn: _Connection | None = None
        self._state_changed = trio.Event()
        self._listeners: list[Callable[[SessionState], None]] = []
        self._watchers: dict[str, dict[str, list[Watcher]]] = {_DATA: {}, _EXIST: {}, _CHILD: {}}
        self._log: Any = structlog.get_logger("coordinator.client")

    # --- state ------------------------------------------------------------------------

    def add_listener(self, cb: Callable[[SessionState], None]) -> None:
        self._listeners.append(cb)

    def remove_listener(self, cb: Callable[[SessionState], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(cb)

    def _set_state(self, state: SessionState) -> None:
        if state is self.state or self.state is SessionState.LOST:
            return
        self._log.info("session_state", state=state.value)
        self.state = state
        if state is SessionState.LOST:
            for table in self._watchers.values():
                table.clear()  # they can never fire now
        self._state_changed.set()
        self._state_changed = trio.Event()
        for cb in list(self._listeners):
            try:
                cb(state)
            except Exception:
                self._log.exception("listener_failed")

    # --- requests ---------------------------------------------------------------------

    async def _call(
        self, body: Any, *, watch: Watcher | None = None, kind: str = "", path: str = ""
    ) -> Any:
        pending = _Pending(watch, kind, path)
        conn: _Connection | None = self._conn
        if conn is not None and self.state is SessionState.CONNECTED:
            # The common case, without a cancel scope per request (they cost the client
            # about a fifth of its CPU under load): the connection's reaper fails the
            # request at its deadline instead.
            pending.deadline = trio.current_time() + self.request_timeout_ms / 1000
            xid, frame = conn.proto.send_request(body)
            conn.pending[xid] = pending
            conn.send_soon(frame)
            conn.reaper_wake()
            await pending.done.wait()
            return self._result(body, pending, path)
        conn = None
        xid = 0
        with trio.move_on_after(self.request_timeout_ms / 1000) as scope:
            while self.state is not SessionState.CONNECTED or self._conn is None:
                if self.state is SessionState.LOST:
                    raise SessionExpiredError(f"session {self.session_id:#x} is lost")
                await self._state_changed.wait()
            conn = self._conn
            xid, frame = conn.proto.send_request(body)
            conn.pending[xid] = pending
            conn.send_soon(frame)
            await pending.done.wait()
        if scope.cancelled_caught:
            if conn is not None:
                conn.pending.pop(xid, None)
            raise ConnectionLossError(f"no reply within {self.request_timeout_ms} ms")
        return self._result(body, pending, path)

    def _result(self, body: Any, pending: _Pending, path: str) -> Any:
        if pending.error is not None:
            raise pending.error
        reply = pending.reply
        assert reply is not None
        if reply.error_code:
            if isinstance(reply.body, MultiResponse):
                failed = [
                    i for i, r in enumerate(reply.body.results) if r.error_code == reply.error_code
                ]
                op = body.ops[failed[0]] if failed else None
                path = f"multi op {failed[0]}: {op.path}" if op is not None else "multi"
            raise for_code(reply.error_code)(path or None)
        return reply.body

    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        ephemeral: bool = False,
        sequential: bool = False,
        makepath: bool = False,
    ) -> str:
        """Create a znode; returns its path (with the sequence suffix if sequential)."""
        flags = (CreateFlags.EPHEMERAL if ephemeral else 0) | (
            CreateFlags.SEQUENTIAL if sequential else 0
        )
        resp: CreateResponse = await self._call(
            CreateRequest(path, data, int(flags), makepath), path=path
        )
        return resp.path

    async def ensure_path(self, path: str) -> None:
        """Create ``path`` and its missing parents (persistent, empty) unless it exists."""
        with contextlib.suppress(NodeExistsError):
            await self.create(path, makepath=True)

    async def delete(self, path: str, version: int = -1, *, recursive: bool = False) -> None:
        """Delete ``path`` if its version matches; ``recursive`` deletes its subtree first
        (not atomic, as kazoo's: a child created meanwhile makes it fail NotEmpty)."""
        if recursive:
            try:
                children = await self.get_children(path)
            except NoNodeError:
                return
            for child in children:
                await self.delete(f"{path.rstrip('/')}/{child}", recursive=True)
            if path == "/":
                return
        await self._call(DeleteRequest(path, version), path=path)

    async def exists(self, path: str, watch: Watcher | None = None) -> Stat | None:
        """The node's Stat or None; ``watch`` fires on its creation, change or deletion."""
        resp: ExistsResponse = await self._call(
            ExistsRequest(path, watch is not None), watch=watch, kind=_EXIST, path=path
        )
        return resp.stat

    async def get(self, path: str, watch: Watcher | None = None) -> tuple[bytes, Stat]:
        resp: GetDataResponse = await self._call(
            GetDataRequest(path, watch is not None), watch=watch, kind=_DATA, path=path
        )
        return resp.data, resp.stat

    async def set(self, path: str, data: bytes, version: int = -1) -> Stat:
        """Compare-and-set: BadVersionError unless ``version`` is -1 or the current one."""
        resp: SetDataResponse = await self._call(SetDataRequest(path, data, version), path=path)
        return resp.stat

    async def get_children(self, path: str, watch: Watcher | None = None) -> list[str]:
        resp: GetChildrenResponse = await self._call(
            GetChildrenRequest(path, watch is not None), watch=watch, kind=_CHILD, path=path
        )
        return resp.children

    async def sync(self, path: str = "/") -> None:
        await self._call(SyncRequest(path), path=path)

    async def multi(
        self, ops: Sequence[CreateOp | DeleteOp | SetDataOp | CheckOp]
    ) -> list[str | Stat | None]:
        """All ops or none. Results: created path, new Stat, or None (delete, check).
        On failure raises the typed error of the first failing op."""
        resp: MultiResponse = await self._call(MultiRequest([_multi_op(op) for op in ops]))
        out: list[str | Stat | None] = []
        for result in resp.results:
            if result.opcode == OpCode.CREATE:
                out.append(result.path)
            elif result.opcode == OpCode.SET_DATA:
                out.append(result.stat)
            else:
                out.append(None)
        return out

    # --- the connection task ----------------------------------------------------------

    def _on_reply(self, conn: _Connection, reply: Reply) -> None:
        self._last_zxid = max(self._last_zxid, reply.zxid)
        if reply.opcode == OpCode.NOTIFICATION:
            self._fire(WatchedEvent(EventType(reply.body.type), reply.body.path))
            return
        pending = conn.pending.pop(reply.xid, None)
        if pending is None:
            return  # a ping or SetWatches reply, or a request that timed out
        ok = reply.error_code == 0
        if pending.watch is not None and ok:
            kinds = self._watchers[pending.watch_kind].setdefault(pending.path, [])
            if pending.watch not in kinds:
                kinds.append(pending.watch)
        pending.reply = reply
        pending.done.set()

    def _fire(self, event: WatchedEvent) -> None:
        if event.type in (EventType.CREATED, EventType.CHANGED):
            kinds: tuple[str, ...] = (_DATA, _EXIST)
        elif event.type is EventType.DELETED:
            kinds = (_DATA, _EXIST, _CHILD)
        else:
            kinds = (_CHILD,)
        callbacks: list[Watcher] = []
        for kind in kinds:
            for cb in self._watchers[kind].pop(event.path, []):
                if cb not in callbacks:
                    callbacks.append(cb)
        for cb in callbacks:
            try:
                cb(event)
            except Exception:
                self._log.exception("watcher_failed", path=event.path)

    async def _read_loop(self, conn: _Connection) -> None:
        while True:
            with trio.move_on_after(conn.read_timeout_s) as scope:
                data = await conn.stream.receive_some(READ_SIZE)
            if scope.cancelled_caught:
                raise ConnectionLossError("no data from the server within the read timeout")
            if not data:
                raise ConnectionLossError("the server closed the connection")
            conn.proto.receive_data(data)
            while (event := conn.proto.next_event()) is not None:
                if not isinstance(event, Reply):
                    raise RemoteProtocolError("second connect response")
                self._on_reply(conn, event)

    async def _ping_loop(self, conn: _Connection) -> None:
        while True:
            due = conn.last_send + conn.ping_interval_s
            if trio.current_time() >= due:
                conn.last_send = trio.current_time()  # the writer sets it again
                conn.send_soon(conn.proto.send_request(PingRequest())[1])
                continue
            await trio.sleep_until(due)

    async def _serve_connection(self, conn: _Connection) -> BaseException:
        """Run one connection until it fails; returns why."""

        async def guarded(fn: Callable[[_Connection], Any], cancel: trio.CancelScope) -> None:
            try:
                await fn(conn)
            except (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                RemoteProtocolError,
                ConnectionLossError,
            ) as exc:
                if conn.failure is None:
                    conn.failure = exc
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, self._read_loop, nursery.cancel_scope)
            nursery.start_soon(guarded, self._ping_loop, nursery.cancel_scope)
            nursery.start_soon(guarded, _Connection.write_loop, nursery.cancel_scope)
            reap = functools.partial(_Connection.reap_loop, timeout_ms=self.request_timeout_ms)
            nursery.start_soon(guarded, reap, nursery.cancel_scope)
        return conn.failure or ConnectionLossError("connection ended")

    def _drop_connection(self, conn: _Connection, cause: BaseException) -> None:
        if self._conn is conn:
            self._conn = None
        for pending in conn.pending.values():
            error = ConnectionLossError("connection lost with the request in flight")
            error.__cause__ = cause
            pending.error = error
            pending.done.set()
        conn.pending.clear()

    async def _run(self, conn: _Connection) -> None:
        while True:
            cause = await self._serve_connection(conn)
            if self._closing:  # we closed it ourselves: nothing was lost
                self._drop_connection(conn, cause)
                await trio.aclose_forcefully(conn.stream)
                return
            self._log.warning("connection_lost", error=str(cause))
            self._drop_connection(conn, cause)
            await trio.aclose_forcefully(conn.stream)
            self._set_state(SessionState.SUSPENDED)
            reconnected = await self._reconnect()
            if reconnected is None:
                return
            conn = reconnected

    async def _reconnect(self) -> _Connection | None:
        backoff = 0.05
        while True:
            for _ in range(len(self.hosts)):
                host, port = self.hosts[self._host_index]
                self._host_index = (self._host_index + 1) % len(self.hosts)
                try:
                    return await self._handshake(host, port, self._reconnect_timeout_ms())
                except SessionExpiredError:
                    self._set_state(SessionState.LOST)
                    return None
                except (OSError, trio.TooSlowError, trio.BrokenResourceError,
                        RemoteProtocolError, ConnectionLossError) as exc:  # fmt: skip
                    self._log.debug("connect_failed", host=host, port=port, error=str(exc))
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _reconnect_timeout_ms(self) -> int:
        """Per attempt, as ZooKeeper's client: the session timeout shared among the hosts,
        so a member that cannot let us in (no leader) does not use up the whole session."""
        share = self.negotiated_timeout_ms // len(self.hosts)
        return min(self.connect_timeout_ms, share) if share > 0 else self.connect_timeout_ms

    async def _handshake(self, host: str, port: int, timeout_ms: int | None = None) -> _Connection:
        """Connect and establish (or resume) the session; CONNECTED on return."""
        with trio.fail_after((timeout_ms or self.connect_timeout_ms) / 1000):
            stream = await trio.open_tcp_stream(host, port)
            try:
                proto = ClientProtocol()
                request = ConnectRequest(
                    PROTOCOL_VERSION,
                    self._last_zxid,
                    self.session_timeout_ms,
                    self.session_id,
                    self._password,
                )
                await stream.send_all(proto.connect(request))
                response = None
                while response is None:
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        raise ConnectionLossError(f"{host}:{port} closed during handshake")
                    proto.receive_data(data)
                    event = proto.next_event()
                    if event is not None and not isinstance(event, ConnectResponse):
                        raise RemoteProtocolError("expected a connect response")
                    response = event
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        if response.timeout_ms <= 0:
            await trio.aclose_forcefully(stream)
            raise SessionExpiredError(f"session {self.session_id:#x} expired")
        # On loss, try the next host first (the one that failed comes last).
        self._host_index = (self.hosts.index((host, port)) + 1) % len(self.hosts)
        self.session_id = response.session_id
        self._password = response.password
        self.negotiated_timeout_ms = response.timeout_ms
        self._log = self._log.bind(session_id=f"{self.session_id:#x}")
        timeout_s = response.timeout_ms / 1000
        conn = _Connection(stream, proto, timeout_s * 2 / 3, timeout_s / 3)
        conn.last_send = trio.current_time()
        watches = self._watchers
        if any(watches.values()):
            rearm = SetWatchesRequest(
                self._last_zxid, list(watches[_DATA]), list(watches[_EXIST]), list(watches[_CHILD])
            )
            await conn.send(proto.send_request(rearm)[1])
        self._log.info("connected", host=host, port=port, timeout_ms=response.timeout_ms)
        self._conn = conn
        self._set_state(SessionState.CONNECTED)
        return conn

    async def _connect_first(self) -> _Connection:
        """First connection: try the hosts until one answers or connect_timeout_ms ends."""
        last: BaseException | None = None
        with trio.move_on_after(self.connect_timeout_ms / 1000):
            backoff = 0.05
            while True:
                for host, port in self.hosts:
                    try:
                        return await self._handshake(host, port)
                    except (OSError, trio.TooSlowError, trio.BrokenResourceError,
                            RemoteProtocolError, ConnectionLossError) as exc:  # fmt: skip
                        last = exc
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        raise ConnectionFailedError(f"no coordinator answered at {self.hosts}") from last

    async def _close(self) -> None:
        """Close the session (the server deletes its ephemerals), then the connection."""
        self._closing = True
        if self.state is SessionState.CONNECTED:
            with trio.move_on_after(self.request_timeout_ms / 1000):
                try:
                    await self._call(CloseSessionRequest())
                except (ConnectionLossError, SessionExpiredError) as exc:
                    self._log.warning("close_session_failed", error=str(exc))
        conn = self._conn
        self._set_state(SessionState.LOST)
        if conn is not None:
            self._drop_connection(conn, ConnectionLossError("client closed"))
            await trio.aclose_forcefully(conn.stream)


def _multi_op(op: CreateOp | DeleteOp | SetDataOp | CheckOp) -> MultiOp:
    if isinstance(op, CreateOp):
        flags = (CreateFlags.EPHEMERAL if op.ephemeral else 0) | (
            CreateFlags.SEQUENTIAL if op.sequential else 0
        )
        return MultiOp(OpCode.CREATE, op.path, op.data, int(flags))
    if isinstance(op, DeleteOp):
        return MultiOp(OpCode.DELETE, op.path, version=op.version)
    if isinstance(op, SetDataOp):
        return MultiOp(OpCode.SET_DATA, op.path, op.data, version=op.version)
    return MultiOp(OpCode.CHECK, op.path, version=op.version)


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise a group holding exactly one exception as that exception, bare: its own
    traceback and ``__cause__`` kept, and its ``__context__`` not replaced by the group
    (trio's ``raise_saving_context`` idiom); any other group is raised unchanged."""
    if len(group.exceptions) != 1:
        raise group
    exc = group.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        _reraise_single(exc)
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context, group


@asynccontextmanager
async def open_coordinator(
    hosts: str,
    *,
    session_timeout_ms: int = 10_000,
    connect_timeout_ms: int = 10_000,
    request_timeout_ms: int = 10_000,
) -> AsyncIterator[CoordinatorClient]:
    """Connect to one of ``hosts`` ("h:p,h:p") and open a session; closing the context
    closes the session (its ephemerals are deleted). Raises ConnectionFailedError if no
    server answers within connect_timeout_ms.

    The body runs inside the client's nursery, but an error it raises comes out bare
    (not wrapped in an ExceptionGroup), so ``except NoNodeError:`` around the ``async
    with`` works; only several errors at once come out as a group."""
    client = CoordinatorClient(
        parse_hosts(hosts),
        session_timeout_ms=session_timeout_ms,
        connect_timeout_ms=connect_timeout_ms,
        request_timeout_ms=request_timeout_ms,
    )
    conn = await client._connect_first()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._run, conn)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _reraise_single(group)
