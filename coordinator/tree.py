"""The znode tree and the one function that changes it: ``DataTree.apply(txn)``. Sans-IO.

Invariants: every node but ``/`` has its parent in the tree; ``ephemerals[s]`` is exactly
the set of nodes whose ``ephemeral_owner`` is ``s``; ``last_zxid`` is the zxid of the last
txn applied. ``apply`` trusts its txn (``prepare`` validated it against this same tree) and
is deterministic: it reads no clock and no randomness, so replaying a log, or a replicated
ensemble applying the same txns, yields the same tree.

``apply`` reports the watch triggers each change causes; delivering them is
``coordinator.watches``' job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordinator.txn import (
    CheckTxn,
    CloseSessionTxn,
    CreateSessionTxn,
    CreateTxn,
    DeleteTxn,
    MultiTxn,
    SetDataTxn,
    Txn,
)
from proto.zk import EventType, Stat

__all__ = ["ApplyResult", "DataTree", "SessionRecord", "Znode", "parent_of"]


def parent_of(path: str) -> str:
    cut = path.rfind("/")
    return "/" if cut == 0 else path[:cut]


def name_of(path: str) -> str:
    return path[path.rfind("/") + 1 :]


@dataclass(slots=True)
class Znode:
    data: bytes
    czxid: int
    mzxid: int
    pzxid: int
    ctime: int
    mtime: int
    version: int = 0
    cversion: int = 0
    ephemeral_owner: int = 0
    children: set[str] = field(default_factory=set)

    def stat(self) -> Stat:
        return Stat(
            self.czxid,
            self.mzxid,
            self.pzxid,
            self.ctime,
            self.mtime,
            self.version,
            self.cversion,
            self.ephemeral_owner,
            len(self.data),
            len(self.children),
        )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: int
    timeout_ms: int
    password: bytes


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """``value``: created path (create), new Stat (set), None (delete, check, session txns),
    or a list of those (multi). ``events``: (path, event type) watch triggers, in order."""

    value: Any
    events: list[tuple[str, EventType]]


class DataTree:
    __slots__ = ("ephemerals", "last_zxid", "nodes", "sessions")

    def __init__(self) -> None:
        self.nodes: dict[str, Znode] = {"/": Znode(b"", 0, 0, 0, 0, 0)}
        self.ephemerals: dict[int, set[str]] = {}
        self.sessions: dict[int, SessionRecord] = {}
        self.last_zxid = 0

    def clone(self) -> DataTree:
        """An independent copy (the new leader's proposal tree). Direct, not through
        ``to_snapshot``: a leader that stalls its loop copying a big tree misses its
        heartbeats, and its followers elect another member that copies it again."""
        tree = DataTree()
        tree.nodes = {
            path: Znode(n.data, n.czxid, n.mzxid, n.pzxid, n.ctime, n.mtime, n.version,
                        n.cversion, n.ephemeral_owner, set(n.children))
            for path, n in self.nodes.items()
        }  # fmt: skip
        tree.ephemerals = {sid: set(paths) for sid, paths in self.ephemerals.items()}
        tree.sessions = dict(self.sessions)  # SessionRecord is frozen
        tree.last_zxid = self.last_zxid
        return tree

    # --- reads ------------------------------------------------------------------------

    def get(self, path: str) -> Znode | None:
        return self.nodes.get(path)

    @property
    def node_count(self) -> int:
        return len(self.nodes)

    @property
    def ephemeral_count(self) -> int:
        return sum(len(paths) for paths in self.ephemerals.values())

    @property
    def approximate_data_size(self) -> int:
        return sum(len(p) + len(n.data) for p, n in self.nodes.items())

    # --- the one writer ---------------------------------------------------------------

    def apply(self, txn: Txn, *, stats: bool = True) -> ApplyResult:
        """Apply ``txn``. ``stats=False``: a set_data's value is None instead of the new
        Stat (a member with no client waiting for the reply skips building it)."""
        if txn.zxid <= self.last_zxid:
            raise ValueError(f"txn {txn.zxid:#x} is not after {self.last_zxid:#x}")
        events: list[tuple[str, EventType]] = []
        op = txn.op
        value: Any
        if isinstance(op, MultiTxn):
            value = [self._apply_op(txn, o, events, stats) for o in op.ops]
        elif isinstance(op, CreateSessionTxn):
            self.sessions[txn.session_id] = SessionRecord(
                txn.session_id, op.timeout_ms, op.password
            )
            value = None
        elif isinstance(op, CloseSessionTxn):
            self.sessions.pop(txn.session_id, None)
            # Deepest first; sorted so every server deletes (and fires) in the same order.
            for path in sorted(self.ephemerals.get(txn.session_id, ()), reverse=True):
                self._delete(txn, path, events)
            self.ephemerals.pop(txn.session_id, None)
            value = None
        else:
            value = self._apply_op(txn, op, events, stats)
        self.last_zxid = txn.zxid
        return ApplyResult(value, events)

    def _apply_op(
        self,
        txn: Txn,
        op: CreateTxn | DeleteTxn | SetDataTxn | CheckTxn,
        events: list[tuple[str, EventType]],
        stats: bool = True,
    ) -> Any:
        if isinstance(op, CreateTxn):
            parent_path = parent_of(op.path)
            parent = self.nodes[parent_path]
            self.nodes[op.path] = Znode(
                op.data,
                czxid=txn.zxid,
                mzxid=txn.zxid,
                pzxid=txn.zxid,
                ctime=txn.time_ms,
                mtime=txn.time_ms,
                ephemeral_owner=op.ephemeral_owner,
            )
            parent.children.add(name_of(op.path))
            parent.cversion += 1
            parent.pzxid = txn.zxid
            if op.ephemeral_owner:
                self.ephemerals.setdefault(op.ephemeral_owner, set()).add(op.path)
            events.append((op.path, EventType.CREATED))
            events.append((parent_path, EventType.CHILD))
            return op.path
        if isinstance(op, DeleteTxn):
            self._delete(txn, op.path, events)
            return None
        if isinstance(op, SetDataTxn):
            node = self.nodes[op.path]
            node.data = op.data
            node.version = op.version
            node.mzxid = txn.zxid
            node.mtime = txn.time_ms
            events.append((op.path, EventType.CHANGED))
            return node.stat() if stats else None
        return None  # CheckTxn

    def _delete(self, txn: Txn, path: str, events: list[tuple[str, EventType]]) -> None:
        node = self.nodes.pop(path)
        parent_path = parent_of(path)
        parent = self.nodes[parent_path]
        parent.children.discard(name_of(path))
        parent.cversion += 1
        parent.pzxid = txn.zxid
        if node.ephemeral_owner:
            owned = self.ephemerals.get(node.ephemeral_owner)
            if owned is not None:
                owned.discard(path)
                if not owned:
                    del self.ephemerals[node.ephemeral_owner]
        events.append((path, EventType.DELETED))
        events.append((parent_path, EventType.CHILD))

    # --- snapshots --------------------------------------------------------------------

    def to_snapshot(self) -> list[Any]:
        """The whole state as plain msgpack-able lists (parents before children)."""
        nodes = [
            [p, n.data, n.czxid, n.mzxid, n.pzxid, n.ctime, n.mtime, n.version, n.cversion,
             n.ephemeral_owner]
            for p, n in sorted(self.nodes.items(), key=lambda kv: kv[0].count("/"))
            if p != "/"
        ]  # fmt: skip
        root = self.nodes["/"]
        sessions = [[s.session_id, s.timeout_ms, s.password] for s in self.sessions.values()]
        root_stat = [root.pzxid, root.cversion, root.data, root.mzxid, root.version]
        return [self.last_zxid, root_stat, nodes, sessions]

    @classmethod
    def from_snapshot(cls, data: Any) -> DataTree:
        """Inverse of ``to_snapshot``; raises ValueError/TypeError/KeyError on bad input."""
        tree = cls()
        last_zxid, root_stat, nodes, sessions = data
        root = tree.nodes["/"]
        root.pzxid, root.cversion, root.data, root.mzxid, root.version = root_stat
        for path, blob, cz, mz, pz, ct, mt, ver, cver, owner in nodes:
            if type(path) is not str or type(blob) is not bytes:
                raise TypeError("snapshot node must be [str, bytes, ...]")
            tree.nodes[path] = Znode(blob, cz, mz, pz, ct, mt, ver, cver, owner)
            tree.nodes[parent_of(path)].children.add(name_of(path))
            if owner:
                tree.ephemerals.setdefault(owner, set()).add(path)
        for sid, timeout_ms, password in sessions:
            tree.sessions[sid] = SessionRecord(sid, timeout_ms, password)
        tree.last_zxid = last_zxid
        return tree
