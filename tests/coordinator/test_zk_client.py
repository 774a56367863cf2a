"""Client behaviour across connection loss: SUSPENDED, reconnect, SetWatches, LOST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from coordinator.client import EventType, SessionState, WatchedEvent, open_coordinator
from coordinator.testing import ChaosProxy, CoordinatorHarness
from proto.errors import ConnectionLossError, SessionExpiredError


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
