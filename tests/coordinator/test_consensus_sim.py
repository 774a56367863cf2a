"""Deterministic simulation of the consensus core (coordinator.consensus).

A seeded scheduler runs N ``RaftNode``s over an in-memory network that loses, duplicates,
delays and reorders messages, partitions the members and crashes and restarts them (a
restarted node keeps only what it persisted). Each host persists, sends and applies every
``Ready`` as the real server does, and snapshots + compacts its log now and then, so lagging
members catch up from snapshots. With ``async_disk`` a host only starts each log write and
finishes it (the fsync) a few ms later, as the server does: appends go out at once, acks
wait for the writes before them, and a crash loses the writes still in progress. Checked
on every step:

* election safety: at most one leader per term;
* state-machine safety: every member applies the same entry at each index, so no committed
  entry is ever lost or changed;
* leader completeness: a new leader holds every entry committed so far;
* log matching: two logs with an entry of the same index and term agree up to it;
* read barriers: a ``read_index`` answer covers every commit made before it was asked.

After the chaos the network heals and every member restarts: a leader must be elected and
commit a fresh entry on every member (liveness).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from coordinator.consensus import HardState, NotLeaderError, RaftNode, Role, Snapshot
from coordinator.consensus.node import needs_durable_log
from proto.codec import packb, unpackb
from proto.zk_peer import Entry, PeerMessage

ELECTION_MS = 150
HEARTBEAT_MS = 30
STEP_MS = 5
COMPACT_EVERY = 12
INFLIGHT = 3  # max in-flight appends per follower: small, so the chaos runs hit the cap


@dataclass
class Disk:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)


class Oracle:
    def __init__(self) -> None:
        self.applied: dict[int, bytes] = {}
        self.leaders: dict[int, int] = {}
        self.acked: set[bytes] = set()

    def commit_floor(self, hosts: list[Host]) -> int:
        return max((h.node.commit_index for h in hosts if h.node is not None), default=0)


class Host:
    """One member: its node, its disk, its state machine (the list of applied data)."""

    def __init__(self, node_id: int, members: list[int], sim: Sim) -> None:
        self.id = node_id
        self.members = members
        self.sim = sim
        self.disk = Disk()
        self.node: RaftNode | None = None
        self.state: list[bytes] = []
        self.applied_index = 0
        self.crash_after_persist = False
        self.reads: dict[int, int] = {}  # ctx -> commit floor when asked
        # async_disk: log writes in progress, in order: (done at ms, snapshot, entries,
        # messages to send once it is durable).
        self.writes: list[tuple[int, Snapshot | None, list[Entry], list[PeerMessage]]] = []
        self.start()

    def start(self) -> None:
        d = self.disk
        self.node = RaftNode(
            self.id,
            self.members,
            rng=random.Random(self.sim.rng.random()),
            now_ms=self.sim.now,
            hard_state=d.hard_state,
            snapshot=d.snapshot,
            entries=list(d.entries),
            election_timeout_ms=ELECTION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            max_append_entries=5,
            max_inflight_msgs=self.sim.max_inflight,
        )
        self.state = [] if d.snapshot is None else list(unpackb(d.snapshot.data))
        self.applied_index = 0 if d.snapshot is None else d.snapshot.index
        self.reads = {}

    def crash(self) -> None:
        self.node = None
        self.writes = []  # not durable yet: lost

    def _write(self, snapshot: Snapshot | None, entries: list[Entry]) -> None:
        d = self.disk
        if snapshot is not None:
            d.snapshot = snapshot
            d.entries = []
        if entries:
            first = entries[0].index
            d.entries = [e for e in d.entries if e.index < first] + list(entries)
        if d.snapshot is not None:  # a write begun before a compaction: as on load
            d.entries = [e for e in d.entries if e.index > d.snapshot.index]

    def finish_writes(self) -> None:
        while self.node is not None and self.writes and self.writes[0][0] <= self.sim.now:
            _, snapshot, entries, after = self.writes.pop(0)
            self._write(snapshot, entries)
            if entries:
                self.node.persisted(entries[-1].index, entries[-1].term)
            for m in after:
                self.sim.send(m)
            self.process()

    def process(self) -> None:
        node = self.node
        while node is not None and node.has_ready():
            rd = node.ready()
            d = self.disk
            if rd.hard_state is not None:
                d.hard_state = rd.hard_state
            if self.sim.async_disk:
                if rd.snapshot is not None or rd.entries:
                    due = self.sim.now + self.sim.rng.randint(0, 3 * STEP_MS)
                    self.writes.append((due, rd.snapshot, rd.entries, []))
            else:
                self._write(rd.snapshot, rd.entries)
            if self.crash_after_persist:
                self.crash_after_persist = False
                self.crash()
                return
            for m in rd.messages:
                if self.writes and needs_durable_log(m):
                    self.writes[-1][3].append(m)
                else:
                    self.sim.send(m)
            if rd.snapshot is not None:
                self.state = list(unpackb(rd.snapshot.data))
                self.applied_index = rd.snapshot.index
                self.sim.check_state(self)
            for e in rd.committed:
                assert e.index == self.applied_index + 1, (self.id, e.index, self.applied_index)
                self.applied_index = e.index
                if e.data:
                    self.state.append(e.data)
                self.sim.record_apply(self, e)
            for rs in rd.read_states:
                floor = self.reads.pop(rs.ctx)
                assert rs.index >= floor, f"read barrier {rs.index} below commit {floor}"
            for ctx in rd.failed_reads:
                self.reads.pop(ctx)
            node.advance(rd, entries_persisted=not self.sim.async_disk)
            if self.applied_index - node.log.snap_index >= COMPACT_EVERY:
                data = packb(self.state)
                node.compact(self.applied_index, data)
                term = node.log.snap_term
                d.snapshot = Snapshot(self.applied_index, term, data)
                d.entries = [e for e in d.entries if e.index > self.applied_index]


class Sim:
    def __init__(
        self, seed: int, n: int, *, max_inflight: int = INFLIGHT, async_disk: bool = False
    ) -> None:
        self.rng = random.Random(seed)
        self.async_disk = async_disk
        self.now = 0
        self.oracle = Oracle()
        self.members = list(range(1, n + 1))
        self.in_flight: list[tuple[int, int, PeerMessage]] = []  # (due, seq, msg)
        self.seq = 0
        self.loss = 0.0
        self.dup = 0.0
        self.min_delay = 1
        self.max_delay = 1
        self.fifo = False  # deliver in send order (as the real peer links, over TCP, do)
        self.max_inflight = max_inflight
        self.groups: dict[int, int] = {}  # node -> partition group; absent: group 0
        self.hosts = [Host(i, self.members, self) for i in self.members]
        self.proposed = 0
        self.next_ctx = 1

    # --- network ------------------------------------------------------------------------

    def send(self, msg: PeerMessage) -> None:
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            self.seq += 1
            due = self.now + self.rng.randint(self.min_delay, self.max_delay)
            self.in_flight.append((due, self.seq, msg))

    def connected(self, a: int, b: int) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def deliver_due(self) -> None:
        due = [m for m in self.in_flight if m[0] <= self.now]
        if not due:
            return
        self.in_flight = [m for m in self.in_flight if m[0] > self.now]
        if self.fifo:
            due.sort(key=lambda m: m[1])
        else:
            self.rng.shuffle(due)
        for _, _, msg in due:
            host = self.hosts[msg.dst - 1]
            if host.node is None or not self.connected(msg.src, msg.dst):
                continue
            host.node.step(msg)
            host.process()
            self.check_roles()

    # --- checks -------------------------------------------------------------------------

    def record_apply(self, host: Host, e: Entry) -> None:
        seen = self.oracle.applied.setdefault(e.index, e.data)
        assert seen == e.data, f"node {host.id} applied a different entry at {e.index}"

    def check_state(self, host: Host) -> None:
        """After a snapshot install: the state must equal the applied history's prefix."""
        history = [self.oracle.applied[i] for i in sorted(self.oracle.applied)]
        expected = [d for d in history[: host.applied_index] if d]
        if len(self.oracle.applied) >= host.applied_index:
            assert host.state == expected, f"node {host.id} installed a divergent snapshot"

    def check_roles(self) -> None:
        for h in self.hosts:
            node = h.node
            if node is None or node.role is not Role.LEADER:
                continue
            leader = self.oracle.leaders.setdefault(node.term, h.id)
            assert leader == h.id, f"two leaders in term {node.term}: {leader} and {h.id}"
            # Leader completeness: it holds every applied (so committed) entry.
            log = node.log
            for index, data in self.oracle.applied.items():
                if index > log.snap_index:
                    entry = log.slice(index, index)
                    assert entry and entry[0].data == data, (
                        f"leader {h.id} (term {node.term}) lacks committed entry {index}"
                    )

    def check_log_matching(self) -> None:
        logs = [h.node.log for h in self.hosts if h.node is not None]
        for i, a in enumerate(logs):
            for b in logs[i + 1 :]:
                lo = max(a.snap_index, b.snap_index) + 1
                hi = min(a.last_index, b.last_index)
                top = None
                for index in range(hi, lo - 1, -1):
                    if a.term_at(index) == b.term_at(index):
                        top = index
                        break
                if top is None:
                    continue
                assert a.slice(lo, top) == b.slice(lo, top), "logs diverge below a match"

    # --- driving ------------------------------------------------------------------------

    def leader(self) -> Host | None:
        leaders = [h for h in self.hosts if h.node is not None and h.node.is_leader]
        return max(leaders, key=lambda h: h.node.term if h.node else 0) if leaders else None

    def step(self) -> None:
        self.now += STEP_MS
        self.deliver_due()
        for h in self.hosts:
            h.finish_writes()
            if h.node is not None:
                h.node.tick(self.now)
                h.process()
        self.check_roles()

    def client(self) -> None:
        leader = self.leader()
        if leader is None or leader.node is None:
            return
        r = self.rng.random()
        if r < 0.3:
            for _ in range(self.rng.randint(1, 4)):
                self.proposed += 1
                leader.node.propose(f"w{self.proposed}".encode())
        elif r < 0.4:
            ctx = self.next_ctx
            self.next_ctx += 1
            leader.reads[ctx] = self.oracle.commit_floor(self.hosts)
            leader.node.read_index(ctx)
        leader.process()

    def chaos(self) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.01:
            victim = rng.choice(self.hosts)
            if victim.node is not None:
                if rng.random() < 0.5:
                    victim.crash_after_persist = True
                else:
                    victim.crash()
        elif r < 0.03:
            down = [h for h in self.hosts if h.node is None]
            if down:
                rng.choice(down).start()
        elif r < 0.04:
            self.groups = {m: rng.randint(0, 1) for m in self.members}
        elif r < 0.05:
            self.groups = {}

    def run(self, chaos_ms: int, heal_ms: int) -> None:
        rng = self.rng
        self.loss = rng.choice([0.0, 0.05, 0.2])
        self.dup = rng.choice([0.0, 0.05])
        self.max_delay = rng.choice([1, 10, 40])
        while self.now < chaos_ms:
            self.step()
            self.client()
            self.chaos()
            if self.now % 100 == 0:
                self.check_log_matching()
        # Heal: everyone up, no partitions, a reliable network.
        self.groups = {}
        self.loss = self.dup = 0.0
        for h in self.hosts:
            h.crash_after_persist = False
            if h.node is None:
                h.start()
        marker = b"marker"
        proposed_at: int | None = None
        deadline = self.now + heal_ms
        while self.now < deadline:
            self.step()
            leader = self.leader()
            if proposed_at is None and leader is not None and leader.node is not None:
                try:
                    leader.node.propose(marker)
                except NotLeaderError:
                    continue
                proposed_at = self.now
                leader.process()
            if proposed_at is not None and all(
                marker in h.state for h in self.hosts if h.node is not None
            ):
                break
            if self.now > (proposed_at or self.now) + 20 * ELECTION_MS:
                proposed_at = None  # the leader lost it in an election; propose again
        self.check_log_matching()
        assert all(marker in h.state for h in self.hosts), (
            f"no progress after healing: leader={self.leader() and self.leader().id}"  # type: ignore[union-attr]
        )


