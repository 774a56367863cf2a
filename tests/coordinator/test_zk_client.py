"""Client behaviour across connection loss: SUSPENDED, reconnect, SetWatches, LOST."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
import trio
import trio.testing

from coordinator.client import (
    CoordinatorClient,
    EventType,
    SessionState,
    WatchedEvent,
    open_coordinator,
)
from coordinator.client_conn import _Connection
from coordinator.testing import ChaosProxy, CoordinatorHarness
from proto.errors import ConnectionLossError, NoNodeError, SessionExpiredError
from proto.zk import ClientProtocol


@asynccontextmanager
async def coordinator(tmp_path: Path, **config: Any) -> AsyncIterator[CoordinatorHarness]:
    async with trio.open_nursery() as nursery:
        harness = CoordinatorHarness(nursery, tmp_path, **config)
        await harness.start()
        yield harness
        nursery.cancel_scope.cancel()


class States:
    def __init__(self) -> None:
        self.seen: list[SessionState] = []
        self._changed = trio.Event()

    def __call__(self, state: SessionState) -> None:
        self.seen.append(state)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, state: SessionState) -> None:
        while state not in self.seen:
            await self._changed.wait()


async def test_reconnect_after_server_restart_keeps_session_and_watches(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        coordinator(tmp_path) as h,
        open_coordinator(h.hosts, session_timeout_ms=10_000) as zk,
    ):
        states = States()
        zk.add_listener(states)
        session = zk.session_id
        await zk.create("/mine", b"", ephemeral=True)
        await zk.create("/data", b"v0")
        fired: list[WatchedEvent] = []
        fired_event = trio.Event()

        def on_change(event: WatchedEvent) -> None:
            fired.append(event)
            fired_event.set()

        await zk.get("/data", watch=on_change)
        await h.stop()
        await states.wait_for(SessionState.SUSPENDED)
        assert zk.state is SessionState.SUSPENDED
        await h.start()  # same port, same data dir: the session is restored
        await states.wait_for(SessionState.CONNECTED)
        assert states.seen == [SessionState.SUSPENDED, SessionState.CONNECTED]
        assert zk.session_id == session
        stat = await zk.exists("/mine")
        assert stat is not None and stat.ephemeral_owner == session
        async with open_coordinator(h.hosts) as other:
            await other.set("/data", b"v1")
        await fired_event.wait()
        assert fired == [WatchedEvent(EventType.CHANGED, "/data")]


async def test_watch_fires_on_reconnect_if_change_was_missed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with coordinator(tmp_path) as h:
        assert h.address is not None
        proxy = ChaosProxy(h.nursery, h.address)
        await proxy.start()
        async with (
            open_coordinator(proxy.hosts, session_timeout_ms=20_000, connect_timeout_ms=1000) as zk,
            open_coordinator(h.hosts) as other,
        ):
            states = States()
            zk.add_listener(states)
            await zk.create("/d", b"0")
            fired = trio.Event()
            await zk.get("/d", watch=lambda e: fired.set())
            proxy.hold()
            await proxy.cut()
            await states.wait_for(SessionState.SUSPENDED)
            await other.set("/d", b"1")  # while zk is disconnected
            await proxy.heal()
            await fired.wait()  # SetWatches saw mzxid > the client's last zxid
            assert zk.state is SessionState.CONNECTED


async def test_pending_request_fails_with_connection_loss(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h:
        assert h.address is not None
        proxy = ChaosProxy(h.nursery, h.address)
        await proxy.start()
        async with open_coordinator(proxy.hosts) as zk:
            await zk.create("/x")
            proxy.hold()
            outcome: list[BaseException] = []

            async def request() -> None:
                try:
                    await zk.get("/x")
                except ConnectionLossError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(request)
                await proxy.swallowed.wait()  # the request is in flight
                await proxy.cut()
            (error,) = outcome
            assert error.__cause__ is not None
            await proxy.heal()
            # After reconnecting, requests flow again.
            assert await zk.exists("/x") is not None


async def test_request_while_suspended_times_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        coordinator(tmp_path) as h,
        open_coordinator(h.hosts, request_timeout_ms=3000) as zk,
    ):
        states = States()
        zk.add_listener(states)
        await h.stop()
        await states.wait_for(SessionState.SUSPENDED)
        start = trio.current_time()
        with pytest.raises(ConnectionLossError):
            await zk.get("/")
        assert trio.current_time() - start == pytest.approx(3.0)
        await h.start()
        await states.wait_for(SessionState.CONNECTED)
        await zk.get("/")


async def test_session_expired_while_disconnected_goes_lost(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with coordinator(tmp_path) as h:
        assert h.address is not None
        proxy = ChaosProxy(h.nursery, h.address)
        await proxy.start()
        async with (
            open_coordinator(h.hosts) as observer,
            open_coordinator(proxy.hosts, session_timeout_ms=6000, connect_timeout_ms=1000) as zk,
        ):
            states = States()
            zk.add_listener(states)
            await zk.create("/eph", b"", ephemeral=True)
            gone = trio.Event()
            await observer.exists("/eph", watch=lambda e: gone.set())
            proxy.hold()
            await proxy.cut()
            await states.wait_for(SessionState.SUSPENDED)
            await gone.wait()  # the server expired the session meanwhile
            await proxy.heal()
            await states.wait_for(SessionState.LOST)
            assert states.seen == [SessionState.SUSPENDED, SessionState.LOST]
            with pytest.raises(SessionExpiredError):
                await zk.get("/")


async def test_closing_the_client_logs_no_connection_lost(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with coordinator(tmp_path) as h:
        for _ in range(5):  # the log line raced the client's own shutdown
            with structlog.testing.capture_logs() as logs:
                async with open_coordinator(h.hosts) as zk:
                    await zk.create("/x", ephemeral=True)
            events = [e["event"] for e in logs]
            assert "connected" in events  # the capture sees the client's log lines
            assert "connection_lost" not in events, logs


async def test_an_error_in_the_body_comes_out_bare(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with coordinator(tmp_path) as h:
        with pytest.raises(NoNodeError):
            async with open_coordinator(h.hosts) as zk:
                await zk.get("/missing")
        try:
            async with open_coordinator(h.hosts) as zk:
                try:
                    await zk.get("/missing")
                except NoNodeError as exc:
                    raise KeyError("/missing") from exc
        except KeyError as err:
            caught = err
        # The chain and the traceback are the body's own; the group is not in them.
        assert isinstance(caught.__cause__, NoNodeError)
        assert not isinstance(caught.__context__, BaseExceptionGroup)
        frames = [f.f_code.co_name for f, _ in traceback.walk_tb(caught.__traceback__)]
        assert "test_an_error_in_the_body_comes_out_bare" in frames
        # The session was closed all the same: its ephemerals are gone.
        async with open_coordinator(h.hosts) as zk:
            assert await zk.get_children("/") == []


async def test_a_connection_the_client_closed_is_not_reported_lost() -> None:
    # Deterministic form of the race above: the connection task notices the end of a
    # connection after the client started closing itself.
    client = CoordinatorClient(
        [("127.0.0.1", 1)], session_timeout_ms=6000, connect_timeout_ms=1000,
        request_timeout_ms=1000,
    )  # fmt: skip
    ours, theirs = trio.testing.memory_stream_pair()
    conn = _Connection(cast(trio.SocketStream, ours), ClientProtocol(), 4.0, 2.0)
    client._closing = True
    await theirs.aclose()
    with structlog.testing.capture_logs() as logs:
        with trio.fail_after(1):
            await client._run(conn)
    assert [e for e in logs if e["log_level"] == "warning"] == []
