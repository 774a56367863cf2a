"""Helpers for tests that need a running coordinator (in the spirit of trio.testing).

``CoordinatorHarness`` runs ``serve`` in a nursery on 127.0.0.1 and can stop and restart
it on the same port and data dir, to exercise recovery and client reconnection.
``EnsembleHarness`` does the same for an ensemble, each member with a ``MemberProbe``: its
role changes are events to wait on (``leader()``), and ``pause``/``resume`` hold a member
back deterministically.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from coordinator.config import CoordinatorConfig
from coordinator.probe import MemberProbe
from coordinator.server import serve
from proto.zk import PROTOCOL_VERSION, ClientProtocol, ConnectRequest, ConnectResponse, Reply

__all__ = ["ChaosProxy", "CoordinatorHarness", "EnsembleHarness", "MemberProbe", "RawSession"]


class CoordinatorHarness:
    def __init__(self, nursery: trio.Nursery, data_dir: Path, **config: Any) -> None:
        self.nursery = nursery
        self.config = CoordinatorConfig(host="127.0.0.1", port=0, data_dir=data_dir, **config)
        self.address: tuple[str, int] | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    @property
    def hosts(self) -> str:
        assert self.address is not None
        return f"{self.address[0]}:{self.address[1]}"

    async def start(self) -> tuple[str, int]:
        config = self.config
        if self.address is not None:
            config = replace(config, port=self.address[1])  # restart on the same port
        self._stopped = stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[tuple[str, int]]) -> None:
            try:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    await serve(config, task_status=task_status)
            finally:
                stopped.set()

        self.address = await self.nursery.start(run)
        return self.address

    async def stop(self) -> None:
        if self._scope is not None and self._stopped is not None:
            self._scope.cancel()
            await self._stopped.wait()
            self._scope = None

    async def restart(self) -> tuple[str, int]:
        await self.stop()
        return await self.start()


class RawSession:
    """A session driven by hand over proto.zk: it never pings, so it expires on time."""

    def __init__(self, stream: trio.SocketStream, proto: ClientProtocol, session_id: int) -> None:
        self.stream = stream
        self.proto = proto
        self.session_id = session_id

    @classmethod
    async def open(cls, address: tuple[str, int], timeout_ms: int = 4000) -> RawSession:
        stream = await trio.open_tcp_stream(*address)
        proto = ClientProtocol()
        await stream.send_all(
            proto.connect(ConnectRequest(PROTOCOL_VERSION, 0, timeout_ms, 0, b""))
        )
        while (event := proto.next_event()) is None:
            proto.receive_data(await stream.receive_some(65536))
        assert isinstance(event, ConnectResponse)
        return cls(stream, proto, event.session_id)

    async def call(self, body: Any) -> Reply:
        xid, frame = self.proto.send_request(body)
        await self.stream.send_all(frame)
        while True:
            event = self.proto.next_event()
            if isinstance(event, Reply) and event.xid == xid:
                return event
            if event is None:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise trio.BrokenResourceError("server closed the connection")
                self.proto.receive_data(data)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class ChaosProxy:
    """A TCP proxy in front of one server: ``hold()`` stops forwarding (bytes are swallowed,
    ``swallowed`` is set), ``cut()`` closes every proxied connection, ``heal()`` resumes."""

    def __init__(self, nursery: trio.Nursery, target: tuple[str, int]) -> None:
        self.nursery = nursery
        self.target = target
        self.holding = False
        self.swallowed = trio.Event()
        self._streams: list[trio.SocketStream] = []
        self._held: list[trio.SocketStream] = []
        self.address: tuple[str, int] | None = None

    @property
    def hosts(self) -> str:
        assert self.address is not None
        return f"{self.address[0]}:{self.address[1]}"

    async def start(self) -> None:
        serve_tcp = functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
        listeners = await self.nursery.start(serve_tcp)
        self.address = listeners[0].socket.getsockname()[:2]

    def hold(self) -> None:
        self.holding = True
        self.swallowed = trio.Event()

    async def heal(self) -> None:
        """Resume forwarding; connections accepted while holding are closed, so their
        clients retry at once instead of waiting out their connect timeout."""
        self.holding = False
        held, self._held = self._held, []
        for s in held:
            await trio.aclose_forcefully(s)

    async def cut(self) -> None:
        streams, self._streams = self._streams, []
        for s in streams:
            await trio.aclose_forcefully(s)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                if self.holding:
                    self.swallowed.set()
                    continue
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(dst)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.holding:
            self._held.append(client)
            await trio.sleep_forever()
        server = await trio.open_tcp_stream(*self.target)
        self._streams += [client, server]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server)
            nursery.start_soon(self._pump, server, client)


class EnsembleHarness:
    """``size`` ensemble members in one nursery, on 127.0.0.1 with port-0 client and peer
    ports (the peer listeners are bound first so every member knows the others' ports).
    ``stop(i)`` / ``start(i)`` crash and restart member ``i`` on the same ports and dir;
    ``pause(i)`` / ``resume(i)`` stall its request processor (see ``MemberProbe``)."""

    def __init__(self, nursery: trio.Nursery, data_dir: Path, size: int = 3, **config: Any):
        self.nursery = nursery
        self.data_dir = data_dir
        self.size = size
        self.extra = config
        self.ids = list(range(1, size + 1))
        self.peer_ports: dict[int, int] = {}
        self.addresses: dict[int, tuple[str, int]] = {}
        self._scopes: dict[int, trio.CancelScope] = {}
        self._stopped: dict[int, trio.Event] = {}
        self.probes: dict[int, MemberProbe] = {}
        self._changed = trio.Event()

    @property
    def hosts(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in (self.addresses[i] for i in self.ids))

    def config(self, member: int) -> CoordinatorConfig:
        peers = {i: ("127.0.0.1", self.peer_ports[i]) for i in self.ids}
        return CoordinatorConfig(
            id=member,
            host="127.0.0.1",
            port=self.addresses[member][1] if member in self.addresses else 0,
            data_dir=self.data_dir / f"member-{member}",
            peers=peers,
            peer_port=self.peer_ports[member],
            **self.extra,
        )

    async def start_all(self) -> None:
        listeners = {}
        for i in self.ids:
            listeners[i] = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.peer_ports[i] = listeners[i][0].socket.getsockname()[1]
        for i in self.ids:
            await self.start(i, listeners[i])

    async def start(self, member: int, listeners: list[trio.SocketListener] | None = None) -> None:
        if listeners is None:
            listeners = await trio.open_tcp_listeners(self.peer_ports[member], host="127.0.0.1")
        config = self.config(member)
        self._stopped[member] = stopped = trio.Event()
        self.probes[member] = probe = MemberProbe(self._on_probe)

        async def run(task_status: trio.TaskStatus[tuple[str, int]]) -> None:
            try:
                with trio.CancelScope() as scope:
                    self._scopes[member] = scope
                    await serve(
                        config, task_status=task_status, peer_listeners=listeners, probe=probe
                    )
            finally:
                stopped.set()

        self.addresses[member] = await self.nursery.start(run)

    async def stop(self, member: int) -> None:
        scope = self._scopes.pop(member, None)
        if scope is not None:
            scope.cancel()
            await self._stopped[member].wait()

    async def four_letter(self, member: int, word: str) -> str:
        stream = await trio.open_tcp_stream(*self.addresses[member])
        try:
            await stream.send_all(word.encode())
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
        finally:
            await trio.aclose_forcefully(stream)
        return b"".join(chunks).decode()

    def pause(self, member: int) -> None:
        """Hold member ``member`` back: it queues everything and handles nothing."""
        self.probes[member].pause()

    def resume(self, member: int) -> None:
        self.probes[member].resume()

    def _on_probe(self, probe: MemberProbe) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def running_leader(self) -> int | None:
        """A running member that currently reports itself leader, or None."""
        for i in self.ids:
            if i in self._scopes and self.probes[i].role == "leader":
                return i
        return None

    async def leader(self) -> int:
        """Wait until some running member reports itself leader; returns its id."""
        while (leader := self.running_leader()) is None:
            await self._changed.wait()
        return leader