SEEDS_PER_CHUNK = 50


@pytest.mark.parametrize("chunk", range(6))
def test_consensus_under_chaos(chunk: int) -> None:
    for seed in range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK):
        n = 5 if seed % 3 == 0 else 3
        sim = Sim(seed, n, async_disk=seed % 2 == 1)
        try:
            sim.run(chaos_ms=3000, heal_ms=6000)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed} (n={n}, t={sim.now}): {exc}") from exc
        assert sim.oracle.applied, f"seed {seed}: nothing was ever committed"


def test_single_node_commits_alone() -> None:
    sim = Sim(7, 1)
    for _ in range(100):
        sim.step()
    leader = sim.leader()
    assert leader is not None and leader.node is not None
    index = leader.node.propose(b"x")
    leader.process()
    sim.step()
    assert b"x" in leader.state and leader.applied_index >= index


def test_follower_acks_only_after_persisting() -> None:
    """An AppendResponse leaves a follower only in a Ready that also persists the entry."""
    sim = Sim(3, 3)
    while sim.leader() is None:
        sim.step()
    for _ in range(20):
        sim.step()
    leader = sim.leader()
    assert leader is not None and leader.node is not None
    index = leader.node.propose(b"durable")
    rd = leader.node.ready()
    follower = next(h for h in sim.hosts if h is not leader)
    assert follower.node is not None
    for m in rd.messages:
        if m.dst == follower.id:
            follower.node.step(m)
    frd = follower.node.ready()
    acks = [m for m in frd.messages if type(m.body).__name__ == "AppendResponse"]
    assert acks and any(e.index == index for e in frd.entries)


