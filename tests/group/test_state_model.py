"""Model-based: random JoinGroup / SyncGroup / Heartbeat / LeaveGroup / OffsetCommit / clock
/ store-completion sequences from a handful of dynamic and static members, with the
group's invariants checked after every step:

- the generation never decreases, nor does any member's view of it;
- one leader, a member, whenever the group has members; every member of a Stable group
  has an assignment and supports the chosen protocol;
- a member is in exactly one place (member or handed-out id, one held request at most);
  SyncGroups are held only in CompletingRebalance;
- every request is answered exactly once (the harness checks twice), every request still
  unanswered is one the group holds, and something (a timer or a store) will answer it;
- a successful SyncGroup returns exactly what that generation's leader assigned to it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker.group import GroupConfig, GroupState, JoinGroupResult, MemberIdentity, SyncGroupResult
from proto.errors import BrokerRequestTimedOutError, NotEnoughReplicasError
from tests.group.harness import RANGE, Harness

S = GroupState
PROTOCOLS = st.sampled_from(
    [
        RANGE,
        RANGE,
        RANGE,
        (("range", b"other topics"),),
        (("roundrobin", b"rr"), ("range", b"range-meta")),
        (("roundrobin", b"rr"),),
    ]
)
SESSIONS = st.sampled_from([6_000, 10_000, 30_000])
REBALANCES = st.sampled_from([5_000, 20_000, 60_000])
CLIENTS = st.sampled_from(["a", "b", "c", "d"])
INSTANCES = st.one_of(st.none(), st.sampled_from(["s1", "s2"]))
STORE_ERRORS = st.sampled_from(
    [0, 0, 0, NotEnoughReplicasError.code, BrokerRequestTimedOutError.code]
)


class GroupModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(GroupConfig(group_max_size=6))
        self.known: list[str] = []  # every member id a response has shown
        self.instance_of: dict[str, str | None] = {}
        # rid -> (kind, instance for joins / assignment key for syncs, generation)
        self.requests: dict[int, tuple[str, str | None, int]] = {}
        self.seen: set[int] = set()
        self.last_join: dict[str, JoinGroupResult] = {}
        self.leader_keys: dict[int, set[str]] = {}  # generation -> members the leader listed
        self.generation = 0

    # -- inputs --------------------------------------------------------------------------

    @rule(
        client=CLIENTS,
        instance=INSTANCES,
        protocols=PROTOCOLS,
        session=SESSIONS,
        rebalance=REBALANCES,
    )
    def join_without_id(
        self,
        client: str,
        instance: str | None,
        protocols: tuple[tuple[str, bytes], ...],
        session: int,
        rebalance: int,
    ) -> None:
        rid = self.h.join(
            instance=instance,
            client=client,
            protocols=protocols,
            session_ms=session,
            rebalance_ms=rebalance,
        )
        self.requests[rid] = ("join", instance, -1)

    @precondition(lambda self: self.known)
    @rule(
        data=st.data(),
        protocols=PROTOCOLS,
        session=SESSIONS,
        rebalance=REBALANCES,
    )
    def join_with_id(
        self,
        data: st.DataObject,
        protocols: tuple[tuple[str, bytes], ...],
        session: int,
        rebalance: int,
    ) -> None:
        member = self._pick(data)
        instance = self._instance(member)
        rid = self.h.join(
            member,
            instance=instance,
            client=member[0],
            protocols=protocols,
            session_ms=session,
            rebalance_ms=rebalance,
        )
        self.requests[rid] = ("join", instance, -1)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        member = self._pick(data)
        generation = data.draw(self._generation_for(member))
        assignments: dict[str, bytes] = {}
        joined = self.last_join.get(member)
        if joined is not None and joined.is_leader and joined.generation_id == generation:
            assignments = self._assign(joined)
        instance = self._instance(member)
        rid = self.h.sync(member, generation, assignments, instance)
        self.requests[rid] = ("sync", instance or member, generation)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        member = self._pick(data)
        generation = data.draw(self._generation_for(member))
        rid_before = set(self.h.issued)
        self.h.heartbeat(member, generation, self._instance(member))
        for rid in self.h.issued - rid_before:
            self.requests[rid] = ("heartbeat", None, generation)

    @precondition(lambda self: self.known)
    @rule(data=st.data(), by_instance=st.booleans())
    def leave(self, data: st.DataObject, by_instance: bool) -> None:
        member = self._pick(data)
        instance = self._instance(member)
        who = MemberIdentity("" if by_instance and instance else member, instance)
        rid_before = set(self.h.issued)
        self.h.leave(who)
        for rid in self.h.issued - rid_before:
            self.requests[rid] = ("leave", None, -1)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        member = self._pick(data)
        generation = data.draw(self._generation_for(member))
        error = self.h.commit(member, generation, self._instance(member))
        if error == 0:
            assert member in self.h.group.members and generation == self.h.group.generation_id
            assert self.h.state() in (S.STABLE, S.PREPARING_REBALANCE)

    @rule(ms=st.sampled_from([0, 1, 500, 3_000, 6_000, 20_000, 70_000]))
    def tick(self, ms: int) -> None:
        self.h.advance(ms)

    @precondition(lambda self: self.h.stores)
    @rule(data=st.data(), error=STORE_ERRORS)
    def store_completed(self, data: st.DataObject, error: int) -> None:
        store = data.draw(st.sampled_from(self.h.stores))
        self.h.stores.remove(store)
        self.h.collect(self.h.group.store_completed(store.store_id, error, self.h.now))

    @precondition(lambda self: self.h.group.roster.pending)
    @rule(protocols=PROTOCOLS, session=SESSIONS, rebalance=REBALANCES)
    def join_with_handed_out_id(
        self, protocols: tuple[tuple[str, bytes], ...], session: int, rebalance: int
    ) -> None:
        """What a client does right after MEMBER_ID_REQUIRED."""
        member = sorted(self.h.group.roster.pending)[0]
        rid = self.h.join(
            member,
            client=member[0],
            protocols=protocols,
            session_ms=session,
            rebalance_ms=rebalance,
        )
        self.requests[rid] = ("join", None, -1)

    @precondition(lambda self: self.h.group.members)
    @rule()
    def everyone_rejoins(self) -> None:
        """Drives a rebalance to its end: every member rejoins unchanged."""
        for member in list(self.h.group.members):
            m = self.h.group.members.get(member)
            if m is not None and m.awaiting_join is None:
                rid = self.h.join(
                    member,
                    instance=m.group_instance_id,
                    client=member[0],
                    protocols=m.protocols,
                    session_ms=m.session_timeout_ms,
                    rebalance_ms=m.rebalance_timeout_ms,
                )
                self.requests[rid] = ("join", m.group_instance_id, -1)

    @precondition(lambda self: self.h.group.members)
    @rule()
    def everyone_syncs_and_heartbeats(self) -> None:
        """What live clients do between rebalances: sync (the leader with its
        assignment) and heartbeat with the generation they were given."""
        for member in sorted(self.h.group.members, key=lambda mid: mid != self.h.group.leader_id):
            joined = self.last_join.get(member)
            if joined is None or member not in self.h.group.members:
                continue
            instance = self._instance(member)
            generation = joined.generation_id
            assignments: dict[str, bytes] = {}
            if joined.is_leader:
                assignments = self._assign(joined)
            rid = self.h.sync(member, generation, assignments, instance)
            self.requests[rid] = ("sync", instance or member, generation)
            if member in self.h.group.members:
                rid_before = set(self.h.issued)
                self.h.heartbeat(member, generation, instance)
                for rid in self.h.issued - rid_before:
                    self.requests[rid] = ("heartbeat", None, generation)

    @rule()
    def settle(self) -> None:
        """Live clients doing everything right for a while: handed-out ids join, the
        rebalance runs out its clock, everyone syncs, the record is stored."""
        for _ in sorted(self.h.group.roster.pending):
            self.join_with_handed_out_id(RANGE, 10_000, 20_000)
        self.answers_are_consistent()
        deadline = self.h.group.next_deadline_ms()
        if self.h.state() is S.PREPARING_REBALANCE and deadline is not None:
            self.h.advance(max(deadline - self.h.now, 0))
        self.answers_are_consistent()
        if self.h.group.members:
            self.everyone_syncs_and_heartbeats()
        for store in list(self.h.stores):
            self.h.stores.remove(store)
            self.h.collect(self.h.group.store_completed(store.store_id, 0, self.h.now))
        self.answers_are_consistent()

    def _assign(self, joined: JoinGroupResult) -> dict[str, bytes]:
        g = joined.generation_id
        return {
            m.member_id: f"{m.group_instance_id or m.member_id}@{g}".encode()
            for m in joined.members
        }

    def _instance(self, member: str) -> str | None:
        """A client knows its own group.instance.id, even before any response."""
        current = self.h.group.members.get(member)
        return current.group_instance_id if current else self.instance_of.get(member)

    def _pick(self, data: st.DataObject) -> str:
        """Mostly a current member; sometimes any id ever seen (stale, fenced, gone)."""
        current = sorted(self.h.group.members)
        if current and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(current))
        return data.draw(st.sampled_from(self.known))

    def _generation_for(self, member: str) -> st.SearchStrategy[int]:
        current = self.h.group.generation_id
        seen = self.last_join.get(member)
        mine = seen.generation_id if seen else -1
        return st.sampled_from([current, current, mine, mine, current - 1])

    # -- reading the answers -------------------------------------------------------------

    @invariant()
    def answers_are_consistent(self) -> None:
        for rid, reply in self.h.replies.items():
            if rid in self.seen:
                continue
            self.seen.add(rid)
            kind, key, generation = self.requests[rid]
            if isinstance(reply, JoinGroupResult):
                assert kind == "join"
                self._joined(reply, key)
            elif isinstance(reply, SyncGroupResult) and reply.error == 0:
                assert kind == "sync" and key is not None
                listed = self.leader_keys.get(generation, set())
                expected = f"{key}@{generation}".encode() if key in listed else b""
                assert reply.assignment == expected

    def _joined(self, reply: JoinGroupResult, instance: str | None) -> None:
        if not reply.member_id:
            return
        if reply.member_id not in self.instance_of:
            self.known.append(reply.member_id)
            self.instance_of[reply.member_id] = instance
        if reply.error != 0:
            return
        previous = self.last_join.get(reply.member_id)
        assert previous is None or previous.generation_id <= reply.generation_id
        assert reply.generation_id <= self.h.group.generation_id
        self.last_join[reply.member_id] = reply
        if reply.is_leader:
            ids = [m.member_id for m in reply.members]
            assert reply.member_id in ids and len(set(ids)) == len(ids)
            keys = {m.group_instance_id or m.member_id for m in reply.members}
            assert self.leader_keys.setdefault(reply.generation_id, keys) == keys

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def group_invariants(self) -> None:
        g = self.h.group
        assert g.generation_id >= self.generation
        self.generation = g.generation_id
        members = g.members
        roster = g.roster
        if members:
            assert g.leader_id in members
        else:
            assert g.state in (S.EMPTY, S.PREPARING_REBALANCE, S.DEAD)
        if g.state is S.EMPTY:
            assert not members and g.protocol_name is None
        if g.state is S.STABLE:
            assert all(m.assignment is not None for m in members.values())
            assert all(g.protocol_name in m.protocol_names for m in members.values())
        assert not set(roster.pending) & set(members)
        assert roster.static == {
            m.group_instance_id: mid for mid, m in members.items() if m.group_instance_id
        }
        held: set[int] = set()
        for m in members.values():
            assert m.awaiting_join is None or m.awaiting_sync is None
            if m.awaiting_sync is not None:
                assert g.state is S.COMPLETING_REBALANCE
                held.add(m.awaiting_sync)
            if m.awaiting_join is not None:
                held.add(m.awaiting_join)
        assert held == self.h.outstanding
        if held:  # liveness: something will answer them
            assert g.next_deadline_ms() is not None or self.h.stores


GroupModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGroupModel = GroupModel.TestCase
