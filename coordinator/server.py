"""The standalone coordinator server: sockets and time around the sans-IO ``Engine``.

Tasks: one read loop and one write loop per connection, one request processor (the only
caller of ``Engine.process``, so requests are handled in one global order, and txns that
queue up while the previous group is being fsynced become the next group), and one
session-expiry timer. Pings are answered by the connection itself so a slow fsync never
starves them. A malformed frame closes only its own connection.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from coordinator.config import CoordinatorConfig
from coordinator.consensus.host import EnsembleEngine
from coordinator.consensus.writes import DiskJob
from coordinator.engine import Close, Connect, Engine, Expire, Output, Request
from coordinator.fourletter import ServerCounters, answer
from coordinator.probe import MemberProbe
from proto.errors import RemoteProtocolError
from proto.framing import FrameDecoder
from proto.zk import (
    ConnectRequest,
    FourLetterWord,
    OpCode,
    RequestEvent,
    ServerProtocol,
)
from proto.zk_peer import PeerHello, PeerMessage, decode_peer_message, encode_peer_frame

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
        self.queue_send, self.queue_recv = trio.open_memory_channel[Any](math.inf)
        self.probe: MemberProbe | None = None

    # --- the processor ----------------------------------------------------------------

    async def process_loop(self) -> None:
        async for first in self.queue_recv:
            if self.probe is not None and self.probe.paused:
                await self.probe.wait_resumed()
            batch = [first]
            while True:
                try:
                    batch.append(self.queue_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            # A connection that closed before its Connect was handled gets no session:
            # nobody would own it, and the engine would remember a dead connection.
            batch = [i for i in batch if not isinstance(i, Connect) or i.conn_id in self.conns]
            # Inline disk I/O: one fsync per group; see docs/coordinator.md on why.
            outputs = self.run_batch(batch)
            self.deliver(outputs)
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

    def run_batch(self, batch: list[Any]) -> list[Output]:
        return self.engine.process(batch, now_ms=_now_ms(), wall_ms=_wall_ms())

    def deliver(self, outputs: list[Output]) -> None:
        # A connection's frames of one batch go to its writer as one chunk (one channel
        # operation, not one per reply), in order, and before a Close.
        chunks: dict[int, list[bytes]] = {}
        for out in outputs:
            if isinstance(out, Close):
                conn = self.conns.get(out.conn_id)
                if conn is None:
                    continue
                frames = chunks.pop(out.conn_id, None)
                if frames:
                    self.counters.packets_sent += len(frames)
                    conn.outbound.send_nowait(b"".join(frames))
                conn.log.info("connection_closing", reason=out.reason)
                conn.outbound.send_nowait(None)
            else:
                frames = chunks.get(out.conn_id)
                if frames is None:
                    chunks[out.conn_id] = [out.frame]
                else:
                    frames.append(out.frame)
        for conn_id, frames in chunks.items():
            conn = self.conns.get(conn_id)
            if conn is not None:
                self.counters.packets_sent += len(frames)
                conn.outbound.send_nowait(b"".join(frames))

    def answer_word(self, word: str) -> str:
        return answer(word, self.engine, self.counters)

    async def expiry_loop(self) -> None:
        tick = self.config.tick_time_ms
        while True:
            now = _now_ms()
            deadline = self.engine.sessions.next_deadline_ms()
            # A disconnect can bring a deadline forward while we sleep: look again often.
            step = min(tick, max(50, self.config.session_disconnect_grace_ms // 4 or tick))
            wake = now + step if deadline is None else min(deadline, now + step)
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
            self.engine.connection_closed(conn_id, _now_ms())
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
                        text = self.answer_word(event.word)
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
            if self.probe is not None:
                self.probe.connect_queued()
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
    peer_listeners: list[trio.SocketListener] | None = None,
    probe: MemberProbe | None = None,
) -> None:
    """Recover from ``config.data_dir``, listen, report ``(host, port)``, serve until
    cancelled. With ``config.peers`` it runs as an ensemble member (``peer_listeners``:
    already bound peer listeners, for tests on port 0; ``probe``: test hooks, see
    ``coordinator.probe``)."""
    log = structlog.get_logger("coordinator").bind(coordinator_id=config.id)
    if config.ensemble:
        await _serve_ensemble(config, log, task_status, peer_listeners, probe)
        return
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


# --- the ensemble member ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass(frozen=True, slots=True)
class _Persisted:
    """The writer thread made these jobs durable."""

    jobs: list[DiskJob]


class _MemberServer(_Server):
    """An ensemble member: the client side as standalone, plus peer links and ticks.

    Peer links: each member dials every other one and sends its own messages over that
    connection (so a pair shares two one-way connections); what arrives on accepted
    connections goes into the same queue as client requests, so one task drives the
    ``EnsembleEngine``. A message for a peer that is not connected is dropped: Raft
    retransmits.

    Log writes run in a writer thread (``disk_loop``), one group at a time with one fsync,
    while the processor goes on receiving, replicating and answering; what queues up
    meanwhile is the next group. Acks wait in the engine until their entries are durable.
    """

    engine: EnsembleEngine

    def __init__(self, config: CoordinatorConfig, engine: EnsembleEngine, log: Any) -> None:
        super().__init__(config, engine, log)
        self.peer_send: dict[int, trio.MemorySendChannel[bytes]] = {}
        self.peer_recv: dict[int, trio.MemoryReceiveChannel[bytes]] = {}
        self.peer_connected: dict[int, bool] = {}
        for p in config.peers:
            if p != config.id:
                self.peer_send[p], self.peer_recv[p] = trio.open_memory_channel[bytes](math.inf)
                self.peer_connected[p] = False
        self._last_state = ""
        self.disk_wake_send, self.disk_wake_recv = trio.open_memory_channel[None](1)
        engine.async_disk = True

    def run_batch(self, batch: list[Any]) -> list[Output]:
        engine = self.engine
        now, wall = _now_ms(), _wall_ms()
        out: list[Output] = []
        clients: list[Any] = []  # consecutive client items: one engine.process call
        for item in batch:
            if isinstance(item, Request | Connect | Expire):
                clients.append(item)
                continue
            if clients:
                out += engine.process(clients, now_ms=now, wall_ms=wall)
                clients = []
            if isinstance(item, PeerMessage):
                engine.peer(item, now, wall, out)
            elif isinstance(item, _Persisted):
                engine.writes.finished()
                engine.persisted(item.jobs)
            elif isinstance(item, _Tick):
                engine.tick(now, wall, out)
                out += engine.process(engine.expired(now), now_ms=now, wall_ms=wall)
        if clients:
            out += engine.process(clients, now_ms=now, wall_ms=wall)
        peer_out = engine.flush(now, wall, out)
        if engine.writes.waiting and not engine.writes.running:
            with contextlib.suppress(trio.WouldBlock):  # else the writer is woken already
                self.disk_wake_send.send_nowait(None)
        for msg in peer_out:
            if self.peer_connected.get(msg.dst):
                self.peer_send[msg.dst].send_nowait(
                    encode_peer_frame(msg, self.config.max_frame_bytes)
                )
        state = f"{engine.state}:{engine.node.leader_id}:{engine.node.term}"
        if state != self._last_state:
            self._last_state = state
            self.log.info(
                "ensemble_state",
                state=engine.state,
                leader=engine.node.leader_id,
                term=engine.node.term,
                last_zxid=f"{engine.tree.last_zxid:#x}",
            )
            if self.probe is not None:
                self.probe.report_state(engine.state, engine.node.leader_id, engine.node.term)
        return out

    def answer_word(self, word: str) -> str:
        text = answer(word, self.engine, self.counters)
        state = self.engine.state
        if word == "mntr":
            followers, synced = self.engine.synced_followers(_now_ms())
            text = text.replace("zk_server_state\tstandalone", f"zk_server_state\t{state}")
            if state == "leader":
                text += f"zk_followers\t{followers}\nzk_synced_followers\t{synced}\n"
        elif word in ("srvr", "stat"):
            text = text.replace("Mode: standalone", f"Mode: {state}")
        return text

    async def disk_loop(self) -> None:
        """The writer: one group of log writes at a time, in a thread, so the event loop
        never waits on a disk."""
        writes = self.engine.writes
        async for _ in self.disk_wake_recv:
            jobs = writes.take()
            if jobs:
                await trio.to_thread.run_sync(self.engine.disk.run, jobs)
                self.queue_send.send_nowait(_Persisted(jobs))

    async def tick_loop(self) -> None:
        interval = max(self.config.heartbeat_interval_ms // 4, 1) / 1000
        while True:
            await trio.sleep(interval)
            self.queue_send.send_nowait(_Tick())

    async def expiry_loop(self) -> None:
        await trio.sleep_forever()  # expiry runs on ticks, on the leader only

    async def dial(self, peer: int) -> None:
        host, port = self.config.peers[peer]
        recv = self.peer_recv[peer]
        log = self.log.bind(peer=peer)
        hello = PeerMessage(
            self.config.id, peer, PeerHello(self.config.id, list(self.config.peers))
        )
        backoff = 0.05
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            try:
                await stream.send_all(encode_peer_frame(hello, self.config.max_frame_bytes))
                while True:  # drop what queued up while we were not connected
                    try:
                        recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                self.peer_connected[peer] = True
                log.info("peer_connected")
                async for frame in recv:
                    chunks = [frame]
                    while True:
                        try:
                            chunks.append(recv.receive_nowait())
                        except trio.WouldBlock:
                            break
                    await stream.send_all(b"".join(chunks))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.info("peer_disconnected", error=str(exc))
            finally:
                self.peer_connected[peer] = False
                await trio.aclose_forcefully(stream)
            await trio.sleep(backoff)

    async def handle_peer(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(self.config.max_frame_bytes)
        peer: int | None = None
        try:
            while data := await stream.receive_some(READ_SIZE):
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not None:
                    msg = decode_peer_message(frame)
                    if peer is None:
                        hello = msg.body
                        if (
                            not isinstance(hello, PeerHello)
                            or hello.node_id not in self.config.peers
                        ):
                            self.log.warning("peer_refused", hello=repr(hello))
                            return
                        if sorted(hello.members) != sorted(self.config.peers):
                            self.log.warning("peer_members_differ", peer=hello.node_id)
                            return
                        peer = hello.node_id
                        continue
                    if msg.src == peer and msg.dst == self.config.id:
                        self.queue_send.send_nowait(msg)
        except RemoteProtocolError as exc:
            self.log.warning("malformed_peer_frame", peer=peer, error=str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def _serve_ensemble(
    config: CoordinatorConfig,
    log: Any,
    task_status: trio.TaskStatus[tuple[str, int]],
    peer_listeners: list[trio.SocketListener] | None,
    probe: MemberProbe | None,
) -> None:
    size = len(config.peers)
    if size % 2 == 0:
        log.warning(
            "even_ensemble_size",
            size=size,
            why=f"a majority of {size} is {size // 2 + 1}: it tolerates no more failures "
            f"than {size - 1} members would, and needs one more to agree on every write",
        )
    rng = random.Random(config.id * 1_000_003 + _wall_ms())
    engine = EnsembleEngine(config, now_ms=_now_ms(), wall_ms=_wall_ms(), rng=rng)
    try:
        server = _MemberServer(config, engine, log)
        server.probe = probe
        if peer_listeners is None:
            peer_listeners = await trio.open_tcp_listeners(config.peer_port, host=config.peer_host)
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        host, port = listeners[0].socket.getsockname()[:2]
        log.info(
            "coordinator_started",
            host=host,
            port=port,
            peer_port=peer_listeners[0].socket.getsockname()[1],
            members=sorted(config.peers),
            snapshot_index=engine.recovery.snapshot_zxid,
            log_entries=engine.recovery.replayed,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.process_loop)
            nursery.start_soon(server.tick_loop)
            nursery.start_soon(server.disk_loop)
            for p in server.peer_send:
                nursery.start_soon(server.dial, p)
            await nursery.start(trio.serve_listeners, server.handle_peer, peer_listeners)
            await nursery.start(trio.serve_listeners, server.handle, listeners)
            task_status.started((host, port))
    finally:
        engine.close()
        log.info("coordinator_stopped")
