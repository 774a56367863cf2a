"""The coordinator's wire protocol (ZooKeeper's, in msgpack). Sans-IO: no trio, no sockets.

Every frame is ``proto.framing``'s 4-byte length + msgpack body:

* connect request (the client's first frame): ``to_wire(ConnectRequest)``
* connect response (the server's first frame): ``to_wire(ConnectResponse)``; a
  ``timeout_ms`` of 0 means "your session expired", as in ZooKeeper
* request: ``[xid, opcode, body]``
* reply: ``[xid, zxid, error_code, body]``; xid -1 is a server-pushed watch notification
  (body ``WatcherEvent``), xid -2 the reply to a ping, xid -8 the reply to SetWatches.

A non-zero ``error_code`` (ZooKeeper's negative codes, ``proto.errors``) comes with a nil
body, except for multi, whose body lists the outcome of each op. ``ServerProtocol`` also
recognises ZooKeeper's four-letter words (``ruok``, ``srvr``, ``mntr``, ...) when they are the
first four bytes of a connection. Any malformed input raises ``RemoteProtocolError``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from proto.codec import from_wire, packb, to_wire, unpackb
from proto.errors import RemoteProtocolError
from proto.framing import FrameDecoder, encode_frame

__all__ = [
    "FOUR_LETTER_WORDS",
    "NOTIFICATION_XID",
    "PING_XID",
    "PROTOCOL_VERSION",
    "SET_WATCHES_XID",
    "CheckRequest",
    "ClientProtocol",
    "CloseSessionRequest",
    "ConnectRequest",
    "ConnectResponse",
    "CreateFlags",
    "CreateRequest",
    "CreateResponse",
    "DeleteRequest",
    "EmptyResponse",
    "EventType",
    "ExistsRequest",
    "ExistsResponse",
    "FourLetterWord",
    "GetChildrenRequest",
    "GetChildrenResponse",
    "GetDataRequest",
    "GetDataResponse",
    "MultiOp",
    "MultiRequest",
    "MultiResponse",
    "MultiResult",
    "OpCode",
    "PingRequest",
    "Reply",
    "RequestEvent",
    "ServerProtocol",
    "SetDataRequest",
    "SetDataResponse",
    "SetWatchesRequest",
    "Stat",
    "SyncRequest",
    "SyncResponse",
    "WatcherEvent",
]

PROTOCOL_VERSION = 0
NOTIFICATION_XID = -1
PING_XID = -2
SET_WATCHES_XID = -8
# Bodies are capped at 1 MiB of data per znode; a multi may carry several.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
FOUR_LETTER_WORDS = frozenset({b"ruok", b"srvr", b"stat", b"mntr", b"conf", b"envi"})


class OpCode(enum.IntEnum):
    """ZooKeeper's opcodes (``ZooDefs.OpCode``)."""

    NOTIFICATION = 0
    CREATE = 1
    DELETE = 2
    EXISTS = 3
    GET_DATA = 4
    SET_DATA = 5
    GET_CHILDREN = 8
    SYNC = 9
    PING = 11
    CHECK = 13
    MULTI = 14
    CLOSE_SESSION = -11
    SET_WATCHES = 101


class CreateFlags(enum.IntFlag):
    PERSISTENT = 0
    EPHEMERAL = 1
    SEQUENTIAL = 2


class EventType(enum.IntEnum):
    """ZooKeeper's ``Watcher.Event.EventType`` codes."""

    CREATED = 1
    DELETED = 2
    CHANGED = 3
    CHILD = 4


# --- values ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stat:
    """A znode's metadata, ZooKeeper's ``Stat`` without the ACL version."""

    czxid: int
    mzxid: int
    pzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    ephemeral_owner: int
    data_length: int
    num_children: int


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    protocol_version: int
    last_zxid_seen: int
    timeout_ms: int
    session_id: int  # 0: new session
    password: bytes


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    protocol_version: int
    timeout_ms: int  # 0: the session asked for has expired
    session_id: int
    password: bytes


