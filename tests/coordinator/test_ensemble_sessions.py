"""Sessions across ensemble members: a client that moves to a member that is behind.

The member is held back with ``EnsembleHarness.pause``: it queues everything (the leader's
appends, the client's ConnectRequest) and then handles it as one batch, so the Connect is
seen before the session's create_session entry is applied there: the state a slow
follower is in when a client reconnects to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from coordinator.client import SessionState, WatchedEvent, open_coordinator
from coordinator.testing import ChaosProxy, EnsembleHarness
from proto.zk import PROTOCOL_VERSION, ClientProtocol, ConnectRequest, ConnectResponse

FAST = {"election_timeout_ms": 300, "heartbeat_interval_ms": 50, "tick_time_ms": 500}


@asynccontextmanager
async def ensemble(tmp_path: Path) -> AsyncIterator[EnsembleHarness]:
    async with trio.open_nursery() as nursery:
        harness = EnsembleHarness(nursery, tmp_path, 3, **FAST)
        await harness.start_all()
        yield harness
        nursery.cancel_scope.cancel()


def address(h: EnsembleHarness, member: int) -> str:
    host, port = h.addresses[member]
    return f"{host}:{port}"


class States:
    def __init__(self) -> None:
        self.seen: list[SessionState] = []
        self._changed = trio.Event()

    def __call__(self, state: SessionState) -> None:
        self.seen.append(state)
        self._changed.set()
        self._changed = trio.Event()

    async def settled(self) -> SessionState:
        """Wait for CONNECTED or LOST after a SUSPENDED; return it."""
        while True:
            after = self.seen[self.seen.index(SessionState.SUSPENDED) + 1 :] if (
                SessionState.SUSPENDED in self.seen
            ) else []  # fmt: skip
            if after:
                return after[0]
            await self._changed.wait()


async def _leader_and_behind(h: EnsembleHarness) -> tuple[int, int, ChaosProxy]:
    leader = await h.leader()
    behind = next(i for i in h.ids if i != leader)
    proxy = ChaosProxy(h.nursery, h.addresses[leader])
    await proxy.start()
    return leader, behind, proxy


async def test_reconnect_to_a_member_that_has_not_applied_the_session(tmp_path: Path) -> None:
    async with ensemble(tmp_path) as h:
        with trio.fail_after(10):
            _, behind, proxy = await _leader_and_behind(h)
            h.pause(behind)
            hosts = f"{proxy.hosts},{address(h, behind)}"
            async with open_coordinator(hosts, session_timeout_ms=4000) as zk:
                states = States()
                zk.add_listener(states)
                session = zk.session_id
                # Committed by the leader and the other follower; ``behind`` has not even
                # received it. The client moves there (its next host) at once.
                proxy.hold()
                await proxy.cut()
                await h.probes[behind].wait_connects_queued(1)
                h.resume(behind)
                # Before revalidation, ``behind`` answered "expired" and the session was LOST.
                assert await states.settled() is SessionState.CONNECTED
                assert states.seen == [SessionState.SUSPENDED, SessionState.CONNECTED]
                assert zk.session_id == session
                await zk.create("/after", b"", ephemeral=True)
                _, stat = await zk.get("/after")
                assert stat.ephemeral_owner == session


async def test_reconnect_keeps_ephemerals_and_watches_on_a_member_behind(
    tmp_path: Path,
) -> None:
    async with ensemble(tmp_path) as h:
        with trio.fail_after(10):
            leader, behind, proxy = await _leader_and_behind(h)
            h.pause(behind)
            hosts = f"{proxy.hosts},{address(h, behind)}"
            async with open_coordinator(hosts, session_timeout_ms=4000) as zk:
                states = States()
                zk.add_listener(states)
                session = zk.session_id
                await zk.create("/eph", b"mine", ephemeral=True)
                await zk.create("/data", b"v0")
                fired: list[WatchedEvent] = []
                fired_event = trio.Event()

                def on_change(event: WatchedEvent) -> None:
                    fired.append(event)
                    fired_event.set()

                await zk.get("/data", watch=on_change)
                # The client has seen zxids ``behind`` has not applied: ``behind`` must
                # catch up (not refuse, not answer expired) before it lets it in.
                proxy.hold()
                await proxy.cut()
                await h.probes[behind].wait_connects_queued(1)
                h.resume(behind)
                assert await states.settled() is SessionState.CONNECTED
                # It was let in on its first attempt, not after a round of refusals.
                assert h.probes[behind].connects_queued == 1
                assert zk.session_id == session
                data, stat = await zk.get("/eph")
                assert data == b"mine" and stat.ephemeral_owner == session
                async with open_coordinator(address(h, leader)) as other:
                    await other.set("/data", b"v1")
                await fired_event.wait()
                assert [(e.type.name, e.path) for e in fired] == [("CHANGED", "/data")]


async def resume(address: tuple[str, int], session_id: int, password: bytes) -> int:
    """Present ``session_id`` by hand; returns the negotiated timeout (0: expired)."""
    stream = await trio.open_tcp_stream(*address)
    try:
        proto = ClientProtocol()
        request = ConnectRequest(PROTOCOL_VERSION, 0, 4000, session_id, password)
        await stream.send_all(proto.connect(request))
        while (event := proto.next_event()) is None:
            proto.receive_data(await stream.receive_some(65536))
    finally:
        await trio.aclose_forcefully(stream)
    assert isinstance(event, ConnectResponse)
    return event.timeout_ms


async def test_unknown_sessions_and_wrong_passwords_are_expired(tmp_path: Path) -> None:
    async with ensemble(tmp_path) as h:
        with trio.fail_after(10):
            leader = await h.leader()
            async with open_coordinator(address(h, leader), session_timeout_ms=4000) as zk:
                for member in h.ids:  # the leader decides, and followers ask it
                    assert await resume(h.addresses[member], (leader << 56) | 77, b"p") == 0
                    assert await resume(h.addresses[member], zk.session_id, b"wrong") == 0
                # The real session was neither taken over nor harmed.
                await zk.create("/still-mine", b"", ephemeral=True)
                assert zk.state is SessionState.CONNECTED


async def test_a_leader_that_cannot_confirm_it_leads_does_not_revalidate(
    tmp_path: Path,
) -> None:
    async with ensemble(tmp_path) as h:
        with trio.fail_after(15):
            leader = await h.leader()
            followers = [i for i in h.ids if i != leader]
            proxy = ChaosProxy(h.nursery, h.addresses[followers[0]])
            await proxy.start()
            hosts = f"{proxy.hosts},{address(h, leader)}"
            async with open_coordinator(hosts, session_timeout_ms=6000) as zk:
                states = States()
                zk.add_listener(states)
                session = zk.session_id
                for f in followers:  # the leader is cut off from its majority
                    h.pause(f)
                proxy.hold()
                await proxy.cut()  # the client moves to the leader
                await h.probes[leader].wait_connects_queued(1)
                while h.probes[leader].role == "leader":  # check-quorum steps it down
                    await h.probes[leader].wait_changed()
                # Its verdict could be stale (a new leader may have expired the session):
                # it never let the client in.
                assert states.seen == [SessionState.SUSPENDED]
                for f in followers:
                    h.resume(f)
                await proxy.heal()
                assert await states.settled() is SessionState.CONNECTED
                assert zk.session_id == session
