"""The coordinator ensemble's peer protocol: Raft messages plus write forwarding. Sans-IO.

Every frame is ``proto.framing``'s 4-byte length + msgpack body ``[tag, src, dst, body]``
where ``body`` is ``to_wire`` of the message dataclass named by ``tag``. The first frame on
a peer connection is a ``PeerHello`` naming the dialling server (its id and the cluster's
member list, so a misconfigured member is refused instead of joining the wrong ensemble).

Consensus messages (``coordinator.consensus``):

* ``RequestVote`` / ``VoteResponse``: election, compared on (term, last log term, last
  index); ``pre_vote`` asks "would you vote for me?" without disturbing anyone's term.
* ``AppendEntries`` / ``AppendResponse``: replication and heartbeats. ``read_seq`` is the
  leader's heartbeat round, echoed back, which confirms leadership for ``sync``.
* ``InstallSnapshot``: a whole state-machine snapshot for a follower whose next entry the
  leader has compacted away; answered with an ``AppendResponse``.

Host messages (``coordinator.server``): ``ForwardRequest``/``ForwardResponse`` carry a
client write (or sync) from a follower to the leader and its outcome back;
``SessionTouch`` tells the leader which sessions a follower heard from.

Malformed input raises ``RemoteProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proto.codec import from_wire, packb, to_wire, unpackb
from proto.errors import RemoteProtocolError
from proto.framing import encode_frame

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "Entry",
    "ForwardRequest",
    "ForwardResponse",
    "InstallSnapshot",
    "PeerBody",
    "PeerHello",
    "PeerMessage",
    "RequestVote",
    "SessionTouch",
    "VoteResponse",
    "decode_peer_message",
    "encode_peer_frame",
]


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is an encoded txn; empty is a new leader's no-op."""

    term: int
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestVote:
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    prev_index: int
    prev_term: int
    entries: list[Entry]
    commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """``match_index``: on success the follower's log matches the leader's up to it; on
    failure a hint: the leader should retry from ``match_index + 1``."""

    term: int
    success: bool
    match_index: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    index: int
    snap_term: int
    data: bytes
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class PeerHello:
    node_id: int
    members: list[int]


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """A follower's client write, sync or session change for the leader. ``opcode`` is a
    ``proto.zk.OpCode``, or ``CREATE_SESSION`` / ``REVALIDATE_SESSION`` (a reconnecting
    client's session: alive or expired?, body its password; see
    ``coordinator.consensus.proposer``);
    ``body`` its request in wire form."""

    fwd_id: int
    session_id: int
    opcode: int
    body: Any


@dataclass(frozen=True, slots=True)
class ForwardResponse:
    """``index``: the log index the follower must have applied before it replies (the
    write's own entry on success, the leader's commit index for a sync or an error).
    ``error_code`` 0 on success; ``abort_index`` the failing op of a multi, else -1."""

    fwd_id: int
    index: int
    term: int
    error_code: int
    abort_index: int = -1


@dataclass(frozen=True, slots=True)
class SessionTouch:
    """A member heard from these sessions' clients; ``disconnected``: these clients
    dropped their connection to it without closing their session."""

    session_ids: list[int]
    disconnected: list[int] = field(default_factory=list)


PeerBody = (
    RequestVote
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | InstallSnapshot
    | PeerHello
    | ForwardRequest
    | ForwardResponse
    | SessionTouch
)


@dataclass(frozen=True, slots=True)
class PeerMessage:
    src: int
    dst: int
    body: PeerBody


_TAGS: dict[type[Any], int] = {
    RequestVote: 1,
    VoteResponse: 2,
    AppendEntries: 3,
    AppendResponse: 4,
    InstallSnapshot: 5,
    PeerHello: 10,
    ForwardRequest: 11,
    ForwardResponse: 12,
    SessionTouch: 13,
}
_BY_TAG: dict[int, type[Any]] = {tag: cls for cls, tag in _TAGS.items()}


def encode_peer_frame(msg: PeerMessage, max_frame_size: int) -> bytes:
    body = msg.body
    cls = type(body)
    # The hot messages by hand (the same arrays ``to_wire`` builds, several times faster).
    wire: list[Any]
    if cls is AppendEntries:
        b: Any = body
        entries = [[e.term, e.index, e.data] for e in b.entries]
        wire = [b.term, b.prev_index, b.prev_term, entries, b.commit, b.read_seq]
    elif cls is AppendResponse:
        r: Any = body
        wire = [r.term, r.success, r.match_index, r.read_seq]
    else:
        wire = to_wire(body)
    return encode_frame(packb([_TAGS[cls], msg.src, msg.dst, wire]), max_frame_size)


def _is_ints(values: list[Any]) -> bool:
    return all(type(v) is int for v in values)


def _decode_append(body: Any) -> AppendEntries:
    if type(body) is not list or len(body) != 6:
        raise RemoteProtocolError("AppendEntries must be a 6-element array")
    term, prev_index, prev_term, raw, commit, read_seq = body
    if not _is_ints([term, prev_index, prev_term, commit, read_seq]) or type(raw) is not list:
        raise RemoteProtocolError("malformed AppendEntries")
    entries = []
    for e in raw:
        if (
            type(e) is not list
            or len(e) != 3
            or type(e[0]) is not int
            or type(e[1]) is not int
            or type(e[2]) is not bytes
        ):
            raise RemoteProtocolError("malformed log entry")
        entries.append(Entry(e[0], e[1], e[2]))
    return AppendEntries(term, prev_index, prev_term, entries, commit, read_seq)


def _decode_append_response(body: Any) -> AppendResponse:
    if type(body) is not list or len(body) != 4:
        raise RemoteProtocolError("AppendResponse must be a 4-element array")
    term, success, match_index, read_seq = body
    if not _is_ints([term, match_index, read_seq]) or type(success) is not bool:
        raise RemoteProtocolError("malformed AppendResponse")
    return AppendResponse(term, success, match_index, read_seq)


def decode_peer_message(frame: bytes) -> PeerMessage:
    data = unpackb(frame)
    if type(data) is not list or len(data) != 4:
        raise RemoteProtocolError("peer frame must be a 4-element array")
    tag, src, dst, body = data
    if type(tag) is not int or type(src) is not int or type(dst) is not int:
        raise RemoteProtocolError("peer frame header must be integers")
    if tag == 3:
        return PeerMessage(src, dst, _decode_append(body))
    if tag == 4:
        return PeerMessage(src, dst, _decode_append_response(body))
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise RemoteProtocolError(f"unknown peer message tag {tag}")
    return PeerMessage(src, dst, from_wire(cls, body))