@dataclass(frozen=True, slots=True)
class CreateRequest:
    path: str
    data: bytes
    flags: int  # CreateFlags
    makepath: bool = False


@dataclass(frozen=True, slots=True)
class CreateResponse:
    path: str
    stat: Stat


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    path: str
    version: int = -1


@dataclass(frozen=True, slots=True)
class EmptyResponse:
    pass


@dataclass(frozen=True, slots=True)
class ExistsRequest:
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class ExistsResponse:
    stat: Stat | None


@dataclass(frozen=True, slots=True)
class GetDataRequest:
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class GetDataResponse:
    data: bytes
    stat: Stat


@dataclass(frozen=True, slots=True)
class SetDataRequest:
    path: str
    data: bytes
    version: int = -1


@dataclass(frozen=True, slots=True)
class SetDataResponse:
    stat: Stat


@dataclass(frozen=True, slots=True)
class GetChildrenRequest:
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class GetChildrenResponse:
    children: list[str]
    stat: Stat


@dataclass(frozen=True, slots=True)
class SyncRequest:
    path: str


@dataclass(frozen=True, slots=True)
class SyncResponse:
    path: str


@dataclass(frozen=True, slots=True)
class CheckRequest:
    path: str
    version: int


@dataclass(frozen=True, slots=True)
class MultiOp:
    """One op of a multi: ``opcode`` is CREATE, DELETE, SET_DATA or CHECK."""

    opcode: int
    path: str
    data: bytes = b""
    flags: int = 0
    version: int = -1


@dataclass(frozen=True, slots=True)
class MultiRequest:
    ops: list[MultiOp]


@dataclass(frozen=True, slots=True)
class MultiResult:
    """Outcome of one op; on failure the failing op has its code, the others
    RUNTIME_INCONSISTENCY (rolled back) as in ZooKeeper."""

    opcode: int
    error_code: int
    path: str | None = None
    stat: Stat | None = None


@dataclass(frozen=True, slots=True)
class MultiResponse:
    results: list[MultiResult]


@dataclass(frozen=True, slots=True)
class CloseSessionRequest:
    pass


@dataclass(frozen=True, slots=True)
class PingRequest:
    pass


@dataclass(frozen=True, slots=True)
class SetWatchesRequest:
    """Re-register a reconnecting client's watches; the server fires at once those whose
    node changed after ``relative_zxid`` (the last zxid the client saw)."""

    relative_zxid: int
    data_watches: list[str]
    exist_watches: list[str]
    child_watches: list[str]


@dataclass(frozen=True, slots=True)
class WatcherEvent:
    type: int  # EventType
    state: int  # 3: SyncConnected, as in ZooKeeper
    path: str


