"""TCP proxies that sync fault tests open, cut, stall and heal with plain method calls.

One ``ProxyHub`` runs a trio loop on a daemon thread and hosts every proxy of a cluster;
each ``TcpProxy`` listens on 127.0.0.1 and forwards every connection to one target. The
test thread drives them through ``trio.from_thread`` (the hub's token), so a fault takes
effect before the call returns.

Faults, as a network would show them:

- ``cut()``: every proxied connection is reset (RST) and new ones are accepted then reset
  at once. Peers see a dead link immediately (ECONNRESET), as when a host's cable is pulled
  and its switch port answers with resets.
- ``stall()``: nothing is forwarded. Bytes stay queued (in the proxy and in the kernel's
  socket buffers) and new connections are accepted but not connected onward, so peers see
  silence and must time out, as in a partition that drops packets. On ``heal()`` the queued
  bytes are delivered late, as TCP retransmission delivers them once a partition heals, to
  whichever side has not given up meanwhile.
- ``heal()``: forward again.

Owns only sockets of the test process; never touches a broker or coordinator process.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

__all__ = ["LinkState", "ProxyHub", "TcpProxy"]

T = TypeVar("T")
RECEIVE_SIZE = 256 * 1024


class LinkState(enum.Enum):
    OPEN = "open"
    CUT = "cut"
    STALLED = "stalled"


def _reset(stream: trio.SocketStream | None) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN (no orderly goodbye)."""
    if stream is None:
        return
    sock = stream.socket
    if sock.fileno() != -1:
        # An error means the peer already shut it down: closing is all that is left.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@dataclass(eq=False)
class _Link:
    """One proxied connection: the accepted client side and, once connected, the target."""

    client: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    server: trio.SocketStream | None = None


class TcpProxy:
    """Forwards ``address`` (127.0.0.1, a free port) to ``target``. Create it with
    ``ProxyHub.open``; call its fault methods from any thread but the hub's."""

    def __init__(self, hub: ProxyHub, name: str, target: tuple[str, int]) -> None:
        self.hub = hub
        self.name = name
        self.target = target
        self.state = LinkState.OPEN
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.accepted = 0
        self.forwarded_bytes = 0
        self._links: set[_Link] = set()
        self._flowing: trio.Event  # set while not stalled; made on the hub's loop in serve()

    @property
    def port(self) -> int:
        return self.address[1]

    def __repr__(self) -> str:
        return f"<TcpProxy {self.name} :{self.port} -> {self.target[1]} {self.state.value}>"

    # --- faults (called from the test thread) ----------------------------------------

    def cut(self) -> None:
        self.hub.call(self._cut)

    def stall(self) -> None:
        self.hub.call(self._stall)

    def heal(self) -> None:
        self.hub.call(self._heal)

    async def _cut(self) -> None:
        self.state = LinkState.CUT
        self._release()  # stalled pumps wake up, find their scope cancelled and reset
        for link in list(self._links):
            link.scope.cancel()

    async def _stall(self) -> None:
        if self.state is LinkState.STALLED:
            return
        self.state = LinkState.STALLED
        self._flowing = trio.Event()

    async def _heal(self) -> None:
        self.state = LinkState.OPEN
        self._release()

    def _release(self) -> None:
        self._flowing.set()

    # --- forwarding (the hub's loop) --------------------------------------------------

    async def serve(self, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        self._flowing = trio.Event()
        self._flowing.set()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = listeners[0].socket.getsockname()[:2]
        task_status.started(self.address)
        await trio.serve_listeners(self._handle, listeners)

    def _is_cut(self) -> bool:
        return self.state is LinkState.CUT

    async def _wait_flowing(self) -> None:
        while self.state is LinkState.STALLED:
            await self._flowing.wait()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        link = _Link(client)
        self._links.add(link)
        try:
            with link.scope:
                if self._is_cut():
                    return
                await self._wait_flowing()
                if self._is_cut():  # cut while stalled
                    return
                try:
                    link.server = await trio.open_tcp_stream(*self.target)
                except OSError:
                    return  # the target is down: the client sees its connection reset
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link, client, link.server)
                    nursery.start_soon(self._pump, link, link.server, client)
        finally:
            self._links.discard(link)
            _reset(link.server)
            _reset(client)

    async def _pump(self, link: _Link, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        """Copy src to dst until src's EOF (then half-close dst); any failure or a cut
        resets the whole link."""
        try:
            while True:
                await self._wait_flowing()
                data = await src.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                await self._wait_flowing()  # bytes read just before a stall wait too
                await dst.send_all(data)
                self.forwarded_bytes += len(data)
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            link.scope.cancel()


class ProxyHub:
    """A trio loop on a daemon thread hosting proxies. ``close()`` resets every link."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.proxies: list[TcpProxy] = []
        self._thread = threading.Thread(target=self._run, name="fault-proxies", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the constructor or on close
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await trio.sleep_forever()

    @property
    def running(self) -> bool:
        return self._token is not None

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._token is None:
            raise RuntimeError("the proxy hub is not running")
        return trio.from_thread.run(fn, trio_token=self._token)

    def open(self, name: str, target: tuple[str, int]) -> TcpProxy:
        """A new proxy to ``target``, listening once this returns."""
        proxy = TcpProxy(self, name, target)

        async def start() -> None:
            assert self._nursery is not None
            await self._nursery.start(proxy.serve)

        self.call(start)
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        if self._token is None or not self._thread.is_alive():
            return

        async def stop() -> None:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()

        self.call(stop)
        self._thread.join(10)
        self._token = None
        if self._error is not None:
            raise self._error
