"""An ensemble member's request processor: the ``Engine`` around a ``RaftNode``. Sans-IO
(time and randomness are inputs). Disk I/O is inline by default, as in the standalone
engine; with ``async_disk`` (the server) only ``raft.state`` is written inline, and log
writes and snapshots queue up in ``writes`` for a writer thread, which reports them back
through ``persisted`` (see ``writes.py`` and "Asynchronous log writes" in ``node.py``).

Reads are answered from the local, committed tree (sequential consistency). A write, a
sync or a new session goes to the leader: directly on the leader, as a ``ForwardRequest``
from a follower. The leader's ``Proposer`` (``proposer.py``) prepares and proposes it and
answers with the entry's (index, term). The member that holds the
client connection replies once it has applied that index itself, building the reply from
its own apply: so the client can read its write at once, and on every connection a
watch notification still precedes the reply to any later read. Errors and syncs carry the
index the member must have applied first (the leader's last index, or its confirmed commit
index for a sync), which is what makes ``sync`` a read barrier.

Sessions: every member reports the sessions it hears from to the leader
(``SessionTouch``); only the leader expires sessions, and a new leader starts every
session's timeout afresh. A client reconnecting with a session is *revalidated* by the
leader, as in ZooKeeper: the member forwards ``REVALIDATE_SESSION``, the leader alone
decides alive (touching the session) or expired and answers like a sync (once confirmed
as leader, with its commit index); the member answers the client once it has applied
that far, so it knows the session (even one created on the
leader a moment ago) and has caught up with whatever the client saw before. When the
leader changes, every client connection with a request in flight is closed (its request
fails with ConnectionLoss, as in ZooKeeper) and the client reconnects with its session.
"""

from __future__ import annotations

import random
import secrets
from typing import Any

from coordinator.config import CoordinatorConfig
from coordinator.consensus.disk import RaftDisk
from coordinator.consensus.node import RaftNode, Ready, Role
from coordinator.consensus.proposer import (
    CLOSE_SESSION_EXPIRED,
    CREATE_SESSION,
    REVALIDATE_SESSION,
    Proposer,
)
from coordinator.consensus.waiters import Reconnect, Waiter
from coordinator.consensus.writes import DiskJob, WriteQueue
from coordinator.engine import NOT_LOCAL, Close, Connect, Engine, Expire, Output, Request, Send
from coordinator.prepare import MultiAborted, validate_path
from coordinator.sessions import SessionTracker, first_session_id
from coordinator.snapshot import RecoveryInfo
from coordinator.tree import DataTree
from coordinator.txn import (
    CloseSessionTxn,
    CreateSessionTxn,
    decode_txn,
)
from coordinator.watches import WatchManager
from proto.codec import packb, to_wire, unpackb
from proto.errors import BrokerResponseError
from proto.zk import (
    OPCODE_OF,
    PROTOCOL_VERSION,
    CloseSessionRequest,
    ConnectRequest,
    ConnectResponse,
    MultiRequest,
    OpCode,
    SyncRequest,
    SyncResponse,
)
from proto.zk_peer import ForwardRequest, ForwardResponse, PeerMessage, SessionTouch

__all__ = ["CREATE_SESSION", "REVALIDATE_SESSION", "EnsembleEngine"]


