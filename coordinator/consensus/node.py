"""The Raft state machine of one ensemble member. Sans-IO: messages in, ``Ready`` out.

Inputs: ``tick(now_ms)`` (time), ``step(msg)`` (a peer message), ``propose(data)``
(leader only), ``read_index(ctx)`` (a sync barrier, leader only) and ``compact`` (the host
took a snapshot). Output: ``ready()`` returns a ``Ready`` holding, in the order the host
must act on them:

1. ``hard_state`` (term, vote) and ``snapshot`` and ``entries`` to persist, with ONE fsync
   (``entries[0]`` at or below what is on disk means: truncate the disk log there first);
2. ``messages`` to send, only after that fsync: so a vote or an append ack is never sent
   for something not yet durable (a follower acks an entry only after its fsync);
3. ``committed`` entries to apply, in order; ``read_states`` sync barriers now released
   (apply up to their index, then answer) and ``failed_reads`` to fail.

then call ``advance(ready)``. Everything proposed between two ``ready()`` calls is shipped
in one append per follower and persisted with one fsync (group commit); appends to a
follower are pipelined (its ``next`` index moves on optimistically, a rejection rewinds it).

Asynchronous log writes (what the server does, so the event loop never waits on a disk):
persist ``hard_state`` (and ``snapshot``) at once, but only *start* writing ``entries``;
send the messages for which ``needs_durable_log`` is false at once (a leader's appends go
out while its own fsync runs, as Raft allows), the others (append acks) only once every
log write started so far is durable; apply; call ``advance(ready, entries_persisted=False)``
and later ``persisted(index, term)`` when the write of the entry ``index`` is durable.
A leader counts itself towards a commit only from ``persisted``, so never before its own
fsync; a follower acks nothing before its fsync. Applying a committed entry before the
local fsync is safe: a majority holds it durably already.

Rules (Raft, with pre-vote and check-quorum): a candidate wins with a majority of votes; a
vote goes only to a candidate whose (last term, last index) is at least the voter's; a
leader commits an entry of its own term once a majority has it on disk, and earlier
entries with it (its first entry is a no-op, so it commits the previous leader's tail at
once); a leader that has not heard from a majority for an election timeout steps down, so
no write is accepted without a quorum. No randomness but the injected ``random.Random``,
no clock but ``now_ms``.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from coordinator.consensus.log import RaftLog
from proto.zk_peer import (
    AppendEntries,
    AppendResponse,
    Entry,
    InstallSnapshot,
    PeerBody,
    PeerMessage,
    RequestVote,
    VoteResponse,
)

__all__ = [
    "HardState",
    "NotLeaderError",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "needs_durable_log",
]

NO_VOTE = -1


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeaderError(Exception):
    """propose / read_index on a member that is not the leader."""


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    voted_for: int = NO_VOTE


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: int
    term: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ReadState:
    ctx: int
    index: int


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[PeerMessage] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    failed_reads: list[int] = field(default_factory=list)


def needs_durable_log(msg: PeerMessage) -> bool:
    """Whether ``msg`` may leave only once every log write handed out so far is durable:
    an append ack (its match index covers what we were sent). Appends, votes and vote
    requests depend on the persisted hard state only."""
    return type(msg.body) is AppendResponse


@dataclass(slots=True)
class _Progress:
    next: int
    match: int = 0
    sent_commit: int = 0
    last_heard_ms: int = -(1 << 62)
    # Last index of each append with entries not yet acknowledged (etcd's Inflights).
    inflight: deque[int] = field(default_factory=deque)


@dataclass(slots=True)
class _PendingRead:
    ctx: int
    index: int
    seq: int
    acks: set[int]


class RaftNode:
    def __init__(
        self,
        node_id: int,
        members: Sequence[int],
        *,
        rng: random.Random,
        now_ms: int,
        hard_state: HardState = HardState(),
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        election_timeout_ms: int = 1000,
        heartbeat_interval_ms: int = 100,
        max_append_entries: int = 2048,
        max_inflight_msgs: int = 256,
    ) -> None:
        if node_id not in members:
            raise ValueError(f"node {node_id} is not one of the members {sorted(members)}")
        self.id = node_id
        self.members = sorted(set(members))
        self.peers = [m for m in self.members if m != node_id]
        self.quorum = len(self.members) // 2 + 1
        self.rng = rng
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_append_entries = max_append_entries
        if max_inflight_msgs < 1:
            raise ValueError("max_inflight_msgs must be at least 1")
        self.max_inflight_msgs = max_inflight_msgs
        snap = snapshot or Snapshot(0, 0, b"")
        self.log = RaftLog(snap.index, snap.term, snap.data, list(entries))
        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        self.now_ms = now_ms
        self._persisted_hs = hard_state
        self._votes: set[int] = set()
        self._progress: dict[int, _Progress] = {}
        self._heartbeat_due = now_ms
        self._election_deadline = 0
        self._leader_heard_ms = -(1 << 62)
        self._read_seq = 0
        self._reads: list[_PendingRead] = []
        self._deferred_reads: list[int] = []
        self._ready = Ready()
        self._pending_snapshot: Snapshot | None = None
        self._broadcast = False
        self._in_ready = False
        self._reset_election_timer()

    # --- queries ------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def commit_index(self) -> int:
        return self.log.commit

    def progress(self) -> dict[int, tuple[int, int]]:
        """Leader only: peer -> (match index, last heard ms)."""
        return {p: (pr.match, pr.last_heard_ms) for p, pr in self._progress.items()}

    # --- inputs -------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        self.now_ms = max(self.now_ms, now_ms)
        now = self.now_ms
        if self.role is Role.LEADER:
            if self.peers and not self._has_quorum_contact():
                self._become_follower(self.term, None)
                return
            if now >= self._heartbeat_due:
                self._heartbeat_due = now + self.heartbeat_interval_ms
                self._read_seq += 1
                for p in self.peers:
                    self._send_append(p, force=True)
        elif now >= self._election_deadline:
            self._campaign(pre_vote=bool(self.peers))

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its index (it may still be lost if this
        leader is deposed before it commits)."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(f"leader is {self.leader_id}")
        index = self.log.last_index + 1
        self.log.append(Entry(self.term, index, data))
        self._broadcast = True
        return index

    def read_index(self, ctx: int) -> None:
        """Ask for a read barrier: ``ReadState(ctx, index)`` comes out once this leader has
        confirmed with a majority that it still leads; ``index`` is its commit index at the
        time of the call (or at its first commit, if it has not committed in its term yet)."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(f"leader is {self.leader_id}")
        if self.log.term_at(self.log.commit) != self.term:
            self._deferred_reads.append(ctx)
            return
        self._start_read(ctx)

    def _start_read(self, ctx: int) -> None:
        if not self.peers:
            self._ready.read_states.append(ReadState(ctx, self.log.commit))
            return
        self._read_seq += 1
        self._reads.append(_PendingRead(ctx, self.log.commit, self._read_seq, {self.id}))
        for p in self.peers:
            self._send_append(p, force=True)

    def compact(self, index: int, data: bytes) -> None:
        self.log.compact(index, data)

    def step(self, msg: PeerMessage) -> None:
        body = msg.body
        term = getattr(body, "term", None)
        if term is None:
            return
        if isinstance(body, RequestVote) and body.pre_vote:
            self._on_pre_vote(msg.src, body)
            return
        if isinstance(body, VoteResponse) and body.pre_vote:
            if self.role is Role.PRE_CANDIDATE and body.term == self.term + 1 and body.granted:
                self._votes.add(msg.src)
                if len(self._votes) >= self.quorum:
                    self._campaign(pre_vote=False)
            elif not body.granted and body.term > self.term:
                self._become_follower(body.term, None)
            return
        if term > self.term:
            is_leader_msg = isinstance(body, AppendEntries | InstallSnapshot)
            self._become_follower(term, msg.src if is_leader_msg else None)
        elif term < self.term:
            if isinstance(body, AppendEntries | InstallSnapshot):
                # A stale leader: tell it our term so it steps down.
                self._send(msg.src, AppendResponse(self.term, False, 0))
            return
        if isinstance(body, RequestVote):
            self._on_vote_request(msg.src, body)
        elif isinstance(body, VoteResponse):
            self._on_vote_response(msg.src, body)
        elif isinstance(body, AppendEntries):
            self._on_append(msg.src, body)
        elif isinstance(body, InstallSnapshot):
            self._on_snapshot(msg.src, body)
        elif isinstance(body, AppendResponse):
            self._on_append_response(msg.src, body)

    # --- output -------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self._ready
        return bool(
            self._broadcast
            or r.messages
            or r.read_states
            or r.failed_reads
            or self._pending_snapshot is not None
            or self.log.written < self.log.last_index
            or self.log.applied < self.log.commit
            or self._hard_state() != self._persisted_hs
        )

    def ready(self) -> Ready:
        """Everything to persist, send and apply now; call ``advance`` once done."""
        assert not self._in_ready, "ready() called twice without advance()"
        if self._broadcast:
            self._broadcast = False
            for p in self.peers:
                self._send_append(p, force=False)
            if not self.peers:
                self._maybe_commit()
        if self.role is Role.LEADER:
            self._send_commits()
        rd, self._ready = self._ready, Ready()
        hs = self._hard_state()
        if hs != self._persisted_hs:
            rd.hard_state = hs
        rd.snapshot = self._pending_snapshot
        rd.entries = self.log.unstable()
        self.log.written = self.log.last_index
        # Applied only after this Ready's entries are on disk, so never past last_index.
        rd.committed = self.log.to_apply()
        self._in_ready = True
        return rd

    def advance(self, rd: Ready, *, entries_persisted: bool = True) -> None:
        """The host persisted, sent and applied ``rd``; with ``entries_persisted=False`` it
        only started writing its entries and reports them through ``persisted`` later."""
        self._in_ready = False
        if rd.hard_state is not None:
            self._persisted_hs = rd.hard_state
        if rd.snapshot is not None and self._pending_snapshot == rd.snapshot:
            self._pending_snapshot = None
        if rd.committed:
            self.log.applied = max(self.log.applied, rd.committed[-1].index)
        if rd.entries and entries_persisted:
            last = rd.entries[-1]
            self.persisted(last.index, last.term)

    def persisted(self, index: int, term: int) -> None:
        """The log up to entry ``index`` (of ``term``) is durable. Ignored if that entry was
        overwritten meanwhile (by log matching, the same (index, term) means the same
        entries before it, so nothing below it was rewritten either)."""
        log = self.log
        if log.term_at(index) != term or index <= log.stable:
            return
        log.stable = min(index, log.written)
        if self.role is Role.LEADER:
            self._maybe_commit()  # our own fsync counts towards the majority

    # --- roles --------------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)

    def _reset_election_timer(self) -> None:
        t = self.election_timeout_ms
        self._election_deadline = self.now_ms + t + self.rng.randrange(t)

    def _fail_reads(self) -> None:
        self._ready.failed_reads.extend(r.ctx for r in self._reads)
        self._ready.failed_reads.extend(self._deferred_reads)
        self._reads.clear()
        self._deferred_reads.clear()

    def _become_follower(self, term: int, leader: int | None) -> None:
        if self.role is Role.LEADER:
            self._fail_reads()
        if term > self.term:
            self.term = term
            self.voted_for = NO_VOTE
        self.role = Role.FOLLOWER
        self.leader_id = leader
        self._progress.clear()
        self._broadcast = False
        self._reset_election_timer()

    def _campaign(self, *, pre_vote: bool) -> None:
        self._reset_election_timer()
        self.leader_id = None
        self._votes = {self.id}
        if pre_vote:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.voted_for = self.id
            term = self.term
        if len(self._votes) >= self.quorum:
            if pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return
        for p in self.peers:
            self._send(p, RequestVote(term, self.log.last_index, self.log.last_term, pre_vote))

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index
        self._progress = {p: _Progress(next=last + 1) for p in self.peers}
        for pr in self._progress.values():
            pr.last_heard_ms = self.now_ms  # a fresh leader gets one timeout of grace
        self._heartbeat_due = self.now_ms + self.heartbeat_interval_ms
        # The no-op commits the previous terms' tail (Raft commits only own-term entries).
        self.log.append(Entry(self.term, last + 1, b""))
        self._broadcast = True

    def _log_up_to_date(self, last_term: int, last_index: int) -> bool:
        return (last_term, last_index) >= (self.log.last_term, self.log.last_index)

    def _leader_is_alive(self) -> bool:
        return self.leader_id is not None and (
            self.now_ms - self._leader_heard_ms < self.election_timeout_ms
        )

    def _on_pre_vote(self, src: int, req: RequestVote) -> None:
        grant = (
            req.term > self.term
            and self._log_up_to_date(req.last_term, req.last_index)
            and not (self._leader_is_alive() or self.role is Role.LEADER)
        )
        self._send(src, VoteResponse(req.term if grant else self.term, grant, True))

    def _on_vote_request(self, src: int, req: RequestVote) -> None:
        grant = self.voted_for in (NO_VOTE, src) and self._log_up_to_date(
            req.last_term, req.last_index
        )
        if grant:
            self.voted_for = src
            self._reset_election_timer()
        # Sent after the Ready's hard state (the vote) is persisted.
        self._send(src, VoteResponse(self.term, grant))

    def _on_vote_response(self, src: int, resp: VoteResponse) -> None:
        if self.role is not Role.CANDIDATE or not resp.granted:
            return
        self._votes.add(src)
        if len(self._votes) >= self.quorum:
            self._become_leader()

    # --- follower side ------------------------------------------------------------------

    def _heard_from_leader(self, src: int) -> None:
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, src)
        self.leader_id = src
        self._leader_heard_ms = self.now_ms
        self._reset_election_timer()

    def _on_append(self, src: int, req: AppendEntries) -> None:
        self._heard_from_leader(src)
        log = self.log
        prev_index, prev_term, entries = req.prev_index, req.prev_term, req.entries
        if prev_index < log.commit:
            # The committed prefix is the same on every server: skip what it covers.
            entries = [e for e in entries if e.index > log.commit]
            prev_index = log.commit
            prev_term = log.term_at(prev_index)  # type: ignore[assignment]
        else:
            have = log.term_at(prev_index)
            if have != prev_term:
                if have is None:
                    hint = min(prev_index - 1, log.last_index)
                else:
                    hint = max(log.first_index_of_term(prev_index) - 1, log.commit)
                self._send(src, AppendResponse(self.term, False, hint, req.read_seq))
                return
        log.merge(entries)
        match = max(prev_index + len(entries), req.prev_index + len(req.entries))
        match = min(match, log.last_index)
        if req.commit > log.commit:
            log.commit = min(req.commit, match)
        self._send(src, AppendResponse(self.term, True, match, req.read_seq))

    def _on_snapshot(self, src: int, req: InstallSnapshot) -> None:
        self._heard_from_leader(src)
        if req.index > self.log.commit and self.log.term_at(req.index) == req.snap_term:
            # We hold the snapshot's last entry, so (log matching) all before it: keep the
            # log, entries after it included (Raft §7). They may be acks that counted
            # towards a commit; discarding them could lose a committed entry.
            self.log.commit = req.index
        elif req.index > self.log.commit:
            self.log.install_snapshot(req.index, req.snap_term, req.data)
            self.log.applied = req.index  # the host installs it before applying more
            self._pending_snapshot = Snapshot(req.index, req.snap_term, req.data)
        self._send(src, AppendResponse(self.term, True, self.log.commit, req.read_seq))

    # --- leader side --------------------------------------------------------------------

    def _has_quorum_contact(self) -> bool:
        since = self.now_ms - self.election_timeout_ms
        heard = 1 + sum(1 for pr in self._progress.values() if pr.last_heard_ms > since)
        return heard >= self.quorum

    def _send_append(self, peer: int, *, force: bool) -> None:
        pr = self._progress[peer]
        log = self.log
        if pr.next <= log.snap_index:
            self._send(
                peer,
                InstallSnapshot(self.term, log.snap_index, log.snap_term, log.snap_data,
                                self._read_seq),
            )  # fmt: skip
            pr.next = log.snap_index + 1
            return
        if not force and pr.next > log.last_index:
            return
        hi = min(log.last_index, pr.next + self.max_append_entries - 1)
        if len(pr.inflight) >= self.max_inflight_msgs:
            # The pipe to this follower is full: no more entries until acks free a slot.
            # A heartbeat still goes, empty; it probes, and a lost append shows up as its
            # rejection, which rewinds and empties the pipe.
            if not force:
                return
            hi = pr.next - 1
        entries = log.slice(pr.next, hi) if pr.next <= hi else []
        if entries:
            pr.inflight.append(hi)
        prev = pr.next - 1
        prev_term = log.term_at(prev)
        assert prev_term is not None
        commit = min(log.commit, prev + len(entries))
        pr.sent_commit = max(pr.sent_commit, commit)
        self._send(peer, AppendEntries(self.term, prev, prev_term, entries, commit, self._read_seq))
        pr.next = hi + 1 if entries else pr.next

    def _on_append_response(self, src: int, resp: AppendResponse) -> None:
        if self.role is not Role.LEADER:
            return
        pr = self._progress.get(src)
        if pr is None:
            return
        pr.last_heard_ms = self.now_ms
        if resp.success:
            if resp.match_index > pr.match:
                pr.match = resp.match_index
                self._maybe_commit()
            pr.next = max(pr.next, pr.match + 1)
            while pr.inflight and pr.inflight[0] <= pr.match:
                pr.inflight.popleft()
        else:
            # Rewind (never below what the follower is known to hold) and resend.
            pr.next = max(pr.match + 1, min(pr.next, resp.match_index + 1))
            pr.inflight.clear()  # whatever was in flight past the rewind is resent
        if resp.read_seq:
            self._ack_reads(src, resp.read_seq)
        if not resp.success or pr.next <= self.log.last_index:
            self._send_append(src, force=not resp.success)

    def _ack_reads(self, src: int, seq: int) -> None:
        for r in self._reads:
            if r.seq <= seq:
                r.acks.add(src)
        while self._reads and len(self._reads[0].acks) >= self.quorum:
            r = self._reads.pop(0)
            self._ready.read_states.append(ReadState(r.ctx, r.index))

    def _send_commits(self) -> None:
        """Tell each follower how far it may commit, if no append told it already: sent
        from its known match, so it is never rejected (followers apply promptly, which
        forwarded writes and syncs wait for)."""
        log = self.log
        for p, pr in self._progress.items():
            commit = min(log.commit, pr.match)
            if commit <= pr.sent_commit:
                continue
            prev_term = log.term_at(pr.match)
            if prev_term is None:
                continue
            pr.sent_commit = commit
            self._send(p, AppendEntries(self.term, pr.match, prev_term, [], commit))

    def _maybe_commit(self) -> None:
        log = self.log
        matches = sorted([log.stable, *(pr.match for pr in self._progress.values())], reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > log.commit and log.term_at(candidate) == self.term:
            first_in_term = log.term_at(log.commit) != self.term
            log.commit = candidate
            self._broadcast = True  # tell followers the new commit index promptly
            if first_in_term and self._deferred_reads:
                deferred, self._deferred_reads = self._deferred_reads, []
                for ctx in deferred:
                    self._start_read(ctx)

    def _send(self, dst: int, body: PeerBody) -> None:
        self._ready.messages.append(PeerMessage(self.id, dst, body))
