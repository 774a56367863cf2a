"""A session whose connection closes unannounced expires after the disconnect grace, not
after its whole timeout, unless its client comes back (coordinator/sessions.py).

This is what lets a broker killed with SIGKILL lose its ephemeral registration, and so its
leaderships, in about a second while sessions stay long enough to ride out pauses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from coordinator.client import SessionState, open_coordinator
from coordinator.sessions import SessionTracker
from coordinator.testing import ChaosProxy, CoordinatorHarness, EnsembleHarness, RawSession
from proto.zk import CreateFlags, CreateRequest
from tests.coordinator.test_zk_server import Recorder

LONG_SESSION_MS = 20_000


# --- the tracker ----------------------------------------------------------------------


def test_disconnect_brings_the_deadline_forward_and_a_touch_restores_it() -> None:
    t = SessionTracker(1000, 60_000)
    t.add(1, 20_000, now_ms=0)
    t.disconnected(1, now_ms=5000, grace_ms=1000)
    assert t.next_deadline_ms() == 6000
    assert t.touch(1, 5500)  # the client reconnected
    assert t.next_deadline_ms() == 25_500
    t.disconnected(1, now_ms=25_000, grace_ms=1000)  # never later than the deadline
    assert t.next_deadline_ms() == 25_500
    assert t.expired(25_499) == [] and t.expired(25_500) == [1]


def test_disconnect_grace_zero_is_zookeepers_behaviour() -> None:
    t = SessionTracker(1000, 60_000)
    t.add(1, 20_000, now_ms=0)
    t.disconnected(1, now_ms=5000, grace_ms=0)
    assert t.next_deadline_ms() == 20_000


def test_only_the_member_the_client_was_last_heard_through_counts() -> None:
    t = SessionTracker(1000, 60_000)
    t.add(1, 20_000, now_ms=0)
    t.add(3, 20_000, now_ms=0)
    t.disconnected(3, now_ms=50, grace_ms=1000, member=2)  # not heard through anyone yet
    assert t.expired(1050) == [3]
    t.touch(1, 100, home=2)  # heard through member 2
    t.touch(1, 200, home=3)  # the client moved to member 3
    t.disconnected(1, now_ms=300, grace_ms=1000, member=2)  # member 2's late report
    assert t.next_deadline_ms() == 20_200
    t.disconnected(1, now_ms=400, grace_ms=1000, member=3)
    assert t.next_deadline_ms() == 1400
    t.disconnected(2, now_ms=400, grace_ms=1000, member=3)  # unknown sessions: nothing


# --- a standalone server ----------------------------------------------------------------


@asynccontextmanager
async def standalone(tmp_path: Path, **config: Any) -> AsyncIterator[CoordinatorHarness]:
    async with trio.open_nursery() as nursery:
        harness = CoordinatorHarness(nursery, tmp_path, **config)
        await harness.start()
        yield harness
        nursery.cancel_scope.cancel()


async def _dropped_ephemeral_after(h_hosts: str, address: tuple[str, int]) -> float:
    """Open a raw session with an ephemeral, drop its connection without CloseSession,
    and return how long until the ephemeral is deleted."""
    async with open_coordinator(h_hosts) as zk:
        raw = await RawSession.open(address, timeout_ms=LONG_SESSION_MS)
        reply = await raw.call(CreateRequest("/dead", b"", int(CreateFlags.EPHEMERAL)))
        assert reply.error_code == 0
        watcher = Recorder()
        assert await zk.exists("/dead", watch=watcher) is not None
        start = trio.current_time()
        await raw.aclose()  # the process died: the kernel closed its socket
        await watcher.wait()
        return trio.current_time() - start


async def test_a_dropped_connection_expires_its_session_after_the_grace(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with standalone(tmp_path, session_disconnect_grace_ms=1000) as h:
        assert h.address is not None
        elapsed = await _dropped_ephemeral_after(h.hosts, h.address)
    assert 1.0 <= elapsed <= 1.0 + 0.3  # the grace plus one expiry step, not 20 s


async def test_without_a_grace_a_dropped_session_lives_its_whole_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with standalone(tmp_path, session_disconnect_grace_ms=0) as h:
        assert h.address is not None
        elapsed = await _dropped_ephemeral_after(h.hosts, h.address)
    assert elapsed >= LONG_SESSION_MS / 1000


async def test_a_client_that_reconnects_keeps_its_session(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    grace = {"session_disconnect_grace_ms": 1000}
    async with standalone(tmp_path, **grace) as h, trio.open_nursery() as n:
        assert h.address is not None
        proxy = ChaosProxy(n, h.address)
        await proxy.start()
        async with open_coordinator(proxy.hosts, session_timeout_ms=LONG_SESSION_MS) as zk:
            await zk.create("/alive", ephemeral=True)
            await proxy.cut()  # the connection drops; the client reconnects at once
            await trio.sleep(5)  # five graces
            assert zk.state is SessionState.CONNECTED
            assert await zk.exists("/alive") is not None
        n.cancel_scope.cancel()


# --- an ensemble ----------------------------------------------------------------------

FAST = {
    "election_timeout_ms": 300,
    "heartbeat_interval_ms": 50,
    "tick_time_ms": 500,
    "max_session_timeout_ms": 60_000,
    "session_disconnect_grace_ms": 1000,
}


@asynccontextmanager
async def ensemble(tmp_path: Path) -> AsyncIterator[EnsembleHarness]:
    async with trio.open_nursery() as nursery:
        harness = EnsembleHarness(nursery, tmp_path, 3, **FAST)
        await harness.start_all()
        yield harness
        nursery.cancel_scope.cancel()


async def test_ensemble_a_client_dropped_at_a_follower_expires_after_the_grace(
    tmp_path: Path,
) -> None:
    async with ensemble(tmp_path) as h:
        leader = await h.leader()
        follower = next(m for m in h.addresses if m != leader)
        async with open_coordinator(h.hosts) as zk:
            raw = await RawSession.open(h.addresses[follower], timeout_ms=LONG_SESSION_MS)
            reply = await raw.call(CreateRequest("/dead", b"", int(CreateFlags.EPHEMERAL)))
            assert reply.error_code == 0
            watcher = Recorder()
            assert await zk.exists("/dead", watch=watcher) is not None
            start = trio.current_time()
            await raw.aclose()
            with trio.fail_after(LONG_SESSION_MS / 2000):  # far below the session timeout
                await watcher.wait()
            assert trio.current_time() - start >= 1.0


async def test_ensemble_a_client_that_moves_to_another_member_keeps_its_session(
    tmp_path: Path,
) -> None:
    async with ensemble(tmp_path) as h, trio.open_nursery() as n:
        leader = await h.leader()
        a, b = (m for m in sorted(h.addresses) if m != leader)
        proxy = ChaosProxy(n, h.addresses[a])
        await proxy.start()
        host_b, port_b = h.addresses[b]
        hosts = f"{proxy.hosts},{host_b}:{port_b}"
        async with open_coordinator(hosts, session_timeout_ms=LONG_SESSION_MS) as zk:
            await zk.create("/alive", ephemeral=True)
            await proxy.cut()  # the connection to a drops; the client tries b next
            with trio.fail_after(10):
                while zk.state is not SessionState.CONNECTED or not await _on(zk, "/alive"):
                    await trio.sleep(0.05)
            # Member a reported the drop; the client is back: the session must live on.
            watcher = Recorder()
            assert await zk.exists("/alive", watch=watcher) is not None
            with trio.move_on_after(3 * FAST["session_disconnect_grace_ms"] / 1000):
                await watcher.wait()
            assert watcher.events == []
            assert zk.state is SessionState.CONNECTED
        n.cancel_scope.cancel()


async def _on(zk: Any, path: str) -> bool:
    try:
        return await zk.exists(path) is not None
    except Exception:  # still reconnecting
        return False