class EnsembleEngine(Engine):
    __slots__ = (
        "_awaiting",
        "_barriers",
        "_fwd",
        "_live",
        "_next_ctx",
        "_next_fwd",
        "_next_snapshot",
        "_parked",
        "_peer_out",
        "_proposer",
        "_reads",
        "_rng",
        "_seen_leader",
        "_snapshotting",
        "_touched",
        "_unplugged",
        "async_disk",
        "disk",
        "node",
        "writes",
    )

    def __init__(
        self, config: CoordinatorConfig, *, now_ms: int, wall_ms: int, rng: random.Random
    ) -> None:
        self.config = config
        self.disk = RaftDisk(config.data_dir, force_sync=config.force_sync)
        hs, snap, entries = self.disk.load()
        self.tree = DataTree() if snap is None else DataTree.from_snapshot(unpackb(snap.data))
        self.recovery = RecoveryInfo(0 if snap is None else snap.index, len(entries))
        self.node = RaftNode(
            config.id,
            list(config.peers),
            rng=rng,
            now_ms=now_ms,
            hard_state=hs,
            snapshot=snap,
            entries=entries,
            election_timeout_ms=config.election_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
        )
        self._epoch = 0
        self._counter = 0
        self.sessions = SessionTracker(config.min_timeout_ms, config.max_timeout_ms)
        self._next_session_id = first_session_id(config.id, wall_ms)
        self.watches = WatchManager()
        self._conn_session: dict[int, int] = {}
        self._session_conn: dict[int, int] = {}
        from coordinator.engine import LatencyStats

        self.latency = LatencyStats()
        self.storage = None  # type: ignore[assignment]
        self._proposer: Proposer | None = None  # while leading
        self._awaiting: dict[int, list[Waiter]] = {}  # index -> waiters
        self._barriers: list[tuple[int, Waiter]] = []  # (index, waiter): reply once applied
        self._fwd: dict[int, Waiter] = {}  # follower: fwd_id -> waiter
        self._next_fwd = 1
        # Leader: ReadIndex ctx -> (src, fwd_id, error code to answer once confirmed).
        self._reads: dict[int, tuple[int, int, int]] = {}
        self._next_ctx = 1
        self._parked: list[tuple[int, int, Any]] = []  # (sid, opcode, (waiter, wire))
        self._peer_out: list[PeerMessage] = []
        self._touched: set[int] = set()
        self._unplugged: set[int] = set()  # sessions whose client dropped its connection here
        # Connections whose Connect we handled and that are still open: a session created
        # or revalidated for a connection that closed meanwhile is not bound to it.
        self._live: set[int] = set()
        self._seen_leader: tuple[Role, int | None, int] = (Role.FOLLOWER, None, hs.term)
        self.async_disk = False
        self.writes = WriteQueue()
        self._rng = rng
        self._snapshotting = False  # a snapshot of ours is being written
        self._next_snapshot = self.node.log.snap_index + self._snapshot_gap()

    # --- queries ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return "leader" if self.node.is_leader else "follower"

    def synced_followers(self, now_ms: int) -> tuple[int, int]:
        """Leader: (followers, followers caught up with the commit index and heard from
        within an election timeout)."""
        if not self.node.is_leader:
            return 0, 0
        prog = self.node.progress()
        recent = now_ms - self.config.election_timeout_ms
        synced = sum(
            1 for m, heard in prog.values() if m >= self.node.commit_index and heard > recent
        )
        return len(prog), synced

    # --- inputs -------------------------------------------------------------------------

    def touch(self, conn_id: int, now_ms: int) -> None:
        sid = self._conn_session.get(conn_id)
        if sid is not None:
            self._touch_session(sid, now_ms)

    def connection_closed(self, conn_id: int, now_ms: int | None = None) -> None:
        self._live.discard(conn_id)
        super().connection_closed(conn_id, now_ms)

    def _disconnected(self, sid: int, now_ms: int) -> None:
        # Reported to the leader, which alone expires sessions; a touch queued before the
        # close is dropped, or it would claim the client is still here.
        self._touched.discard(sid)
        if self.node.is_leader:
            grace = self.config.session_disconnect_grace_ms
            self.sessions.disconnected(sid, now_ms, grace, self.config.id)
        else:
            self._unplugged.add(sid)

    def _touch_session(self, sid: int, now_ms: int) -> None:
        self._unplugged.discard(sid)
        if self.node.is_leader:
            self.sessions.touch(sid, now_ms, self.config.id)
        else:
            self._touched.add(sid)

    def tick(self, now_ms: int, wall_ms: int, out: list[Output]) -> None:
        self.node.tick(now_ms)
        self._check_leader(now_ms, wall_ms, out)
        leader = self.node.leader_id
        # A session bound here again since its old connection closed is not unplugged.
        self._unplugged.difference_update(self._session_conn)
        if (self._touched or self._unplugged) and leader not in (None, self.config.id):
            touched, self._touched = sorted(self._touched), set()
            unplugged, self._unplugged = sorted(self._unplugged), set()
            touch = SessionTouch(touched, unplugged)
            self._peer_out.append(PeerMessage(self.config.id, leader, touch))

    def expired(self, now_ms: int) -> list[Expire]:
        if not self.node.is_leader:
            return []
        return [Expire(sid) for sid in self.sessions.expired(now_ms)]

    def peer(self, msg: PeerMessage, now_ms: int, wall_ms: int, out: list[Output]) -> None:
        body = msg.body
        if isinstance(body, ForwardRequest):
            self._on_forward(msg.src, body, wall_ms)
        elif isinstance(body, ForwardResponse):
            waiter = self._fwd.pop(body.fwd_id, None)
            if waiter is not None:
                self._on_outcome(waiter, body.index, body.term, body.error_code, body.abort_index)
        elif isinstance(body, SessionTouch):
            if self.node.is_leader:
                for sid in body.session_ids:
                    self.sessions.touch(sid, now_ms, msg.src)
                grace = self.config.session_disconnect_grace_ms
                for sid in body.disconnected:
                    self.sessions.disconnected(sid, now_ms, grace, msg.src)
        else:
            self.node.step(msg)
            self._check_leader(now_ms, wall_ms, out)

    def process(self, batch: Any, *, now_ms: int, wall_ms: int) -> list[Output]:
        out: list[Output] = []
        for item in batch:
            if isinstance(item, Request):
                self._client_request(item, out, now_ms, wall_ms)
                self.latency.record(now_ms - item.arrived_ms)
            elif isinstance(item, Connect):
                self._client_connect(item, out, now_ms, wall_ms)
            elif isinstance(item, Expire) and self._proposer is not None:
                self._submit_local(item.session_id, CLOSE_SESSION_EXPIRED, None, None, wall_ms)
        return out

    def flush(self, now_ms: int, wall_ms: int, out: list[Output]) -> list[PeerMessage]:
        """Drive the node: persist, send, apply every Ready. Returns peer messages."""
        node = self.node
        writes = self.writes
        while node.has_ready():
            rd = node.ready()
            if self.async_disk:
                if rd.hard_state is not None:
                    self.disk.save_hard_state(rd.hard_state)  # before any message: votes
                if rd.entries or rd.snapshot is not None:
                    writes.add(DiskJob(rd.entries, rd.snapshot))
                self._peer_out.extend(m for m in rd.messages if not writes.gate(m))
            else:
                self.disk.save(rd)
                self._peer_out.extend(rd.messages)
            self._apply(rd, now_ms, out)
            node.advance(rd, entries_persisted=not self.async_disk)
            self._maybe_snapshot()
            self._check_leader(now_ms, wall_ms, out)
        self._check_leader(now_ms, wall_ms, out)
        self._release_barriers(out)  # those already applied need no new Ready
        peer_out, self._peer_out = self._peer_out, []
        return peer_out

    def persisted(self, jobs: list[DiskJob]) -> None:
        """The writer made ``jobs`` (from ``writes.take()``) durable; ``flush`` next."""
        for job in jobs:
            if job.entries:
                last = job.entries[-1]
                self.node.persisted(last.index, last.term)
            if job.compacted is not None:
                self.node.compact(job.compacted.index, job.compacted.data)
                self._snapshotting = False
            self._peer_out.extend(job.after)

    def close(self) -> None:
        self.disk.close()

    # --- client side --------------------------------------------------------------------

    def _client_connect(self, item: Connect, out: list[Output], now_ms: int, wall_ms: int) -> None:
        req = item.request
        self._live.add(item.conn_id)
        if req.session_id == 0:
            if req.last_zxid_seen > self.tree.last_zxid:
                out.append(Close(item.conn_id, "client_zxid_ahead"))
                return
            timeout_ms = self.sessions.negotiate(req.timeout_ms)
            sid = self._new_session_id()
            password = secrets.token_bytes(16)
            response = ConnectResponse(PROTOCOL_VERSION, timeout_ms, sid, password)
            waiter = Waiter(item.conn_id, 0, response)
            self._route(waiter, sid, CREATE_SESSION, [timeout_ms, password], out, wall_ms)
            return
        # A session may be committed but not applied here yet, or expiring on the leader
        # but not closed here yet: only the leader's answer decides (ZooKeeper's revalidate).
        waiter = Waiter(item.conn_id, 0, Reconnect(req))
        self._route(waiter, req.session_id, REVALIDATE_SESSION, req.password, out, wall_ms)

    def _finish_reconnect(self, w: Waiter, out: list[Output]) -> None:
        """The leader answered and we applied up to its index: resume, or refuse."""
        if w.conn_id not in self._live:
            return  # the client went away meanwhile
        req: ConnectRequest = w.body.request
        sid = req.session_id
        record = self.tree.sessions.get(sid)
        if (
            w.error_code
            or record is None
            or not secrets.compare_digest(record.password, req.password)
        ):
            expired = ConnectResponse(PROTOCOL_VERSION, 0, 0, b"")
            out.append(Send(w.conn_id, self._connect_frame(expired)))
            out.append(Close(w.conn_id, "session_expired"))
            self._live.discard(w.conn_id)
            return
        if req.last_zxid_seen > self.tree.last_zxid:
            # Even caught up with the leader we asked, we are behind what the client saw
            # (it saw a newer leader): refuse, so it tries another member.
            out.append(Close(w.conn_id, "client_zxid_ahead"))
            self._live.discard(w.conn_id)
            return
        self._touch_session(sid, self.node.now_ms)
        self._bind(w.conn_id, sid, out)
        response = ConnectResponse(PROTOCOL_VERSION, record.timeout_ms, sid, record.password)
        out.append(Send(w.conn_id, self._connect_frame(response)))

    def _bind(self, conn_id: int, sid: int, out: list[Output]) -> None:
        if conn_id not in self._live:
            return  # closed while its session was being created: nothing to remember
        old = self._session_conn.get(sid)
        if old is not None and old != conn_id:
            self.connection_closed(old)
            out.append(Close(old, "session_moved"))
        self._conn_session[conn_id] = sid
        self._session_conn[sid] = conn_id

    def _client_request(self, item: Request, out: list[Output], now_ms: int, wall_ms: int) -> None:
        sid = self._conn_session.get(item.conn_id)
        if sid is None:
            out.append(Close(item.conn_id, "request_before_connect"))
            return
        body = item.body
        try:
            local = self.answer_local(item.conn_id, body, out)
            if isinstance(body, SyncRequest):
                validate_path(body.path)
        except BrokerResponseError as exc:
            out.append(Send(item.conn_id, self._frame(item.xid, exc.code, None)))
            return
        if local is not NOT_LOCAL:
            out.append(Send(item.conn_id, self._frame(item.xid, 0, local)))
            return
        opcode = OpCode.SYNC if isinstance(body, SyncRequest) else _opcode(body)
        waiter = Waiter(item.conn_id, item.xid, body)
        proposer = self._proposer
        if proposer is not None and opcode != OpCode.SYNC and self.node.is_leader:
            # The leader's own client: no wire round trip (``_route`` would encode it).
            o = proposer.propose(sid, opcode, None, wall_ms, body=body)
            self._on_outcome(waiter, o.index, o.term, o.error_code, o.abort_index)
            return
        self._route(waiter, sid, opcode, to_wire(body), out, wall_ms)

    def _route(
        self, waiter: Waiter, sid: int, opcode: int, wire: Any, out: list[Output], wall_ms: int
    ) -> None:
        """Send a write/sync/new session to the leader (ourselves, or by forwarding)."""
        node = self.node
        if node.is_leader and self._proposer is not None:
            self._submit_local(sid, opcode, wire, waiter, wall_ms)
            return
        leader = node.leader_id
        if leader is None or leader == self.config.id:
            self._parked.append((sid, opcode, (waiter, wire)))
            return
        fwd_id = self._next_fwd
        self._next_fwd += 1
        self._fwd[fwd_id] = waiter
        self._peer_out.append(
            PeerMessage(self.config.id, leader, ForwardRequest(fwd_id, sid, opcode, wire))
        )

    # --- leader side --------------------------------------------------------------------

    def _on_forward(self, src: int, req: ForwardRequest, wall_ms: int) -> None:
        proposer = self._proposer
        if not self.node.is_leader or proposer is None:
            return  # the follower fails it when it learns of the new leader
        if req.opcode in (OpCode.SYNC, REVALIDATE_SESSION):
            self._read_index(src, req.fwd_id, req.session_id, req.opcode, req.body)
            return
        o = proposer.propose(req.session_id, req.opcode, req.body, wall_ms)
        reply = ForwardResponse(req.fwd_id, o.index, o.term, o.error_code, o.abort_index)
        self._peer_out.append(PeerMessage(self.config.id, src, reply))

    def _submit_local(
        self, sid: int, opcode: int, wire: Any, waiter: Waiter | None, wall_ms: int
    ) -> None:
        proposer = self._proposer
        assert proposer is not None
        if opcode in (OpCode.SYNC, REVALIDATE_SESSION):
            assert waiter is not None
            ctx = self._read_index(self.config.id, 0, sid, opcode, wire)
            self._fwd[-ctx] = waiter
            return
        o = proposer.propose(sid, opcode, wire, wall_ms)
        if waiter is not None:
            self._on_outcome(waiter, o.index, o.term, o.error_code, o.abort_index)

    def _read_index(self, src: int, fwd_id: int, sid: int, opcode: int, wire: Any) -> int:
        """A sync, or a session revalidation: answered only once a heartbeat round has
        confirmed that we still lead (a deposed leader's verdict would be stale), with
        our commit index as the barrier. Returns the ReadIndex ctx."""
        code = 0
        if opcode == REVALIDATE_SESSION:
            assert self._proposer is not None
            code = self._proposer.revalidate(sid, wire)
            if code == 0:  # the client is back, through member ``src``
                self.sessions.touch(sid, self.node.now_ms, src)
        ctx = self._next_ctx
        self._next_ctx += 1
        self._reads[ctx] = (src, fwd_id, code)
        self.node.read_index(ctx)
        return ctx

    # --- outcomes, applying -------------------------------------------------------------

    def _on_outcome(self, w: Waiter, index: int, term: int, code: int, abort: int) -> None:
        w.term, w.error_code, w.abort_index = term, code, abort
        if code == 0 and term > 0:
            self._awaiting.setdefault(index, []).append(w)
        else:
            self._barriers.append((index, w))
            self._barriers.sort(key=lambda b: b[0])

    def _apply(self, rd: Ready, now_ms: int, out: list[Output]) -> None:
        if rd.snapshot is not None:
            self.tree = DataTree.from_snapshot(unpackb(rd.snapshot.data))
            # Our clients' views jumped: make them reconnect and re-arm their watches.
            for conn in list(self._conn_session):
                self.connection_closed(conn)
                out.append(Close(conn, "snapshot_installed"))
        leader = self.node.is_leader
        proposed = self._proposer.proposed if self._proposer is not None else None
        for entry in rd.committed:
            waiters = self._awaiting.pop(entry.index, [])
            if not entry.data:
                for w in waiters:
                    self._fail(w, out)
                continue
            mine = proposed.pop(entry.index, None) if proposed is not None else None
            txn = mine[1] if mine is not None and mine[0] is entry.data else decode_txn(entry.data)
            result = self.tree.apply(txn, stats=bool(waiters))
            for path, event in result.events:
                for conn_id in self.watches.trigger(path, event):
                    out.append(Send(conn_id, self._notification(txn.zxid, path, event)))
            op = txn.op
            if isinstance(op, CreateSessionTxn) and leader:
                self.sessions.add(txn.session_id, op.timeout_ms, now_ms)
            closed_conn = None
            if isinstance(op, CloseSessionTxn):
                self.sessions.remove(txn.session_id)
                closed_conn = self._session_conn.get(txn.session_id)
            for w in waiters:
                if w.term != entry.term:
                    self._fail(w, out)
                elif isinstance(w.body, ConnectResponse):
                    if w.conn_id in self._live:  # else the session just times out
                        self._bind(w.conn_id, w.body.session_id, out)
                        out.append(Send(w.conn_id, self._connect_frame(w.body)))
                else:
                    reply = self.write_reply(w.body, result.value)
                    out.append(Send(w.conn_id, self._frame(w.xid, 0, reply)))
            if closed_conn is not None:
                self.connection_closed(closed_conn)
                out.append(Close(closed_conn, "session_closed"))
        self._release_barriers(out)
        for rs in rd.read_states:
            read = self._reads.pop(rs.ctx, None)
            if read is None:
                # Issued before a leadership change that already failed its waiter
                # (``_check_leader`` clears ``_reads``); the node confirmed it since.
                continue
            src, fwd_id, code = read
            if src == self.config.id:
                local = self._fwd.pop(-rs.ctx, None)
                if local is not None:
                    self._on_outcome(local, rs.index, 0, code, -1)
            else:
                reply = ForwardResponse(fwd_id, rs.index, 0, code)
                self._peer_out.append(PeerMessage(self.config.id, src, reply))
        for ctx in rd.failed_reads:
            self._reads.pop(ctx, None)
            failed = self._fwd.pop(-ctx, None)
            if failed is not None:
                self._fail(failed, out)
        self._release_barriers(out)

    def _release_barriers(self, out: list[Output]) -> None:
        applied = self.node.log.applied
        while self._barriers and self._barriers[0][0] <= applied:
            _, w = self._barriers.pop(0)
            if isinstance(w.body, Reconnect):
                self._finish_reconnect(w, out)
                continue
            if w.error_code:
                body = None
                if w.abort_index >= 0 and isinstance(w.body, MultiRequest):
                    body = self._aborted_results(
                        w.body, MultiAborted(w.abort_index, _error(w.error_code))
                    )
                out.append(Send(w.conn_id, self._frame(w.xid, w.error_code, body)))
            elif isinstance(w.body, SyncRequest):
                out.append(Send(w.conn_id, self._frame(w.xid, 0, SyncResponse(w.body.path))))
            elif isinstance(w.body, ConnectResponse):
                self._fail(w, out)  # the session was not created
            else:
                reply = self.write_reply(w.body, None)
                out.append(Send(w.conn_id, self._frame(w.xid, 0, reply)))
            if isinstance(w.body, CloseSessionRequest) and not w.error_code:
                self.connection_closed(w.conn_id)
                out.append(Close(w.conn_id, "session_closed"))

    def _fail(self, w: Waiter, out: list[Output]) -> None:
        self.connection_closed(w.conn_id)
        out.append(Close(w.conn_id, "leader_changed"))

    def _check_leader(self, now_ms: int, wall_ms: int, out: list[Output]) -> None:
        node = self.node
        seen = (node.role, node.leader_id, node.term)
        if seen == self._seen_leader:
            return
        was_leader = self._seen_leader[0] is Role.LEADER
        old_leader = self._seen_leader[1]
        self._seen_leader = seen
        if was_leader and not node.is_leader:
            self._proposer = None
            self.sessions = SessionTracker(self.config.min_timeout_ms, self.config.max_timeout_ms)
        if old_leader != node.leader_id or was_leader != node.is_leader:
            # Whatever was in flight with the old leader may be lost: fail it.
            pending = [w for ws in self._awaiting.values() for w in ws]
            pending += [w for _, w in self._barriers] + list(self._fwd.values())
            self._awaiting.clear()
            self._barriers.clear()
            self._fwd.clear()
            self._reads.clear()
            for conn in sorted({w.conn_id for w in pending}):
                self.connection_closed(conn)
                out.append(Close(conn, "leader_changed"))
        if node.is_leader and self._proposer is None:
            # A new leader restarts every session's timeout (it cannot know the old ones).
            self.sessions = SessionTracker(self.config.min_timeout_ms, self.config.max_timeout_ms)
            self._proposer = Proposer(self.node, self.tree, self.sessions, self.prepare_op, now_ms)
        ready = node.leader_id not in (None, self.config.id) or self._proposer is not None
        if ready and self._parked:
            parked, self._parked = self._parked, []
            for sid, opcode, (waiter, wire) in parked:
                self._route(waiter, sid, opcode, wire, out, wall_ms)

    def _snapshot_gap(self) -> int:
        """Entries until the next snapshot: snapshot_count/2 + random(snapshot_count/2), as
        ZooKeeper does, so the members of an ensemble do not all snapshot at once."""
        half = self.config.snapshot_count // 2
        return half + self._rng.randrange(max(half, 1))

    def _maybe_snapshot(self) -> None:
        log = self.node.log
        if log.applied < max(self._next_snapshot, log.snap_index + 1) or self._snapshotting:
            return
        term = log.term_at(log.applied)
        assert term is not None
        self._next_snapshot = log.applied + self._snapshot_gap()
        rows = self.tree.to_snapshot()  # a copy of the values: the loop mutates the tree
        if self.async_disk:
            # Packed and written by the writer; the log is compacted once it is durable.
            self._snapshotting = True
            self.writes.add(DiskJob(compaction=(log.applied, term, rows)))
            return
        from coordinator.consensus.node import Snapshot

        data = packb(rows)
        self.disk.write_snapshot(Snapshot(log.applied, term, data))
        self.node.compact(log.applied, data)


def _opcode(body: Any) -> int:
    return OPCODE_OF[type(body)]


def _error(code: int) -> BrokerResponseError:
    from proto.errors import for_code

    return for_code(code)()
