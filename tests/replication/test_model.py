"""Model-based: LeaderState, FollowerState and the controller's elections driving a simulated
3-broker partition (each log a list of (epoch, record)) through random produces, partial
fetches, clock ticks, slow ISR writes, crashes, restarts, quiet restarts the controller
never sees, and preferred-leader elections.

The property the replication issue is about: with clean elections, no offset below a high
watermark a consumer has seen is ever lost or changed. Checked after every step in its
strong form: every ISR member in the state znode holds the committed prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.metadata_cache import PartitionInfo
from broker.replication import (
    NO_LEADER,
    FollowerState,
    LeaderState,
    StateChange,
    Truncation,
    on_brokers_changed,
    preferred_leader_elections,
)
from broker.zk_layout import PartitionState
from tests.replication.simlog import Entry, SimLog

REPLICAS = [0, 1, 2]
LAG_MS = 100
KEY = ("t", 0)


class SafetyViolation(AssertionError):
    pass


class MaximalIsrIgnored(LeaderState):
    """A mutant that computes the HW over the confirmed ISR only (no KIP-497)."""

    @property
    def maximal_isr(self) -> list[int]:
        return self.isr


class ObservedIsrEndsProposal(LeaderState):
    """A mutant where any ISR the znode shows ends our proposal (a first draft did)."""

    def isr_observed(self, isr: Sequence[int]) -> bool:
        self.isr_update_failed()
        return super().isr_observed(isr)


class EqualIsrEndsProposal(LeaderState):
    """A mutant where a znode ISR equal to our proposal ends it (a second draft did)."""

    def isr_observed(self, isr: Sequence[int]) -> bool:
        if self.pending_isr == list(isr):
            self.isr_update_failed()
        return super().isr_observed(isr)


@dataclass
class Broker:
    id: int
    log: SimLog
    live: bool = True
    leader: LeaderState | None = None
    follower: FollowerState | None = None
    truncated: bool = False


@dataclass
class PendingIsrWrite:
    leader: LeaderState
    isr: list[int]
    expected_version: int


class Cluster:
    def __init__(
        self,
        *,
        min_insync_replicas: int = 1,
        truncate_to_hw: bool = False,
        leader_state: type[LeaderState] = LeaderState,
    ) -> None:
        self.brokers = {b: Broker(b, SimLog()) for b in REPLICAS}
        self.state = PartitionState(REPLICAS[0], 0, list(REPLICAS), 1)
        self.version = 0
        self.controller_epoch = 1
        self.now = 0
        self.next_record = 0
        self.pending: list[PendingIsrWrite] = []
        self.committed: list[Entry] = []
        self.hw_of: dict[int, tuple[LeaderState, int]] = {}
        self.min_insync_replicas = min_insync_replicas
        self.truncate_to_hw = truncate_to_hw
        self.leader_state = leader_state
        self.deliver()

    # -- the coordinator and the watches -------------------------------------------------

    def write(self, state: PartitionState) -> None:
        self.state = state
        self.version += 1
        self.deliver()

    def deliver(self) -> None:
        """Every live broker learns the state znode at once (a watch) and acts on it."""
        st = self.state
        for b in self.brokers.values():
            if not b.live:
                continue
            if st.leader == b.id:
                b.follower = None
                if b.leader is None or b.leader.leader_epoch != st.leader_epoch:
                    b.log.assign(st.leader_epoch, b.log.leo)
                    b.leader = self.leader_state(
                        b.id,
                        st.leader_epoch,
                        REPLICAS,
                        st.isr,
                        b.log.leo,
                        b.log.high_watermark,
                        self.now,
                        LAG_MS,
                        self.min_insync_replicas,
                    )
                else:
                    b.leader.isr_observed(st.isr)
            else:
                b.leader = None
                if st.leader == NO_LEADER:
                    b.follower = None
                elif b.follower is None or b.follower.leader_epoch != st.leader_epoch:
                    b.follower = FollowerState(b.id, st.leader, st.leader_epoch)
                    b.truncated = False
                    if self.truncate_to_hw:  # pre-KIP-101: cut to the HW at once
                        b.log.truncate_to(b.log.high_watermark)
                        b.truncated = True

    def controller_react(self) -> None:
        self.controller_epoch += 1
        info = PartitionInfo(*KEY, REPLICAS, self.state)
        changes = on_brokers_changed(
            [info],
            self.live(),
            self.controller_epoch,
            lambda t: False,
            versions={KEY: self.version},
        )
        self.apply(changes)

    def apply(self, changes: list[StateChange]) -> None:
        for c in changes:
            assert c.expected_version == self.version
            self.write(c.state)

    def live(self) -> set[int]:
        return {b.id for b in self.brokers.values() if b.live}

    def leader(self) -> Broker | None:
        if self.state.leader == NO_LEADER:
            return None
        b = self.brokers[self.state.leader]
        return b if b.live and b.leader is not None else None

    # -- steps ---------------------------------------------------------------------------

    def produce(self, count: int) -> None:
        lb = self.leader()
        if lb is None or lb.leader is None:
            return
        for _ in range(count):
            lb.log.append(lb.leader.leader_epoch, self.next_record)
            self.next_record += 1
        lb.leader.on_append(lb.log.leo)

    def fetch(self, fid: int, max_records: int) -> None:
        f, lb = self.brokers[fid], self.leader()
        if not f.live or f.follower is None or lb is None or lb.leader is None:
            return
        assert f.follower.leader_id == lb.id and f.follower.leader_epoch == lb.leader.leader_epoch
        if not f.truncated:
            self.become_follower(f, lb)
        update = lb.leader.on_follower_fetch(fid, f.log.leo, self.now)
        for epoch, record in lb.log.entries[f.log.leo : f.log.leo + max_records]:
            f.log.append(epoch, record)
        f.log.high_watermark = f.follower.on_fetch_response(lb.leader.high_watermark, f.log.leo)
        if update.expand_isr_to is not None:
            self.pending.append(PendingIsrWrite(lb.leader, update.expand_isr_to, self.version))

    def become_follower(self, f: Broker, lb: Broker) -> None:
        assert f.follower is not None
        for _ in range(100):
            reply = lb.log.end_offset_for(f.log.latest_epoch)
            t: Truncation = f.follower.truncation_offset(
                f.log.leo, reply, f.log.end_offset_for, f.log.high_watermark
            )
            f.log.truncate_to(t.offset)
            if t.completed:
                break
        else:
            raise AssertionError("truncation did not converge")
        f.truncated = True

    def tick(self, ms: int) -> None:
        self.now += ms
        lb = self.leader()
        if lb is not None and lb.leader is not None:
            proposal = lb.leader.maybe_shrink_isr(self.now)
            if proposal is not None:
                self.pending.append(PendingIsrWrite(lb.leader, proposal, self.version))

    def complete_isr_write(self, index: int) -> None:
        if not self.pending:
            return
        w = self.pending.pop(index % len(self.pending))
        owner = self.brokers[self.state.leader] if self.state.leader != NO_LEADER else None
        ours = owner is not None and owner.leader is w.leader
        if w.expected_version == self.version and ours:
            st = self.state
            self.write(PartitionState(st.leader, st.leader_epoch, w.isr, st.controller_epoch))
            w.leader.isr_updated(w.isr)
        elif ours:
            w.leader.isr_update_failed()
            w.leader.isr_observed(self.state.isr)  # re-read: same epoch, still leader

    def crash(self, bid: int) -> None:
        b = self.brokers[bid]
        if not b.live:
            return
        b.live, b.leader, b.follower = False, None, None
        self.controller_react()

    def restart(self, bid: int) -> None:
        b = self.brokers[bid]
        if b.live:
            return
        b.live = True
        self.controller_react()
        self.deliver()

    def quiet_restart(self, bid: int) -> None:
        """A follower process restarts within its session: the controller sees nothing, the
        broker forgets its fetch state and must truncate again before fetching."""
        b = self.brokers[bid]
        if b.live and b.follower is not None:
            b.follower, b.truncated = None, False
            self.deliver()

    def preferred(self) -> None:
        info = PartitionInfo(*KEY, REPLICAS, self.state)
        self.apply(
            preferred_leader_elections(
                [info],
                self.live(),
                controller_epoch=self.controller_epoch,
                versions={KEY: self.version},
            )
        )

    # -- the property --------------------------------------------------------------------

    def observe_and_check(self) -> None:
        for b in self.brokers.values():
            ls = b.leader
            if ls is None:
                continue
            prev = self.hw_of.get(b.id)
            if prev is not None and prev[0] is ls:
                assert ls.high_watermark >= prev[1], "HW went backwards"
            self.hw_of[b.id] = (ls, ls.high_watermark)
            assert ls.high_watermark <= b.log.leo
        lb = self.leader()
        if lb is not None and lb.leader is not None:
            hw = lb.leader.high_watermark  # what a consumer may read now
            n = min(hw, len(self.committed))
            if lb.log.entries[:n] != self.committed[:n]:
                raise SafetyViolation(f"committed records changed: {self.committed[:n]}")
            if hw > len(self.committed):
                self.committed = lb.log.entries[:hw]
        st = self.state
        assert st.isr, "empty ISR"
        assert st.leader == NO_LEADER or st.leader in st.isr
        for r in st.isr:
            log = self.brokers[r].log.entries
            if log[: len(self.committed)] != self.committed:
                raise SafetyViolation(
                    f"ISR member {r} lacks committed records: {log} vs {self.committed}"
                )

    def run(self, ops: list[tuple[str, int, int]]) -> None:
        for op, who, n in ops:
            if op == "produce":
                self.produce(n)
            elif op == "fetch":
                self.fetch(who, n)
            elif op == "tick":
                self.tick(n * 40)
            elif op == "isr_write":
                self.complete_isr_write(who)
            elif op == "crash":
                self.crash(who)
            elif op == "restart":
                self.restart(who)
            elif op == "quiet_restart":
                self.quiet_restart(who)
            elif op == "preferred":
                self.preferred()
            self.observe_and_check()


OP_WEIGHTS = ["produce"] * 3 + ["fetch"] * 6 + ["tick", "isr_write", "isr_write"]
OP_WEIGHTS += ["crash", "restart", "restart", "quiet_restart", "preferred"]
OPS = st.lists(
    st.tuples(st.sampled_from(OP_WEIGHTS), st.sampled_from(REPLICAS), st.integers(1, 4)),
    min_size=30,  # short runs rarely reach a crash during an ISR write in flight
    max_size=200,
)
SIM = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(ops=OPS, min_isr=st.integers(1, 3))
@SIM
def test_no_committed_record_is_ever_lost_or_changed(
    ops: list[tuple[str, int, int]], min_isr: int
) -> None:
    cluster = Cluster(min_insync_replicas=min_isr)
    cluster.run(ops)
    cluster.run([("restart", b, 1) for b in REPLICAS])
    # Let everything settle: the survivors converge on the leader's log.
    settle = [("fetch", b, 1000) for b in REPLICAS] * 2 + [("isr_write", 0, 1)] * 3
    cluster.run(settle * 3)
    lb = cluster.leader()
    assert lb is not None  # every replica is back: someone in the ISR leads
    for b in cluster.brokers.values():
        assert b.log.entries == lb.log.entries
    assert lb.log.entries[: len(cluster.committed)] == cluster.committed


# A follower learns HW 0 while holding two records another follower and the leader commit
# (KIP-101 scenario 1, through the model): a quiet restart, then the other two crash.
KIP101_QUIET_RESTART = [
    ("produce", 0, 2),
    ("fetch", 1, 4),
    ("fetch", 2, 4),
    ("fetch", 1, 4),  # leader HW is still 0: broker 2's LEO counts as 0
    ("fetch", 2, 4),  # HW 2, a consumer reads both records; broker 1 learned HW 0
    ("quiet_restart", 1, 1),
    ("fetch", 1, 4),
    ("crash", 0, 1),
    ("crash", 2, 1),
]


def test_kip101_quiet_restart_keeps_committed_records() -> None:
    cluster = Cluster()
    cluster.run(KIP101_QUIET_RESTART)
    assert len(cluster.committed) == 2
    assert cluster.brokers[1].log.entries == cluster.committed


def test_truncating_to_the_hw_loses_committed_records() -> None:
    """The model catches the pre-KIP-101 rule: its property can fail."""
    with pytest.raises(SafetyViolation):
        Cluster(truncate_to_hw=True).run(KIP101_QUIET_RESTART)


# Broker 2 drops out of the ISR, catches up and is proposed back; while that write is in
# flight the leader commits more with broker 1, then the write lands.
SLOW_EXPANSION = [
    ("produce", 0, 1),
    ("fetch", 1, 4),
    ("fetch", 2, 4),
    ("fetch", 1, 4),
    ("fetch", 2, 4),
    ("produce", 0, 1),
    ("fetch", 1, 4),
    ("fetch", 1, 4),
    ("tick", 0, 3),
    ("isr_write", 0, 1),  # ISR [0, 1]
    ("fetch", 2, 4),
    ("fetch", 2, 4),  # 2 at the HW: proposed back
    ("produce", 0, 2),
    ("fetch", 1, 4),
    ("fetch", 1, 4),  # without the maximal ISR the HW passes broker 2 here
    ("isr_write", 0, 1),  # ISR [0, 1, 2]
]


def test_slow_isr_expansion_keeps_committed_records() -> None:
    cluster = Cluster()
    cluster.run(SLOW_EXPANSION)
    assert cluster.state.isr == [0, 1, 2]
    assert len(cluster.committed) == 2


def test_ignoring_the_maximal_isr_lets_a_lagging_member_into_the_isr() -> None:
    with pytest.raises(SafetyViolation):
        Cluster(leader_state=MaximalIsrIgnored).run(SLOW_EXPANSION)


# Found by random search against earlier drafts, minimised. A watch re-delivers the state
# while an ISR expansion is in flight; the HW must still wait for the new member.
REDELIVERY_DURING_EXPANSION = [
    ("tick", 1, 4),  # nobody fetched: shrink to [0]
    ("isr_write", 2, 1),
    ("crash", 2, 3),
    ("fetch", 1, 4),  # 1 proposed back
    ("restart", 2, 2),  # the state is re-delivered, unchanged
    ("produce", 2, 2),
    ("isr_write", 2, 2),  # the expansion lands: 1 must hold what was committed
]
# The controller writes the very ISR our shrink proposed; our CAS then fails, after we
# proposed an expansion. The stale failure must not end the new proposal.
STALE_OUTCOME = [
    ("tick", 1, 3),  # shrink to [0] proposed
    ("crash", 2, 2),  # controller: [0, 1]
    ("restart", 2, 3),
    ("crash", 1, 3),  # controller: [0], equal to our proposal
    ("fetch", 2, 4),  # 2 proposed back? only once the shrink's outcome is known
    ("isr_write", 0, 2),  # the shrink's CAS fails (version moved)
    ("produce", 2, 3),
    ("isr_write", 0, 1),
]


@pytest.mark.parametrize(
    ("ops", "mutant"),
    [
        (REDELIVERY_DURING_EXPANSION, ObservedIsrEndsProposal),
        (STALE_OUTCOME, EqualIsrEndsProposal),
    ],
    ids=["redelivery_during_expansion", "stale_outcome"],
)
def test_isr_write_outcomes_regressions(
    ops: list[tuple[str, int, int]], mutant: type[LeaderState]
) -> None:
    for min_isr in (1, 2, 3):
        Cluster(min_insync_replicas=min_isr).run(ops)
    with pytest.raises(SafetyViolation):
        Cluster(min_insync_replicas=3, leader_state=mutant).run(ops)