def slow_link_run(cap: int) -> int:
    """A write every step over slow links (100 ms each way, in order): returns the most
    appends (with entries) ever on the wire to one follower; checks every write lands."""
    sim = Sim(11, 3, max_inflight=cap)
    while sim.leader() is None:
        sim.step()
    sim.fifo, sim.min_delay, sim.max_delay = True, 100, 100  # ms
    leader = sim.leader()
    assert leader is not None and leader.node is not None
    most = 0
    writes = [f"w{i}".encode() for i in range(200)]
    for data in writes:
        leader.node.propose(data)
        leader.process()
        sim.step()
        for follower in (h.id for h in sim.hosts if h is not leader):
            appends = sum(
                1
                for _, _, m in sim.in_flight
                if m.dst == follower and getattr(m.body, "entries", None)
            )
            most = max(most, appends)
    for _ in range(2000):
        if all(h.state[-len(writes) :] == writes for h in sim.hosts):
            break
        sim.step()
    assert sim.leader() is leader, "the test wants one leader throughout"
    assert all(h.state[-len(writes) :] == writes for h in sim.hosts), "replication stalled"
    return most


def test_in_flight_appends_are_capped_and_replication_keeps_up() -> None:
    # Uncapped, the leader keeps about a round trip's worth of appends in flight.
    assert slow_link_run(256) > 10
    # Capped, it never has more than ``cap`` (entries batch up instead), and keeps up.
    assert slow_link_run(4) <= 4
    assert slow_link_run(1) <= 1
