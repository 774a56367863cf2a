"""The client's connection to one coordinator member: pending requests, batched writes.

``_Connection`` owns one stream and the sans-IO ``ClientProtocol``; requests queue their
frames in ``outbox`` and one writer task sends whatever is queued in a single syscall.
Used only by ``coordinator.client``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trio

from coordinator.client_types import Watcher
from coordinator.config import DEFAULT_PORT
from proto.errors import ConnectionLossError
from proto.zk import ClientProtocol, Reply

READ_SIZE = 65536
MAX_BACKOFF_S = 1.0


def parse_hosts(hosts: str) -> list[tuple[str, int]]:
    out = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        out.append((host, int(port)) if host else (item, DEFAULT_PORT))
    if not out:
        raise ValueError(f"no hosts in {hosts!r}")
    return out


@dataclass(slots=True)
class _Pending:
    watch: Watcher | None = None
    watch_kind: str = ""
    path: str = ""
    done: trio.Event = field(default_factory=trio.Event)
    reply: Reply | None = None
    error: BaseException | None = None
    # trio time after which the connection's reaper fails it (0: the caller has its own
    # timeout scope)
    deadline: float = 0.0


@dataclass(slots=True)
class _Connection:
    stream: trio.SocketStream
    proto: ClientProtocol
    read_timeout_s: float
    ping_interval_s: float
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    pending: dict[int, _Pending] = field(default_factory=dict)
    last_send: float = 0.0
    failure: BaseException | None = None
    # Frames queued by ``send_soon``: the writer sends all that queued up in one
    # scheduling round with one syscall (32 requests in flight: one send, not 32).
    outbox: list[bytes] = field(default_factory=list)
    outbox_ready: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    # The reaper: asleep in ``reaper_lot`` while no request has a deadline.
    reaper_lot: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    reaper_armed: bool = False

    async def send(self, frame: bytes) -> None:
        async with self.send_lock:
            self.last_send = trio.current_time()
            await self.stream.send_all(frame)

    def reaper_wake(self) -> None:
        """A request with a deadline was added: make sure the reaper is asleep until at
        most the first deadline (they only grow, so this is rarely needed)."""
        if not self.reaper_armed:
            self.reaper_armed = True
            self.reaper_lot.unpark()

    async def reap_loop(self, timeout_ms: int) -> None:
        """Fail requests whose deadline passed (``ConnectionLossError``, as a request
        timeout). Deadlines only grow, so it sleeps until the first one."""
        while True:
            now = trio.current_time()
            first = math.inf
            for xid, pending in list(self.pending.items()):
                if not pending.deadline:
                    continue
                if pending.deadline <= now:
                    del self.pending[xid]
                    pending.error = ConnectionLossError(f"no reply within {timeout_ms} ms")
                    pending.done.set()
                else:
                    first = min(first, pending.deadline)
            if first == math.inf:
                self.reaper_armed = False
                await self.reaper_lot.park()
                continue
            self.reaper_armed = True
            await trio.sleep_until(first)

    def send_soon(self, frame: bytes) -> None:
        """Queue ``frame`` for the writer. If the connection fails first, the frame is
        never sent: its request fails with the connection (it is pending already)."""
        self.outbox.append(frame)
        self.outbox_ready.unpark()

    async def write_loop(self) -> None:
        while True:
            if not self.outbox:
                await self.outbox_ready.park()
                continue
            data = b"".join(self.outbox)
            self.outbox.clear()
            await self.send(data)
