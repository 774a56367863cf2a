"""The tree, prepare and apply, synchronously: no I/O, no trio."""

from __future__ import annotations

import pytest

from coordinator.prepare import (
    MultiAborted,
    prepare_create,
    prepare_delete,
    prepare_multi,
    prepare_set_data,
    validate_path,
)
from coordinator.tree import DataTree
from coordinator.txn import (
    CloseSessionTxn,
    CreateSessionTxn,
    CreateTxn,
    MultiTxn,
    Txn,
    TxnOp,
    decode_txn,
    encode_txn,
    make_zxid,
)
from proto.errors import (
    BadArgumentsError,
    BadVersionError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RemoteProtocolError,
)
from proto.zk import CreateFlags, EventType, MultiOp, OpCode

MiB = 1024 * 1024
S1, S2 = 0x0100000000000001, 0x0100000000000002


class Harness:
    """A tree plus a zxid counter: prepare, log (keep the txns) and apply."""

    def __init__(self) -> None:
        self.tree = DataTree()
        self.txns: list[Txn] = []
        self.counter = 0

    def apply(self, op: TxnOp, session: int = S1) -> None:
        self.counter += 1
        txn = Txn(make_zxid(1, self.counter), 1000 + self.counter, session, op)
        self.txns.append(txn)
        self.last_events = self.tree.apply(txn).events

    def create(
        self,
        path: str,
        data: bytes = b"",
        flags: int = 0,
        makepath: bool = False,
        session: int = S1,
    ) -> str:
        op = prepare_create(self.tree, path, data, flags, makepath, session, MiB)
        self.apply(op, session)
        last = op.ops[-1] if isinstance(op, MultiTxn) else op
        assert isinstance(last, CreateTxn)
        return last.path


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_create_get_and_stat(h: Harness) -> None:
    h.create("/a", b"hello")
    node = h.tree.get("/a")
    assert node is not None
    st = node.stat()
    assert st.czxid == st.mzxid == st.pzxid == make_zxid(1, 1)
    assert (st.version, st.cversion, st.data_length, st.num_children) == (0, 0, 5, 0)
    assert st.ctime == st.mtime == 1001
    root = h.tree.get("/")
    assert root is not None and root.cversion == 1 and root.pzxid == make_zxid(1, 1)
    assert h.last_events == [("/a", EventType.CREATED), ("/", EventType.CHILD)]
    with pytest.raises(NodeExistsError):
        prepare_create(h.tree, "/a", b"", 0, False, S1, MiB)
    with pytest.raises(NoNodeError):
        prepare_create(h.tree, "/x/y", b"", 0, False, S1, MiB)


def test_makepath_creates_persistent_parents(h: Harness) -> None:
    path = h.create("/a/b/c", b"leaf", CreateFlags.EPHEMERAL, makepath=True)
    assert path == "/a/b/c"
    for parent in ("/a", "/a/b"):
        node = h.tree.get(parent)
        assert node is not None and node.ephemeral_owner == 0
    leaf = h.tree.get("/a/b/c")
    assert leaf is not None and leaf.ephemeral_owner == S1 and leaf.data == b"leaf"
    assert h.txns[-1].op.__class__ is MultiTxn


def test_sequential_names_use_parent_cversion(h: Harness) -> None:
    h.create("/q")
    first = h.create("/q/item-", flags=CreateFlags.SEQUENTIAL)
    second = h.create("/q/item-", flags=CreateFlags.SEQUENTIAL | CreateFlags.EPHEMERAL)
    assert first == "/q/item-0000000000"
    assert second == "/q/item-0000000001"
    h.apply(prepare_delete(h.tree, first, -1))
    # The counter is the parent's cversion, which deletes bump too.
    assert h.create("/q/", flags=CreateFlags.SEQUENTIAL) == "/q/0000000003"


def test_ephemerals_cannot_have_children(h: Harness) -> None:
    h.create("/e", flags=CreateFlags.EPHEMERAL)
    with pytest.raises(NoChildrenForEphemeralsError):
        prepare_create(h.tree, "/e/child", b"", 0, False, S1, MiB)
    with pytest.raises(NoChildrenForEphemeralsError):
        prepare_create(h.tree, "/e/x/y", b"", 0, True, S1, MiB)


def test_set_data_is_compare_and_set(h: Harness) -> None:
    h.create("/n", b"v0")
    h.apply(prepare_set_data(h.tree, "/n", b"v1", 0, MiB))
    with pytest.raises(BadVersionError):
        prepare_set_data(h.tree, "/n", b"v2", 0, MiB)
    h.apply(prepare_set_data(h.tree, "/n", b"v2", -1, MiB))
    node = h.tree.get("/n")
    assert node is not None and node.data == b"v2" and node.version == 2
    assert node.mzxid == make_zxid(1, 3) and node.czxid == make_zxid(1, 1)
    with pytest.raises(NoNodeError):
        prepare_set_data(h.tree, "/missing", b"", -1, MiB)


