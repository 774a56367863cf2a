"""Txn log, snapshots and recovery, synchronously (plain files in tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.engine import Connect, Engine, Request
from coordinator.snapshot import Storage, list_snapshots
from coordinator.txn import CreateTxn, SetDataTxn, Txn, make_zxid
from coordinator.txnlog import CorruptLogError, TxnLog, list_logs, read_log
from proto.zk import (
    PROTOCOL_VERSION,
    ConnectRequest,
    CreateFlags,
    CreateRequest,
    SetDataRequest,
)


def _txn(n: int, path: str | None = None) -> Txn:
    return Txn(make_zxid(1, n), 1000 + n, 7, CreateTxn(path or f"/n{n}", b"x" * n, 0))


def test_group_commit_shares_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    log = TxnLog(tmp_path)
    for n in range(1, 6):
        log.append(_txn(n))
    calls.clear()  # creating the file fsyncs the directory once
    assert log.commit() == 5
    assert len(calls) == 1
    assert log.commit() == 0 and len(calls) == 1
    log.close()
    assert [t.zxid for t in read_log(tmp_path, 0)] == [make_zxid(1, n) for n in range(1, 6)]
    assert [t.zxid for t in read_log(tmp_path, make_zxid(1, 3))] == [
        make_zxid(1, 4),
        make_zxid(1, 5),
    ]


def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    log = TxnLog(tmp_path)
    for n in range(1, 4):
        log.append(_txn(n))
    log.commit()
    log.close()
    ((_, path),) = list_logs(tmp_path)
    whole = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"\x00\x00\x00\x40\x12\x34")  # a record header cut short by a crash
    assert len(list(read_log(tmp_path, 0))) == 3
    assert path.stat().st_size == whole
    # A flipped byte in the last record: that record goes, the prefix stays.
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert [t.zxid for t in read_log(tmp_path, 0)] == [make_zxid(1, 1), make_zxid(1, 2)]


def test_corruption_in_an_older_log_is_an_error(tmp_path: Path) -> None:
    log = TxnLog(tmp_path)
    log.append(_txn(1))
    log.roll()
    log.append(_txn(2))
    log.commit()
    log.close()
    (_, first), _ = list_logs(tmp_path)
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError):
        list(read_log(tmp_path, 0))


def test_snapshot_plus_log_tail_and_purge(tmp_path: Path) -> None:
    storage = Storage(tmp_path, snapshot_count=3, snap_retain_count=2)
    tree, info = storage.recover()
    assert info.replayed == 0
    n = 0
    for _ in range(4):  # four snapshots of three txns each
        for _ in range(3):
            n += 1
            txn = _txn(n)
            storage.log.append(txn)
            tree.apply(txn)
        storage.commit()
        assert storage.snapshot_due()
        storage.snapshot(tree)
    n += 1
    storage.log.append(tail := Txn(make_zxid(1, n), 5, 7, SetDataTxn("/n1", b"new", 1)))
    tree.apply(tail)
    storage.close()
    assert len(list_snapshots(tmp_path)) == 2
    again, info = Storage(tmp_path).recover()
    assert info.snapshot_zxid == make_zxid(1, 12) and info.replayed == 1
    assert again.to_snapshot() == tree.to_snapshot()


def test_damaged_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    storage = Storage(tmp_path, snapshot_count=1, snap_retain_count=5)
    tree, _ = storage.recover()
    for n in (1, 2):
        storage.log.append(_txn(n))
        tree.apply(_txn(n))
        storage.commit()
        storage.snapshot(tree)
    storage.close()
    newest = list_snapshots(tmp_path)[-1][1]
    newest.write_bytes(newest.read_bytes()[:-3])
    again, info = Storage(tmp_path).recover()
    assert info.snapshot_zxid == make_zxid(1, 1) and info.replayed == 1
    assert again.to_snapshot() == tree.to_snapshot()


def _engine(tmp_path: Path, **kw: int) -> Engine:
    config = CoordinatorConfig(data_dir=tmp_path, **kw)  # type: ignore[arg-type]
    return Engine(config, now_ms=0, wall_ms=1_700_000_000_000)


def _session(engine: Engine, conn: int) -> int:
    engine.process(
        [Connect(conn, ConnectRequest(PROTOCOL_VERSION, 0, 6000, 0, b""))], now_ms=0, wall_ms=1
    )
    sid = engine.session_of(conn)
    assert sid is not None
    return sid


@pytest.mark.parametrize("snapshot_count", [1000, 4])
def test_engine_restart_restores_tree_zxid_and_sessions(
    tmp_path: Path, snapshot_count: int
) -> None:
    engine = _engine(tmp_path, snapshot_count=snapshot_count)
    sid = _session(engine, 1)
    batch: list[Connect | Request] = [
        Request(
            1,
            i,
            CreateRequest(f"/app/n{i}", b"d", int(CreateFlags.EPHEMERAL) if i % 2 else 0, True),
            0,
        )
        for i in range(1, 8)
    ]
    batch.append(Request(1, 9, SetDataRequest("/app/n2", b"changed", 0), 0))
    engine.process(batch, now_ms=0, wall_ms=2)
    before, zxid = engine.tree.to_snapshot(), engine.tree.last_zxid
    engine.close()
    if snapshot_count == 4:
        assert list_snapshots(tmp_path), "expected a snapshot to have been taken"
    again = _engine(tmp_path, snapshot_count=snapshot_count)
    assert again.tree.to_snapshot() == before and again.tree.last_zxid == zxid
    assert sid in again.tree.sessions and again.sessions.is_live(sid)
    # New zxids continue in a later epoch.
    _session(again, 2)
    assert again.tree.last_zxid > zxid and again.tree.last_zxid >> 32 == (zxid >> 32) + 1
    again.close()
