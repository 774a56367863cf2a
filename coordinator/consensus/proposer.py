"""The leader's proposal pipeline. Sans-IO; one ``Proposer`` per leadership (so per term).

It prepares client writes and session changes against the *proposal tree*: the committed
tree plus every entry this leader has proposed, so pipelined writes validate against each
other. A prepared op becomes a txn with this term's zxid (``term << 32 | counter``) and is
proposed to Raft. It also answers session revalidations: the leader alone decides whether
a reconnecting client's session is alive. It never replies to clients; the engine does
that once the entry is applied.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coordinator.consensus.node import RaftNode
from coordinator.prepare import MultiAborted
from coordinator.sessions import SessionTracker
from coordinator.tree import DataTree
from coordinator.txn import (
    CloseSessionTxn,
    CreateSessionTxn,
    Txn,
    TxnOp,
    decode_txn,
    encode_txn,
    make_zxid,
)
from proto.codec import from_wire
from proto.errors import BrokerResponseError, RemoteProtocolError, SessionExpiredError
from proto.zk import MESSAGE_TYPES, CloseSessionRequest

__all__ = [
    "CLOSE_SESSION_EXPIRED",
    "CREATE_SESSION",
    "REVALIDATE_SESSION",
    "Outcome",
    "PrepareOp",
    "Proposer",
]

# ForwardRequest opcodes besides proto.zk.OpCode's:
CREATE_SESSION = -10  # body [timeout_ms, password]
REVALIDATE_SESSION = -11  # is this session alive? body: the client's password
CLOSE_SESSION_EXPIRED = -12  # leader-internal: expire a session

PrepareOp = Callable[[DataTree, int, Any], TxnOp]  # (tree, session id, request) -> op


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the member holding the client waits for: apply ``index`` (an entry of
    ``term`` when > 0, else a barrier), then reply; ``error_code`` 0 on success."""

    index: int
    term: int
    error_code: int = 0
    abort_index: int = -1


class Proposer:
    __slots__ = ("_counter", "_prepare_op", "node", "proposed", "sessions", "tree")

    def __init__(
        self,
        node: RaftNode,
        committed: DataTree,
        sessions: SessionTracker,
        prepare_op: PrepareOp,
        now_ms: int,
    ) -> None:
        """Take over as leader: the proposal tree is ``committed`` plus the log's tail,
        and every session gets a fresh timeout in ``sessions`` (the leader's tracker)."""
        self.node = node
        self.tree = committed.clone()
        log = node.log
        for entry in log.slice(log.applied + 1, log.last_index):
            if entry.data:
                self.tree.apply(decode_txn(entry.data))
        self.sessions = sessions
        for record in self.tree.sessions.values():
            sessions.add(record.session_id, record.timeout_ms, now_ms)
        self._prepare_op = prepare_op
        self._counter = 0
        # index -> (entry data, txn): the leader applies its own txns without decoding
        # them again (the engine pops them as it applies; ``data`` identifies the entry).
        self.proposed: dict[int, tuple[bytes, Txn]] = {}

    def propose(
        self, sid: int, opcode: int, wire: Any, wall_ms: int, *, body: Any = None
    ) -> Outcome:
        """Prepare and propose; an error's outcome is a barrier at the last index.
        ``body``: the request itself (a local client's), so ``wire`` is not decoded."""
        node = self.node
        try:
            op = self._prepare(sid, opcode, wire, body)
        except MultiAborted as exc:
            return Outcome(node.log.last_index, 0, exc.error.code, exc.index)
        except BrokerResponseError as exc:
            return Outcome(node.log.last_index, 0, exc.code)
        except RemoteProtocolError:
            return Outcome(node.log.last_index, 0, -2)
        if op is None:  # expiring or closing a session that is already gone
            return Outcome(node.log.last_index, 0)
        self._counter += 1
        txn = Txn(make_zxid(node.term, self._counter), wall_ms, sid, op)
        self.tree.apply(txn, stats=False)
        data = encode_txn(txn)
        index = node.propose(data)
        self.proposed[index] = (data, txn)
        return Outcome(index, node.term)

    def revalidate(self, sid: int, password: Any) -> int:
        """0 if session ``sid`` is alive and ``password`` is its own (then touch it, as a
        client is back), else SessionExpired's code."""
        record = self.tree.sessions.get(sid)
        if (
            record is None
            or not isinstance(password, bytes)
            or not secrets.compare_digest(record.password, password)
            or not self.sessions.touch(sid, self.node.now_ms)
        ):
            return SessionExpiredError.code
        return 0

    def _prepare(self, sid: int, opcode: int, wire: Any, body: Any) -> TxnOp | None:
        tree = self.tree
        if opcode == CREATE_SESSION:
            timeout_ms, password = wire
            return CreateSessionTxn(int(timeout_ms), bytes(password))
        if opcode == CLOSE_SESSION_EXPIRED:
            return CloseSessionTxn() if sid in tree.sessions else None
        if body is None:
            types = MESSAGE_TYPES.get(opcode)
            if types is None:
                raise RemoteProtocolError(f"cannot forward opcode {opcode}")
            body = from_wire(types[0], wire)
        if isinstance(body, CloseSessionRequest):
            self.sessions.remove(sid)
            if sid not in tree.sessions:
                return None
        return self._prepare_op(tree, sid, body)
