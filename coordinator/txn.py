"""Transactions: the only way the coordinator's state changes. Pure values, no I/O.

A ``Txn`` is what ``prepare`` produces from a client request and what
``DataTree.apply`` consumes; it is also the unit the transaction log stores and that a
replicated ensemble would ship between servers. Everything ``apply`` needs is inside the
txn (final paths of sequential nodes, timestamps, session passwords), so applying the same
txns in the same order gives the same tree on every server.

Encoding: msgpack ``[zxid, time_ms, session_id, tag, body]``; a multi's body is a list of
``[tag, body]``. Decoding garbage raises ``RemoteProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proto.codec import from_wire, packb, to_wire, unpackb
from proto.errors import RemoteProtocolError

__all__ = [
    "CheckTxn",
    "CloseSessionTxn",
    "CreateSessionTxn",
    "CreateTxn",
    "DeleteTxn",
    "MultiTxn",
    "SetDataTxn",
    "Txn",
    "TxnOp",
    "decode_txn",
    "encode_txn",
    "make_zxid",
    "zxid_counter",
    "zxid_epoch",
]


def make_zxid(epoch: int, counter: int) -> int:
    return (epoch << 32) | counter


def zxid_epoch(zxid: int) -> int:
    return zxid >> 32


def zxid_counter(zxid: int) -> int:
    return zxid & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class CreateTxn:
    path: str  # final path, sequential suffix included
    data: bytes
    ephemeral_owner: int  # 0 for a persistent node


@dataclass(frozen=True, slots=True)
class DeleteTxn:
    path: str


@dataclass(frozen=True, slots=True)
class SetDataTxn:
    path: str
    data: bytes
    version: int  # the node's new version


@dataclass(frozen=True, slots=True)
class CheckTxn:
    """A multi's version check; it changes nothing but keeps its place in the results."""

    path: str


@dataclass(frozen=True, slots=True)
class MultiTxn:
    ops: tuple[CreateTxn | DeleteTxn | SetDataTxn | CheckTxn, ...]


@dataclass(frozen=True, slots=True)
class CreateSessionTxn:
    timeout_ms: int
    password: bytes


@dataclass(frozen=True, slots=True)
class CloseSessionTxn:
    """Ends the txn's session; apply deletes every ephemeral it owns."""


TxnOp = (
    CreateTxn | DeleteTxn | SetDataTxn | CheckTxn | MultiTxn | CreateSessionTxn | CloseSessionTxn
)


@dataclass(frozen=True, slots=True)
class Txn:
    zxid: int
    time_ms: int  # wall clock of the server that prepared it: ctime / mtime
    session_id: int
    op: TxnOp


_TAGS: dict[type[Any], int] = {
    CreateTxn: 1,
    DeleteTxn: 2,
    SetDataTxn: 5,
    CheckTxn: 13,
    MultiTxn: 14,
    CreateSessionTxn: -10,
    CloseSessionTxn: -11,
}
_BY_TAG: dict[int, type[Any]] = {tag: cls for cls, tag in _TAGS.items()}


def _op_to_wire(op: TxnOp) -> list[Any]:
    cls = type(op)
    if cls is SetDataTxn:  # the hot ones by hand: the same arrays as to_wire
        s: Any = op
        return [5, [s.path, s.data, s.version]]
    if cls is CreateTxn:
        c: Any = op
        return [1, [c.path, c.data, c.ephemeral_owner]]
    if isinstance(op, MultiTxn):
        return [_TAGS[MultiTxn], [_op_to_wire(o) for o in op.ops]]
    return [_TAGS[type(op)], to_wire(op)]


def _op_from_wire(data: Any, *, nested: bool = False) -> TxnOp:
    if type(data) is not list or len(data) != 2 or type(data[0]) is not int:
        raise RemoteProtocolError("txn op must be [tag, body]")
    tag, body = data
    if (
        (tag == 5 or tag == 1)  # SetDataTxn, CreateTxn: [str, bytes, int], by hand
        and type(body) is list
        and len(body) == 3
        and type(body[0]) is str
        and type(body[1]) is bytes
        and type(body[2]) is int
    ):
        return SetDataTxn(*body) if tag == 5 else CreateTxn(*body)
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise RemoteProtocolError(f"unknown txn tag {data[0]}")
    if cls is MultiTxn:
        if nested or type(data[1]) is not list:
            raise RemoteProtocolError("malformed multi txn")
        ops = tuple(_op_from_wire(o, nested=True) for o in data[1])
        if any(isinstance(o, CreateSessionTxn | CloseSessionTxn) for o in ops):
            raise RemoteProtocolError("session txn inside a multi")
        return MultiTxn(ops)  # type: ignore[arg-type]
    op: TxnOp = from_wire(cls, data[1])
    return op


def encode_txn(txn: Txn) -> bytes:
    return packb([txn.zxid, txn.time_ms, txn.session_id, *_op_to_wire(txn.op)])


def decode_txn(data: bytes) -> Txn:
    raw = unpackb(data)
    if type(raw) is not list or len(raw) != 5:
        raise RemoteProtocolError("txn must be a 5-element array")
    zxid, time_ms, session_id = raw[:3]
    if not (type(zxid) is int and type(time_ms) is int and type(session_id) is int):
        raise RemoteProtocolError("txn header fields must be integers")
    return Txn(zxid, time_ms, session_id, _op_from_wire(raw[3:]))