def test_delete_checks_version_and_children(h: Harness) -> None:
    h.create("/p")
    h.create("/p/c")
    with pytest.raises(NotEmptyError):
        prepare_delete(h.tree, "/p", -1)
    with pytest.raises(BadVersionError):
        prepare_delete(h.tree, "/p/c", 3)
    h.apply(prepare_delete(h.tree, "/p/c", 0))
    assert h.last_events == [("/p/c", EventType.DELETED), ("/p", EventType.CHILD)]
    h.apply(prepare_delete(h.tree, "/p", -1))
    assert h.tree.get("/p") is None
    with pytest.raises(NoNodeError):
        prepare_delete(h.tree, "/p", -1)
    with pytest.raises(BadArgumentsError):
        prepare_delete(h.tree, "/", -1)


def test_data_cap(h: Harness) -> None:
    with pytest.raises(BadArgumentsError):
        prepare_create(h.tree, "/big", b"x" * (MiB + 1), 0, False, S1, MiB)
    h.create("/big", b"x" * MiB)
    with pytest.raises(BadArgumentsError):
        prepare_set_data(h.tree, "/big", b"x" * (MiB + 1), -1, MiB)


@pytest.mark.parametrize(
    "path", ["", "a", "a/b", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/a\x00"]
)
def test_path_validation(path: str) -> None:
    with pytest.raises(BadArgumentsError):
        validate_path(path)


def test_valid_paths() -> None:
    for path in ("/", "/a", "/a/b-c.d", "/zk/0000000001"):
        validate_path(path)
    validate_path("/a/", sequential=True)


def test_multi_all_or_nothing(h: Harness) -> None:
    h.create("/m", b"0")
    ops = [
        MultiOp(OpCode.CREATE, "/m/a", b"a"),
        MultiOp(OpCode.CREATE, "/m/a/b", b"b"),  # sees the op before it
        MultiOp(OpCode.SET_DATA, "/m", b"1", version=0),
        MultiOp(OpCode.CHECK, "/m", version=1),  # sees the set before it
        MultiOp(OpCode.DELETE, "/m/a/b"),
    ]
    txn = prepare_multi(h.tree, ops, S1, MiB)
    h.apply(txn)
    assert h.tree.get("/m/a") is not None and h.tree.get("/m/a/b") is None
    m = h.tree.get("/m")
    assert m is not None and m.data == b"1" and m.version == 1
    before = h.tree.to_snapshot()
    bad = [
        MultiOp(OpCode.CREATE, "/m/new"),
        MultiOp(OpCode.SET_DATA, "/m", b"2", version=1),
        MultiOp(OpCode.CHECK, "/m", version=1),  # fails: the set above made it 2
    ]
    with pytest.raises(MultiAborted) as info:
        prepare_multi(h.tree, bad, S1, MiB)
    assert info.value.index == 2 and isinstance(info.value.error, BadVersionError)
    assert h.tree.to_snapshot() == before


def test_multi_create_then_conflicting_create(h: Harness) -> None:
    ops = [MultiOp(OpCode.CREATE, "/x"), MultiOp(OpCode.CREATE, "/x")]
    with pytest.raises(MultiAborted) as info:
        prepare_multi(h.tree, ops, S1, MiB)
    assert info.value.index == 1 and isinstance(info.value.error, NodeExistsError)
    with pytest.raises(MultiAborted):
        prepare_multi(h.tree, [MultiOp(OpCode.GET_DATA, "/x")], S1, MiB)


def test_close_session_deletes_its_ephemerals(h: Harness) -> None:
    h.apply(CreateSessionTxn(6000, b"pw1"), S1)
    h.apply(CreateSessionTxn(6000, b"pw2"), S2)
    h.create("/app", b"")
    h.create("/app/one", flags=CreateFlags.EPHEMERAL, session=S1)
    h.create("/app/two", flags=CreateFlags.EPHEMERAL, session=S2)
    h.create("/app/seq-", flags=CreateFlags.EPHEMERAL | CreateFlags.SEQUENTIAL, session=S1)
    assert h.tree.ephemeral_count == 3
    h.apply(CloseSessionTxn(), S1)
    app = h.tree.get("/app")
    assert app is not None and app.children == {"two"}
    assert S1 not in h.tree.sessions and S2 in h.tree.sessions
    assert ("/app/one", EventType.DELETED) in h.last_events
    assert h.tree.ephemerals == {S2: {"/app/two"}}


def test_apply_is_deterministic_and_snapshot_round_trips(h: Harness) -> None:
    h.apply(CreateSessionTxn(6000, b"pw"), S1)
    h.create("/a/b", b"1", makepath=True)
    h.create("/a/b/e", b"2", flags=CreateFlags.EPHEMERAL)
    h.apply(prepare_set_data(h.tree, "/a", b"3", -1, MiB))
    replica = DataTree()
    for txn in h.txns:
        replica.apply(decode_txn(encode_txn(txn)))
    assert replica.to_snapshot() == h.tree.to_snapshot()
    restored = DataTree.from_snapshot(h.tree.to_snapshot())
    assert restored.to_snapshot() == h.tree.to_snapshot()
    assert restored.ephemerals == h.tree.ephemerals and restored.last_zxid == h.tree.last_zxid
    with pytest.raises(ValueError):
        replica.apply(h.txns[0])  # an old zxid


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xc1",
        b"\x93\x01\x02\x03",
        b"\x95\x01\x02\x03\x63\x90",
        b"\x95\x01\x02\x03\x0e\x91\x92\x0e\x90",
    ],
)
def test_decode_txn_garbage(blob: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_txn(blob)
