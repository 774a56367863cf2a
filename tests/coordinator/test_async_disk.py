"""Asynchronous log writes (``coordinator.consensus.writes``, ``RaftDisk.run`` and the
engine's ``async_disk`` mode), synchronously: the test plays the writer thread."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.consensus.disk import RaftDisk
from coordinator.consensus.host import EnsembleEngine
from coordinator.consensus.node import Snapshot
from coordinator.consensus.writes import DiskJob, WriteQueue
from coordinator.engine import Connect, Output, Request, Send
from proto.codec import unpackb
from proto.zk import PROTOCOL_VERSION, ConnectRequest, CreateRequest
from proto.zk_peer import AppendEntries, AppendResponse, Entry, PeerMessage, VoteResponse

WALL = 1_700_000_000_000


def _ack(match: int) -> PeerMessage:
    return PeerMessage(2, 1, AppendResponse(1, True, match))


def test_acks_wait_for_every_write_begun_before_them() -> None:
    q = WriteQueue()
    assert not q.gate(_ack(0))  # nothing being written: it goes at once
    first = DiskJob([Entry(1, 1, b"a")])
    q.add(first)
    assert q.take() == [first]
    assert q.take() == []  # one group at a time
    assert q.gate(_ack(1))  # waits for the write in progress
    second = DiskJob([Entry(1, 2, b"b")])
    q.add(second)
    assert q.gate(_ack(2))  # waits for the last write, not yet started
    # Appends and votes depend on the hard state only (written inline): never held back.
    assert not q.gate(PeerMessage(1, 2, AppendEntries(1, 0, 0, [], 0)))
    assert not q.gate(PeerMessage(2, 1, VoteResponse(1, True)))
    assert first.after == [_ack(1)] and second.after == [_ack(2)]
    assert q.finished() == [first]
    assert q.take() == [second] and q.busy
    q.finished()
    assert not q.busy


def test_run_writes_a_group_with_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        syncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    disk = RaftDisk(tmp_path)
    disk.load()
    jobs = [DiskJob([Entry(1, i, b"x%d" % i)]) for i in range(1, 4)]
    # A conflicting tail from a new leader: truncate at 3, then write 3..4 of term 2.
    jobs.append(DiskJob([Entry(2, 3, b"y3"), Entry(2, 4, b"y4")]))
    jobs.append(DiskJob(compaction=(2, 1, ["tree", "rows"])))
    disk.run(jobs)
    disk.run([DiskJob([Entry(2, 5, b"y5")])])
    disk.close()
    assert len(syncs) <= 4  # group 1: truncation + close before the snapshot + end; group 2
    snap = jobs[-1].compacted
    assert snap is not None and unpackb(snap.data) == ["tree", "rows"]
    _, loaded, entries = RaftDisk(tmp_path).load()
    assert loaded == Snapshot(2, 1, snap.data)
    assert [(e.term, e.index, e.data) for e in entries] == [
        (2, 3, b"y3"), (2, 4, b"y4"), (2, 5, b"y5"),
    ]  # fmt: skip


def _engine(tmp_path: Path) -> EnsembleEngine:
    config = CoordinatorConfig(
        id=1, data_dir=tmp_path, peers={1: ("127.0.0.1", 1)},
        election_timeout_ms=300, heartbeat_interval_ms=50,
    )  # fmt: skip
    engine = EnsembleEngine(config, now_ms=0, wall_ms=WALL, rng=random.Random(1))
    engine.async_disk = True
    return engine


def _write_all(engine: EnsembleEngine, out: list[Output]) -> None:
    """Play the writer thread until nothing is left to write."""
    while jobs := engine.writes.take():
        engine.disk.run(jobs)
        engine.writes.finished()
        engine.persisted(jobs)
        engine.flush(1000, WALL, out)


def test_a_leader_commits_only_after_its_own_fsync(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    out: list[Output] = []
    engine.tick(1000, WALL, out)
    engine.flush(1000, WALL, out)
    assert engine.node.is_leader
    _write_all(engine, out)
    out = engine.process(
        [Connect(1, ConnectRequest(PROTOCOL_VERSION, 0, 6000, 0, b""))], now_ms=1000, wall_ms=WALL
    )
    engine.flush(1000, WALL, out)
    _write_all(engine, out)
    assert engine.session_of(1) is not None
    out = engine.process(
        [Request(1, 5, CreateRequest("/a", b"x", 0), 1000)], now_ms=1000, wall_ms=WALL
    )
    engine.flush(1000, WALL, out)
    # Alone in its ensemble, the leader's own fsync is the majority: no reply before it.
    assert engine.writes.waiting and not [o for o in out if isinstance(o, Send)]
    assert engine.node.commit_index < engine.node.log.last_index
    _write_all(engine, out)
    assert [o.conn_id for o in out if isinstance(o, Send)] == [1]
    assert engine.node.commit_index == engine.node.log.last_index
    engine.close()
    # And it is on disk.
    _, _, entries = RaftDisk(tmp_path).load()
    assert entries[-1].index == engine.node.log.last_index
