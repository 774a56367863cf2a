"""Three ensemble members in one trio run over TCP on 127.0.0.1 (port 0)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
import trio

from coordinator.client import SessionState, open_coordinator
from coordinator.config import CoordinatorConfig
from coordinator.testing import EnsembleHarness

FAST = {"election_timeout_ms": 300, "heartbeat_interval_ms": 50, "tick_time_ms": 500}


@asynccontextmanager
async def ensemble(tmp_path: Path, size: int = 3) -> AsyncIterator[EnsembleHarness]:
    async with trio.open_nursery() as nursery:
        harness = EnsembleHarness(nursery, tmp_path, size, **FAST)
        await harness.start_all()
        yield harness
        nursery.cancel_scope.cancel()


def member_hosts(h: EnsembleHarness, member: int) -> str:
    host, port = h.addresses[member]
    return f"{host}:{port}"


async def test_writes_replicate_and_followers_serve_reads(tmp_path: Path) -> None:
    async with ensemble(tmp_path) as h:
        with trio.fail_after(10):
            leader = await h.leader()
            follower = next(i for i in h.ids if i != leader)
            async with open_coordinator(member_hosts(h, follower)) as zk:
                # Writes on a follower are forwarded to the leader; the reply comes after
                # the follower applied it, so it reads its own write.
                await zk.create("/a/b", b"1", makepath=True)
                assert (await zk.get("/a/b"))[0] == b"1"
                for n in range(50):
                    await zk.set("/a/b", str(n).encode())
                node = await zk.create("/a/seq-", sequential=True)
                assert node == "/a/seq-0000000001"
            other = next(i for i in h.ids if i not in (leader, follower))
            async with open_coordinator(member_hosts(h, other)) as zk2:
                await zk2.sync("/")
                data, stat = await zk2.get("/a/b")
                assert data == b"49" and stat.version == 50
            mntr = await h.four_letter(leader, "mntr")
            assert "zk_followers\t2" in mntr
            assert "zk_synced_followers\t" in mntr
            assert "zk_server_state\tfollower" in await h.four_letter(follower, "mntr")


async def test_leader_crash_keeps_sessions_and_acked_writes(tmp_path: Path) -> None:
    async with ensemble(tmp_path) as h:
        with trio.fail_after(20):
            leader = await h.leader()
            async with open_coordinator(h.hosts, session_timeout_ms=4000) as zk:
                await zk.create("/eph", b"mine", ephemeral=True)
                acked = []
                for n in range(20):
                    await zk.create(f"/w{n}", b"x")
                    acked.append(f"/w{n}")
                await h.stop(leader)
                start = trio.current_time()
                new_leader = await h.leader()
                assert new_leader != leader
                assert trio.current_time() - start < 2 * 2 * FAST["election_timeout_ms"] / 1000
                # The session survives: after reconnecting it still owns its ephemeral.
                while True:
                    try:
                        await zk.create("/after", b"y")
                        break
                    except Exception as exc:  # ConnectionLoss while it moves to a survivor
                        assert "ConnectionLoss" in type(exc).__name__, exc
                assert zk.state is SessionState.CONNECTED
                _, stat = await zk.get("/eph")
                assert stat.ephemeral_owner == zk.session_id
                for path in acked:
                    assert await zk.exists(path) is not None
                # The crashed member comes back and catches up.
                await h.start(leader)
                async with open_coordinator(member_hosts(h, leader)) as zk3:
                    await zk3.sync("/")
                    assert await zk3.exists("/after") is not None
                    assert len(await zk3.get_children("/")) >= 22


async def test_restarted_member_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        h = EnsembleHarness(nursery, tmp_path, 3, snapshot_count=20, **FAST)
        await h.start_all()
        with trio.fail_after(20):
            leader = await h.leader()
            lagging = next(i for i in h.ids if i != leader)
            await h.stop(lagging)
            async with open_coordinator(member_hosts(h, leader)) as zk:
                for n in range(100):
                    await zk.create(f"/n{n}", b"v")
            await h.start(lagging)
            async with open_coordinator(member_hosts(h, lagging)) as zk:
                await zk.sync("/")
                assert len(await zk.get_children("/")) == 100
            snaps = list((tmp_path / f"member-{lagging}").glob("raftsnap.*"))
            assert snaps, "the lagging member should have installed a snapshot"
            logs = list((tmp_path / f"member-{leader}").glob("raftlog.*"))
            assert len(logs) <= 3, "log segments covered by snapshots are deleted"
        nursery.cancel_scope.cancel()


def test_id_must_be_a_member(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in --peers"):
        CoordinatorConfig(id=4, data_dir=tmp_path, peers={1: ("h", 1), 2: ("h", 2)})


async def test_an_even_ensemble_starts_with_a_warning(tmp_path: Path) -> None:
    for size, warned in ((2, True), (3, False)):
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                h = EnsembleHarness(nursery, tmp_path / f"size-{size}", size, **FAST)
                await h.start_all()
                nursery.cancel_scope.cancel()
        started = [e for e in logs if e["event"] == "coordinator_started"]
        assert len(started) == size  # the capture sees the members' log lines
        warnings = [e for e in logs if e["event"] == "even_ensemble_size"]
        assert len(warnings) == (size if warned else 0)
        for w in warnings:
            assert w["log_level"] == "warning" and w["size"] == size
