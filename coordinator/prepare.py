"""Prepare: validate a write request against the tree and turn it into a txn. Pure.

``prepare_*`` functions read the tree and never change it; they raise the typed
ZooKeeper error (``NoNodeError``, ``BadVersionError`` ...) a client should see, or return
the txn op whose ``DataTree.apply`` cannot fail. A multi is validated op by op against an
overlay (``_View``) holding the effect of the ops before it, so "create /a then create
/a/b" validates without touching the tree; if any op fails, ``MultiAborted`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.tree import DataTree, parent_of
from coordinator.txn import CheckTxn, CreateTxn, DeleteTxn, MultiTxn, SetDataTxn
from proto.errors import (
    BadArgumentsError,
    BadVersionError,
    BrokerResponseError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from proto.zk import CreateFlags, MultiOp, OpCode

__all__ = [
    "MultiAborted",
    "prepare_create",
    "prepare_delete",
    "prepare_multi",
    "prepare_set_data",
    "validate_path",
]

SEQUENCE_DIGITS = 10


class MultiAborted(Exception):
    """Op ``index`` of a multi failed with ``error``; nothing of the multi was applied."""

    def __init__(self, index: int, error: BrokerResponseError) -> None:
        super().__init__(f"multi op {index} failed: {error}")
        self.index = index
        self.error = error


def validate_path(path: str, *, sequential: bool = False) -> None:
    """Absolute, no empty/relative components, no trailing slash (except before a
    sequential suffix), as ZooKeeper's ``PathUtils.validatePath``."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadArgumentsError(f"path must be absolute: {path!r}")
    if path == "/":
        return
    body = path[1:-1] if sequential and path.endswith("/") else path[1:]
    if "\x00" in path:
        raise BadArgumentsError(f"path contains a null character: {path!r}")
    for part in body.split("/"):
        if part in ("", ".", ".."):
            raise BadArgumentsError(f"invalid path {path!r}")


@dataclass(frozen=True, slots=True)
class _NodeView:
    version: int
    cversion: int
    ephemeral_owner: int
    num_children: int


class _View:
    """The tree as it will be after the ops prepared so far (multi / makepath)."""

    __slots__ = ("changes", "tree")

    def __init__(self, tree: DataTree) -> None:
        self.tree = tree
        self.changes: dict[str, _NodeView | None] = {}

    def node(self, path: str) -> _NodeView | None:
        if path in self.changes:
            return self.changes[path]
        n = self.tree.get(path)
        if n is None:
            return None
        return _NodeView(n.version, n.cversion, n.ephemeral_owner, len(n.children))

    def child_delta(self, parent: str, delta: int) -> None:
        p = self.node(parent)
        assert p is not None
        # By hand, not dataclasses.replace: this is on every create's path.
        self.changes[parent] = _NodeView(
            p.version, p.cversion + 1, p.ephemeral_owner, p.num_children + delta
        )


def _check_data(data: bytes, max_data_bytes: int) -> None:
    if len(data) > max_data_bytes:
        raise BadArgumentsError(f"data of {len(data)} bytes exceeds the {max_data_bytes} cap")


def _check_version(path: str, expected: int, actual: int) -> None:
    if expected != -1 and expected != actual:
        raise BadVersionError(f"{path}: version {actual}, expected {expected}")


def _create(
    view: _View,
    path: str,
    data: bytes,
    flags: int,
    makepath: bool,
    session_id: int,
    max_data_bytes: int,
) -> list[CreateTxn]:
    sequential = bool(flags & CreateFlags.SEQUENTIAL)
    validate_path(path, sequential=sequential)
    if path == "/":
        raise NodeExistsError("/")
    _check_data(data, max_data_bytes)
    owner = session_id if flags & CreateFlags.EPHEMERAL else 0
    ops: list[CreateTxn] = []
    parent = parent_of(path)
    if makepath and parent != "/":
        parts = parent[1:].split("/")
        for depth in range(1, len(parts) + 1):
            ancestor = "/" + "/".join(parts[:depth])
            _create_one(view, ancestor, CreateTxn(ancestor, b"", 0), ops)
    pnode = view.node(parent)
    if pnode is None:
        raise NoNodeError(f"parent of {path} does not exist")
    if sequential:
        path = f"{path}{pnode.cversion:0{SEQUENCE_DIGITS}d}"
    _create_one(view, path, CreateTxn(path, data, owner), ops, must_be_new=True)
    return ops