# opcode -> (request body, reply body)
MESSAGE_TYPES: dict[int, tuple[type[Any], type[Any]]] = {
    OpCode.CREATE: (CreateRequest, CreateResponse),
    OpCode.DELETE: (DeleteRequest, EmptyResponse),
    OpCode.EXISTS: (ExistsRequest, ExistsResponse),
    OpCode.GET_DATA: (GetDataRequest, GetDataResponse),
    OpCode.SET_DATA: (SetDataRequest, SetDataResponse),
    OpCode.GET_CHILDREN: (GetChildrenRequest, GetChildrenResponse),
    OpCode.SYNC: (SyncRequest, SyncResponse),
    OpCode.PING: (PingRequest, EmptyResponse),
    OpCode.MULTI: (MultiRequest, MultiResponse),
    OpCode.CLOSE_SESSION: (CloseSessionRequest, EmptyResponse),
    OpCode.SET_WATCHES: (SetWatchesRequest, EmptyResponse),
}
OPCODE_OF: dict[type[Any], int] = {req: op for op, (req, _) in MESSAGE_TYPES.items()}


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestEvent:
    xid: int
    opcode: int
    body: Any  # the request dataclass for opcode


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply matched to its request (``opcode``), a notification or a ping reply."""

    xid: int
    zxid: int
    error_code: int
    opcode: int
    body: Any  # reply dataclass, WatcherEvent for notifications, None on error


@dataclass(frozen=True, slots=True)
class FourLetterWord:
    word: str


def _int(v: Any, what: str) -> int:
    if type(v) is not int:
        raise RemoteProtocolError(f"{what} must be an integer")
    return v


# --- the hot messages by hand ------------------------------------------------------------
# get / set / create and their replies carry most of the traffic. These build and check
# exactly the arrays ``to_wire`` / ``from_wire`` do (the wire is unchanged), without the
# generic per-field walk, which costs several times more.


def _stat_wire(st: Stat) -> list[int]:
    return [st.czxid, st.mzxid, st.pzxid, st.ctime, st.mtime, st.version, st.cversion,
            st.ephemeral_owner, st.data_length, st.num_children]  # fmt: skip


def _stat_from_wire(v: Any) -> Stat:
    if type(v) is not list or len(v) != 10 or not all(type(x) is int for x in v):
        raise RemoteProtocolError("Stat must be an array of 10 integers")
    return Stat(*v)


def _is(v: Any, tp: type) -> bool:
    return type(v) is tp


def _request_from_wire(opcode: int, body: Any) -> Any:
    n = len(body) if type(body) is list else -1
    if opcode == OpCode.GET_DATA and n == 2 and _is(body[0], str) and _is(body[1], bool):
        return GetDataRequest(body[0], body[1])
    if (
        opcode == OpCode.SET_DATA
        and n == 3
        and _is(body[0], str)
        and _is(body[1], bytes)
        and _is(body[2], int)
    ):
        return SetDataRequest(body[0], body[1], body[2])
    if (
        opcode == OpCode.CREATE
        and n == 4
        and _is(body[0], str)
        and _is(body[1], bytes)
        and _is(body[2], int)
        and _is(body[3], bool)
    ):
        return CreateRequest(body[0], body[1], body[2], body[3])
    types = MESSAGE_TYPES.get(opcode)
    if types is None:
        raise RemoteProtocolError(f"unknown opcode {opcode}")
    return from_wire(types[0], body)  # also the precise error for a malformed one


def _reply_from_wire(opcode: int, body: Any) -> Any:
    n = len(body) if type(body) is list else -1
    if opcode == OpCode.GET_DATA and n == 2 and _is(body[0], bytes):
        return GetDataResponse(body[0], _stat_from_wire(body[1]))
    if opcode == OpCode.SET_DATA and n == 1:
        return SetDataResponse(_stat_from_wire(body[0]))
    if opcode == OpCode.CREATE and n == 2 and _is(body[0], str):
        return CreateResponse(body[0], _stat_from_wire(body[1]))
    return from_wire(MESSAGE_TYPES[opcode][1], body)


def _body_wire(body: Any) -> Any:
    cls = type(body)
    if cls is GetDataResponse:
        return [body.data, _stat_wire(body.stat)]
    if cls is SetDataResponse:
        return [_stat_wire(body.stat)]
    if cls is CreateResponse:
        return [body.path, _stat_wire(body.stat)]
    if cls is GetDataRequest:
        return [body.path, body.watch]
    if cls is SetDataRequest:
        return [body.path, body.data, body.version]
    if cls is CreateRequest:
        return [body.path, body.data, body.flags, body.makepath]
    return to_wire(body)


def encode_request(xid: int, body: Any) -> bytes:
    return packb([xid, OPCODE_OF[type(body)], _body_wire(body)])


def decode_request(frame: bytes) -> RequestEvent:
    data = unpackb(frame)
    if type(data) is not list or len(data) != 3:
        raise RemoteProtocolError("request frame must be a 3-element array")
    xid, opcode = _int(data[0], "xid"), _int(data[1], "opcode")
    return RequestEvent(xid, opcode, _request_from_wire(opcode, data[2]))


def encode_reply(xid: int, zxid: int, error_code: int, body: Any | None) -> bytes:
    return packb([xid, zxid, error_code, None if body is None else _body_wire(body)])


def decode_reply(frame: bytes) -> tuple[int, int, int, Any]:
    data = unpackb(frame)
    if type(data) is not list or len(data) != 4:
        raise RemoteProtocolError("reply frame must be a 4-element array")
    return _int(data[0], "xid"), _int(data[1], "zxid"), _int(data[2], "error code"), data[3]


class ClientProtocol:
    """The client side: connect, pipeline requests by xid, match replies."""

    __slots__ = ("_connected", "_decoder", "_next_xid", "_pending", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._decoder = FrameDecoder(max_frame_size)
        self._connected = False
        self._next_xid = 1
        self._pending: dict[int, int] = {}  # xid -> opcode

    def connect(self, request: ConnectRequest) -> bytes:
        return encode_frame(packb(to_wire(request)), self.max_frame_size)

    def send_request(self, body: Any) -> tuple[int, bytes]:
        """Encode a request; returns its xid and the frame to write."""
        opcode = OPCODE_OF[type(body)]
        if opcode == OpCode.PING:
            xid = PING_XID
        elif opcode == OpCode.SET_WATCHES:
            xid = SET_WATCHES_XID
        else:
            xid = self._next_xid
            self._next_xid = self._next_xid % 0x7FFFFFFF + 1
            self._pending[xid] = opcode
        return xid, encode_frame(encode_request(xid, body), self.max_frame_size)

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive_data(data)

    def next_event(self) -> ConnectResponse | Reply | None:
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        if not self._connected:
            self._connected = True
            return from_wire(ConnectResponse, unpackb(frame))
        xid, zxid, code, body = decode_reply(frame)
        if xid == NOTIFICATION_XID:
            return Reply(xid, zxid, code, OpCode.NOTIFICATION, from_wire(WatcherEvent, body))
        opcode: int | None
        if xid in (PING_XID, SET_WATCHES_XID):
            opcode = OpCode.PING if xid == PING_XID else OpCode.SET_WATCHES
            return Reply(xid, zxid, code, opcode, None)
        opcode = self._pending.pop(xid, None)
        if opcode is None:
            raise RemoteProtocolError(f"reply for unknown xid {xid}")
        decoded = None if body is None else _reply_from_wire(opcode, body)
        return Reply(xid, zxid, code, opcode, decoded)


class ServerProtocol:
    """The server side: a four-letter word or a connect request, then requests."""

    __slots__ = ("_connected", "_decoder", "_eof", "_head", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._decoder = FrameDecoder(max_frame_size)
        self._connected = False
        self._eof = False
        self._head: bytearray | None = bytearray()  # first 4 bytes, until classified

    def receive_data(self, data: bytes) -> None:
        if self._head is None:
            self._decoder.receive_data(data)
        elif not data:
            self._eof = True
            if len(self._head) < 4:
                raise RemoteProtocolError("connection closed before its first frame")
        elif self._eof:
            raise RemoteProtocolError("data received after end of stream")
        else:
            self._head += data

    def next_event(self) -> FourLetterWord | ConnectRequest | RequestEvent | None:
        if self._head is not None:
            if len(self._head) < 4:
                return None
            head, self._head = bytes(self._head), None
            if head[:4] in FOUR_LETTER_WORDS:
                return FourLetterWord(head[:4].decode("ascii"))
            self._decoder.receive_data(head)
            if self._eof:
                self._decoder.receive_data(b"")
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        if not self._connected:
            self._connected = True
            return from_wire(ConnectRequest, unpackb(frame))
        return decode_request(frame)

    def send_connect_response(self, response: ConnectResponse) -> bytes:
        return encode_frame(packb(to_wire(response)), self.max_frame_size)

    def send_reply(self, xid: int, zxid: int, error_code: int, body: Any | None) -> bytes:
        return encode_frame(encode_reply(xid, zxid, error_code, body), self.max_frame_size)

    def send_notification(self, zxid: int, event: WatcherEvent) -> bytes:
        return self.send_reply(NOTIFICATION_XID, zxid, 0, event)
