"""The standalone server's request processor. Sans-IO: no trio, no sockets, time as input.

ZooKeeper's pipeline (prep -> sync -> final) collapsed into one call: ``process(batch)``
handles a batch of inputs in arrival order (connects, requests, session expiries). Each
write is prepared against the tree, appended to the txn log and applied at once, so later
ops in the batch see it; the batch's txns are then committed with ONE fsync (group
commit), and only after that are the replies and watch notifications released. So no
client ever observes a change that is not durable, and on every connection a watch
notification precedes the reply to any later read (outputs keep processing order).

The engine also owns which connection carries which session, the session tracker and the
watch table; the I/O layer only moves bytes and reports time.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.config import CoordinatorConfig
from coordinator.prepare import (
    MultiAborted,
    prepare_create,
    prepare_delete,
    prepare_multi,
    prepare_set_data,
    validate_path,
)
from coordinator.sessions import SessionTracker, first_session_id
from coordinator.snapshot import RecoveryInfo, Storage
from coordinator.tree import ApplyResult, DataTree
from coordinator.txn import CloseSessionTxn, CreateSessionTxn, Txn, TxnOp, make_zxid
from coordinator.txn import zxid_epoch as epoch_of
from coordinator.watches import WatchManager
from proto.codec import packb, to_wire
from proto.errors import BrokerResponseError, NoNodeError, RuntimeInconsistencyError
from proto.framing import encode_frame
from proto.zk import (
    PING_XID,
    PROTOCOL_VERSION,
    CloseSessionRequest,
    ConnectRequest,
    ConnectResponse,
    CreateRequest,
    CreateResponse,
    DeleteRequest,
    EmptyResponse,
    EventType,
    ExistsRequest,
    ExistsResponse,
    GetChildrenRequest,
    GetChildrenResponse,
    GetDataRequest,
    GetDataResponse,
    MultiRequest,
    MultiResponse,
    MultiResult,
    OpCode,
    SetDataRequest,
    SetDataResponse,
    SetWatchesRequest,
    Stat,
    SyncRequest,
    SyncResponse,
    WatcherEvent,
    encode_reply,
)

__all__ = ["NOT_LOCAL", "Close", "Connect", "Engine", "Expire", "Output", "Request", "Send"]

SYNC_CONNECTED = 3
NOT_LOCAL: Any = object()  # answer_local: the request is a write or a sync


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    conn_id: int
    request: ConnectRequest


@dataclass(frozen=True, slots=True)
class Request:
    conn_id: int
    xid: int
    body: Any  # a proto.zk request dataclass
    arrived_ms: int


@dataclass(frozen=True, slots=True)
class Expire:
    session_id: int


# --- outputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    conn_id: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Close:
    conn_id: int
    reason: str


Output = Send | Close


class Engine:
    __slots__ = (
        "_conn_session",
        "_counter",
        "_epoch",
        "_next_session_id",
        "_session_conn",
        "config",
        "latency",
        "recovery",
        "sessions",
        "storage",
        "tree",
        "watches",
    )

    def __init__(self, config: CoordinatorConfig, *, now_ms: int, wall_ms: int) -> None:
        self.config = config
        self.storage = Storage(
            config.data_dir,
            snapshot_count=config.snapshot_count,
            snap_retain_count=config.snap_retain_count,
            force_sync=config.force_sync,
        )
        self.tree: DataTree
        self.recovery: RecoveryInfo
        self.tree, self.recovery = self.storage.recover()
        # A new epoch per start, as a new ZAB leader would take: zxids never repeat.
        self._epoch = epoch_of(self.tree.last_zxid) + 1
        self._counter = 0
        self.sessions = SessionTracker(config.min_timeout_ms, config.max_timeout_ms)
        for record in self.tree.sessions.values():
            self.sessions.add(record.session_id, record.timeout_ms, now_ms)  # fresh timeout
        self._next_session_id = first_session_id(config.id, wall_ms)
        self.watches = WatchManager()
        self._conn_session: dict[int, int] = {}
        self._session_conn: dict[int, int] = {}
        self.latency = LatencyStats()

    # --- connections ------------------------------------------------------------------

    def session_of(self, conn_id: int) -> int | None:
        return self._conn_session.get(conn_id)

    def touch(self, conn_id: int, now_ms: int) -> None:
        sid = self._conn_session.get(conn_id)
        if sid is not None:
            self.sessions.touch(sid, now_ms)

    def connection_closed(self, conn_id: int, now_ms: int | None = None) -> None:
        """Forget the connection. ``now_ms`` is given when the client's side closed it
        (not we, for a moved or expired session): its session then expires after the
        disconnect grace unless the client comes back (sessions.py)."""
        self.watches.remove_watcher(conn_id)
        sid = self._conn_session.pop(conn_id, None)
        if sid is not None and self._session_conn.get(sid) == conn_id:
            del self._session_conn[sid]
            if now_ms is not None:
                self._disconnected(sid, now_ms)

    def _disconnected(self, sid: int, now_ms: int) -> None:
        self.sessions.disconnected(sid, now_ms, self.config.session_disconnect_grace_ms)

    def expired(self, now_ms: int) -> list[Expire]:
        return [Expire(sid) for sid in self.sessions.expired(now_ms)]

    def ping_reply(self) -> bytes:
        return self._frame(PING_XID, 0, None)

    # --- the batch --------------------------------------------------------------------

    def process(
        self, batch: Sequence[Connect | Request | Expire], *, now_ms: int, wall_ms: int
    ) -> list[Output]:
        out: list[Output] = []
        for item in batch:
            if isinstance(item, Request):
                self._request(item, out, now_ms, wall_ms)
                self.latency.record(now_ms - item.arrived_ms)
            elif isinstance(item, Connect):
                self._connect(item, out, now_ms, wall_ms)
            else:
                self._expire(item.session_id, out, wall_ms)
        self.storage.commit()  # the group's one fsync; replies are released after it
        if self.storage.snapshot_due():
            self.storage.snapshot(self.tree)
        return out

    def close(self) -> None:
        self.storage.close()

    # --- writes -----------------------------------------------------------------------

    def _write(self, session_id: int, op: TxnOp, wall_ms: int, out: list[Output]) -> ApplyResult:
        self._counter += 1
        txn = Txn(make_zxid(self._epoch, self._counter), wall_ms, session_id, op)
        self.storage.log.append(txn)
        result = self.tree.apply(txn)
        for path, event in result.events:
            for conn_id in self.watches.trigger(path, event):
                out.append(Send(conn_id, self._notification(txn.zxid, path, event)))
        return result

    def _connect(self, item: Connect, out: list[Output], now_ms: int, wall_ms: int) -> None:
        req = item.request
        if req.last_zxid_seen > self.tree.last_zxid:
            # The client saw a newer state than ours; it must find another server.
            out.append(Close(item.conn_id, "client_zxid_ahead"))
            return
        if req.session_id == 0:
            timeout_ms = self.sessions.negotiate(req.timeout_ms)
            sid = self._new_session_id()
            password = secrets.token_bytes(16)
            self._write(sid, CreateSessionTxn(timeout_ms, password), wall_ms, out)
            self.sessions.add(sid, timeout_ms, now_ms)
        else:
            sid = req.session_id
            record = self.tree.sessions.get(sid)
            if (
                record is None
                or not self.sessions.is_live(sid)
                or not secrets.compare_digest(record.password, req.password)
            ):
                expired = ConnectResponse(PROTOCOL_VERSION, 0, 0, b"")
                out.append(Send(item.conn_id, self._connect_frame(expired)))
                out.append(Close(item.conn_id, "session_expired"))
                return
            timeout_ms, password = record.timeout_ms, record.password
            self.sessions.touch(sid, now_ms)
            old = self._session_conn.get(sid)
            if old is not None and old != item.conn_id:
                self.connection_closed(old)
                out.append(Close(old, "session_moved"))
        self._conn_session[item.conn_id] = sid
        self._session_conn[sid] = item.conn_id
        response = ConnectResponse(PROTOCOL_VERSION, timeout_ms, sid, password)
        out.append(Send(item.conn_id, self._connect_frame(response)))

    def _new_session_id(self) -> int:
        while self._next_session_id in self.tree.sessions:
            self._next_session_id += 1
        sid = self._next_session_id
        self._next_session_id += 1
        return sid

    def _expire(self, session_id: int, out: list[Output], wall_ms: int) -> None:
        self.sessions.remove(session_id)
        if session_id in self.tree.sessions:
            self._write(session_id, CloseSessionTxn(), wall_ms, out)
        conn = self._session_conn.get(session_id)
        if conn is not None:
            self.connection_closed(conn)
            out.append(Close(conn, "session_expired"))

    # --- requests ---------------------------------------------------------------------

    def _request(self, item: Request, out: list[Output], now_ms: int, wall_ms: int) -> None:
        sid = self._conn_session.get(item.conn_id)
        if sid is None:
            out.append(Close(item.conn_id, "request_before_connect"))
            return
        body = item.body
        try:
            reply = self._dispatch(item.conn_id, sid, body, out, wall_ms)
        except MultiAborted as exc:
            results = self._aborted_results(body, exc)
            out.append(Send(item.conn_id, self._frame(item.xid, exc.error.code, results)))
            return
        except BrokerResponseError as exc:
            out.append(Send(item.conn_id, self._frame(item.xid, exc.code, None)))
            return
        out.append(Send(item.conn_id, self._frame(item.xid, 0, reply)))
        if isinstance(body, CloseSessionRequest):
            self.connection_closed(item.conn_id)
            out.append(Close(item.conn_id, "session_closed"))

    def _dispatch(self, conn: int, sid: int, body: Any, out: list[Output], wall_ms: int) -> Any:
        if isinstance(body, SyncRequest):
            validate_path(body.path)
            return SyncResponse(body.path)
        local = self.answer_local(conn, body, out)
        if local is not NOT_LOCAL:
            return local
        if isinstance(body, CloseSessionRequest):
            self.sessions.remove(sid)
            self._session_conn.pop(sid, None)
        op = self.prepare_op(self.tree, sid, body)
        return self.write_reply(body, self._write(sid, op, wall_ms, out).value)

    def answer_local(self, conn: int, body: Any, out: list[Output]) -> Any:
        """Reads (and SetWatches) answered from the local tree; ``NOT_LOCAL`` for a write
        or a sync. Raises the typed error of a failed read."""
        tree = self.tree
        if isinstance(body, GetDataRequest):
            validate_path(body.path)
            node = tree.get(body.path)
            if node is None:
                raise NoNodeError(body.path)
            if body.watch:
                self.watches.add_data_watch(body.path, conn)
            return GetDataResponse(node.data, node.stat())
        if isinstance(body, ExistsRequest):
            validate_path(body.path)
            node = tree.get(body.path)
            if body.watch:
                self.watches.add_data_watch(body.path, conn)
            return ExistsResponse(None if node is None else node.stat())
        if isinstance(body, GetChildrenRequest):
            validate_path(body.path)
            node = tree.get(body.path)
            if node is None:
                raise NoNodeError(body.path)
            if body.watch:
                self.watches.add_child_watch(body.path, conn)
            return GetChildrenResponse(sorted(node.children), node.stat())
        if isinstance(body, SetWatchesRequest):
            self._set_watches(conn, body, out)
            return None
        return NOT_LOCAL

    def prepare_op(self, tree: DataTree, sid: int, body: Any) -> TxnOp:
        """The txn op for a write request against ``tree``, or the typed error."""
        cfg = self.config
        if isinstance(body, CreateRequest):
            return prepare_create(
                tree, body.path, body.data, body.flags, body.makepath, sid, cfg.max_data_bytes
            )
        if isinstance(body, DeleteRequest):
            return prepare_delete(tree, body.path, body.version)
        if isinstance(body, SetDataRequest):
            return prepare_set_data(tree, body.path, body.data, body.version, cfg.max_data_bytes)
        if isinstance(body, MultiRequest):
            return prepare_multi(tree, body.ops, sid, cfg.max_data_bytes)
        if isinstance(body, CloseSessionRequest):
            return CloseSessionTxn()
        raise RuntimeInconsistencyError(f"unexpected request {type(body).__name__}")

    def write_reply(self, body: Any, value: Any) -> Any:
        """The reply to write request ``body`` whose txn applied with result ``value``."""
        if isinstance(body, CreateRequest):
            path = value[-1] if isinstance(value, list) else value
            return CreateResponse(path, self._stat(path))
        if isinstance(body, SetDataRequest):
            return SetDataResponse(value)
        if isinstance(body, MultiRequest):
            results = []
            for mop, v in zip(body.ops, value, strict=True):
                if mop.opcode == OpCode.CREATE:
                    results.append(MultiResult(mop.opcode, 0, v, self._stat(v)))
                elif mop.opcode == OpCode.SET_DATA:
                    results.append(MultiResult(mop.opcode, 0, None, v))
                else:
                    results.append(MultiResult(mop.opcode, 0))
            return MultiResponse(results)
        return EmptyResponse()

    def _stat(self, path: str) -> Stat:
        node = self.tree.get(path)
        assert node is not None
        return node.stat()

    @staticmethod
    def _aborted_results(body: MultiRequest, exc: MultiAborted) -> MultiResponse:
        rolled_back = RuntimeInconsistencyError.code
        return MultiResponse(
            [
                MultiResult(op.opcode, exc.error.code if i == exc.index else rolled_back)
                for i, op in enumerate(body.ops)
            ]
        )

    def _set_watches(self, conn: int, req: SetWatchesRequest, out: list[Output]) -> None:
        """Re-arm a reconnecting client's watches; fire those already outdated."""
        zxid = self.tree.last_zxid
        fire: list[tuple[str, EventType]] = []
        for path in req.data_watches:
            node = self.tree.get(path)
            if node is None:
                fire.append((path, EventType.DELETED))
            elif node.mzxid > req.relative_zxid:
                fire.append((path, EventType.CHANGED))
            else:
                self.watches.add_data_watch(path, conn)
        for path in req.exist_watches:
            if self.tree.get(path) is not None:
                fire.append((path, EventType.CREATED))
            else:
                self.watches.add_data_watch(path, conn)
        for path in req.child_watches:
            node = self.tree.get(path)
            if node is None:
                fire.append((path, EventType.DELETED))
            elif node.pzxid > req.relative_zxid:
                fire.append((path, EventType.CHILD))
            else:
                self.watches.add_child_watch(path, conn)
        for path, event in fire:
            out.append(Send(conn, self._notification(zxid, path, event)))

    # --- encoding ---------------------------------------------------------------------

    def _frame(self, xid: int, error_code: int, body: Any | None) -> bytes:
        return encode_frame(
            encode_reply(xid, self.tree.last_zxid, error_code, body), self.config.max_frame_bytes
        )

    def _notification(self, zxid: int, path: str, event: EventType) -> bytes:
        body = WatcherEvent(int(event), SYNC_CONNECTED, path)
        return encode_frame(encode_reply(-1, zxid, 0, body), self.config.max_frame_bytes)

    def _connect_frame(self, response: ConnectResponse) -> bytes:
        return encode_frame(packb(to_wire(response)), self.config.max_frame_bytes)


class LatencyStats:
    """Request latency in ms for ``mntr``/``srvr``: arrival to processing."""

    __slots__ = ("count", "max", "min", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, ms: int) -> None:
        ms = max(ms, 0)
        self.min = ms if self.count == 0 else min(self.min, ms)
        self.max = max(self.max, ms)
        self.count += 1
        self.total += ms

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else 0.0