def _create_one(
    view: _View, path: str, op: CreateTxn, ops: list[CreateTxn], *, must_be_new: bool = False
) -> None:
    if view.node(path) is not None:
        if must_be_new:
            raise NodeExistsError(path)
        return
    parent = parent_of(path)
    pnode = view.node(parent)
    if pnode is None:
        raise NoNodeError(f"parent of {path} does not exist")
    if pnode.ephemeral_owner:
        raise NoChildrenForEphemeralsError(f"{parent} is ephemeral")
    view.child_delta(parent, +1)
    view.changes[path] = _NodeView(0, 0, op.ephemeral_owner, 0)
    ops.append(op)


def _delete(view: _View, path: str, version: int) -> DeleteTxn:
    validate_path(path)
    if path == "/":
        raise BadArgumentsError("cannot delete /")
    node = view.node(path)
    if node is None:
        raise NoNodeError(path)
    _check_version(path, version, node.version)
    if node.num_children:
        raise NotEmptyError(path)
    view.changes[path] = None
    view.child_delta(parent_of(path), -1)
    return DeleteTxn(path)


def _set_data(view: _View, path: str, data: bytes, version: int, max_data_bytes: int) -> SetDataTxn:
    validate_path(path)
    _check_data(data, max_data_bytes)
    node = view.node(path)
    if node is None:
        raise NoNodeError(path)
    _check_version(path, version, node.version)
    view.changes[path] = _NodeView(
        node.version + 1, node.cversion, node.ephemeral_owner, node.num_children
    )
    return SetDataTxn(path, data, node.version + 1)


def _check(view: _View, path: str, version: int) -> CheckTxn:
    validate_path(path)
    node = view.node(path)
    if node is None:
        raise NoNodeError(path)
    _check_version(path, version, node.version)
    return CheckTxn(path)


def prepare_create(
    tree: DataTree,
    path: str,
    data: bytes,
    flags: int,
    makepath: bool,
    session_id: int,
    max_data_bytes: int,
) -> CreateTxn | MultiTxn:
    """A CreateTxn, or a MultiTxn whose last op is the create when parents were missing."""
    ops = _create(_View(tree), path, data, flags, makepath, session_id, max_data_bytes)
    return ops[0] if len(ops) == 1 else MultiTxn(tuple(ops))


def prepare_delete(tree: DataTree, path: str, version: int) -> DeleteTxn:
    return _delete(_View(tree), path, version)


def prepare_set_data(
    tree: DataTree, path: str, data: bytes, version: int, max_data_bytes: int
) -> SetDataTxn:
    return _set_data(_View(tree), path, data, version, max_data_bytes)


def prepare_multi(
    tree: DataTree, ops: list[MultiOp], session_id: int, max_data_bytes: int
) -> MultiTxn:
    """All ops or none: raises MultiAborted naming the first op that fails."""
    view = _View(tree)
    out: list[CreateTxn | DeleteTxn | SetDataTxn | CheckTxn] = []
    for index, op in enumerate(ops):
        try:
            if op.opcode == OpCode.CREATE:
                created = _create(
                    view, op.path, op.data, op.flags, False, session_id, max_data_bytes
                )
                out.extend(created)
            elif op.opcode == OpCode.DELETE:
                out.append(_delete(view, op.path, op.version))
            elif op.opcode == OpCode.SET_DATA:
                out.append(_set_data(view, op.path, op.data, op.version, max_data_bytes))
            elif op.opcode == OpCode.CHECK:
                out.append(_check(view, op.path, op.version))
            else:
                raise BadArgumentsError(f"opcode {op.opcode} is not allowed in a multi")
        except BrokerResponseError as exc:
            raise MultiAborted(index, exc) from exc
    return MultiTxn(tuple(out))
