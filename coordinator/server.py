"""The standalone coordinator server: sockets and time around the sans-IO ``Engine``.

Tasks: one read loop and one write loop per connection, one request processor (the only
caller of ``Engine.process``, so requests are handled in one global order, and txns that
queue up while the previous group is being fsynced become the next group), and one
session-expiry timer. Pings are answered by the connection itself so a slow fsync never
starves them. A malformed frame closes only its own connection.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from coordinator.config import CoordinatorConfig
from coordinator.engine import Close, Connect, Engine, Expire, Request
from coordinator.fourletter import ServerCounters, answer
from proto.errors import RemoteProtocolError
from proto.zk import (
    ConnectRequest,
    FourLetterWord,
    OpCode,
    RequestEvent,
    ServerProtocol,
)

__all__ = ["CoordinatorConfig", "serve"]

READ_SIZE = 65536


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Conn:
    conn_id: int
    outbound: trio.MemorySendChannel[bytes | None]
    log: Any


class _Server:
    def __init__(self, config: CoordinatorConfig, engine: Engine, log: Any) -> None:
        self.config = config
        self.engine = engine
        self.log = log
        self.conns: dict[int, _Conn] = {}
        self.counters = ServerCounters()
        self._ids = itertools.count(1)
        self.queue_send, self.queue_recv = trio.open_memory_channel[Connect | Request | Expire](
            math.inf
        )

    # --- the processor ----------------------------------------------------------------

    async def process_loop(self) -> None:
        async for first in self.queue_recv:
            batch = [first]
            while True:
                try:
                    batch.append(self.queue_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            # Inline disk I/O: one fsync per group; see docs/coordinator.md on why.
            outputs = self.engine.process(batch, now_ms=_now_ms(), wall_ms=_wall_ms())
            for out in outputs:
                conn = self.conns.get(out.conn_id)
                if conn is None:
                    continue
                if isinstance(out, Close):
                    conn.log.info("connection_closing", reason=out.reason)
                    conn.outbound.send_nowait(None)
                else:
                    self.counters.packets_sent += 1
                    conn.outbound.send_nowait(out.frame)
            for item in batch:
                if isinstance(item, Connect) and item.conn_id in self.conns:
                    sid = self.engine.session_of(item.conn_id)
                    if sid is not None:
                        conn = self.conns[item.conn_id]
                        conn.log = conn.log.bind(session_id=f"{sid:#x}")
                        conn.log.info("session_established")
                elif isinstance(item, Expire):
                    self.log.info("session_expired", session_id=f"{item.session_id:#x}")
            await trio.lowlevel.checkpoint()

    async def expiry_loop(self) -> None:
        tick = self.config.tick_time_ms
        while True:
            now = _now_ms()
            deadline = self.engine.sessions.next_deadline_ms()
            wake = now + tick if deadline is None else min(deadline, now + tick)
            await trio.sleep_until(wake / 1000)
            for item in self.engine.expired(_now_ms()):
                self.queue_send.send_nowait(item)

    # --- connections ------------------------------------------------------------------

    async def handle(self, stream: trio.SocketStream) -> None:
        conn_id = next(self._ids)
        send, recv = trio.open_memory_channel[bytes | None](math.inf)
        conn = _Conn(conn_id, send, self.log.bind(conn_id=conn_id))
        self.conns[conn_id] = conn
        self.counters.alive_connections += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, stream, recv, nursery.cancel_scope)
                await self._read_loop(conn, stream)
                nursery.cancel_scope.cancel()
        finally:
            del self.conns[conn_id]
            self.counters.alive_connections -= 1
            self.engine.connection_closed(conn_id)
            await trio.aclose_forcefully(stream)
            conn.log.debug("connection_closed")

    async def _write_loop(
        self,
        stream: trio.SocketStream,
        recv: trio.MemoryReceiveChannel[bytes | None],
        scope: trio.CancelScope,
    ) -> None:
        try:
            async for frame in recv:
                if frame is None:
                    break
                chunks = [frame]
                closing = False
                while True:
                    try:
                        more = recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if more is None:
                        closing = True
                        break
                    chunks.append(more)
                await stream.send_all(b"".join(chunks))
                if closing:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away; the read loop sees it too
        scope.cancel()

    async def _read_loop(self, conn: _Conn, stream: trio.SocketStream) -> None:
        proto = ServerProtocol(self.config.max_frame_bytes)
        while True:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            try:
                proto.receive_data(data)
                while (event := proto.next_event()) is not None:
                    if isinstance(event, FourLetterWord):
                        text = answer(event.word, self.engine, self.counters)
                        await stream.send_all(text.encode())
                        return
                    self._on_event(conn, event)
            except RemoteProtocolError as exc:
                conn.log.warning("malformed_frame", error=str(exc))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return

    def _on_event(self, conn: _Conn, event: ConnectRequest | RequestEvent) -> None:
        self.counters.packets_received += 1
        if isinstance(event, ConnectRequest):
            self.queue_send.send_nowait(Connect(conn.conn_id, event))
            return
        now = _now_ms()
        self.engine.touch(conn.conn_id, now)
        if event.opcode == OpCode.PING:
            if self.engine.session_of(conn.conn_id) is not None:
                self.counters.packets_sent += 1
                conn.outbound.send_nowait(self.engine.ping_reply())
            return
        self.queue_send.send_nowait(Request(conn.conn_id, event.xid, event.body, now))


async def serve(
    config: CoordinatorConfig,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Recover from ``config.data_dir``, listen, report ``(host, port)``, serve until
    cancelled."""
    log = structlog.get_logger("coordinator").bind(coordinator_id=config.id)
    engine = Engine(config, now_ms=_now_ms(), wall_ms=_wall_ms())
    try:
        server = _Server(config, engine, log)
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        host, port = listeners[0].socket.getsockname()[:2]
        log.info(
            "coordinator_started",
            host=host,
            port=port,
            last_zxid=f"{engine.tree.last_zxid:#x}",
            snapshot_zxid=f"{engine.recovery.snapshot_zxid:#x}",
            replayed_txns=engine.recovery.replayed,
            sessions=len(engine.tree.sessions),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.process_loop)
            nursery.start_soon(server.expiry_loop)
            await nursery.start(trio.serve_listeners, server.handle, listeners)
            task_status.started((host, port))
    finally:
        engine.close()
        log.info("coordinator_stopped")
