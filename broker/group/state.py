"""One consumer group's membership state machine, Kafka's GroupCoordinator logic, sans-IO.

Every transition lives in this file (h11's ``_state.py`` rule); the request inputs that
trigger them are ``broker.group.membership.Group``, which validates each request and calls
in here. Inputs are method calls carrying ``now_ms``; each returns the outputs to act on
(``broker.group.events``): responses to deliver, possibly to requests held since an
earlier call, and group records to persist. Nothing here imports trio, reads a clock or
does I/O; the runtime calls ``tick(now_ms)`` when ``next_deadline_ms()`` passes.

States (``GroupState``) and what holds in each:

- ``EMPTY``: no members. Offsets may still be committed by a group without members
  (generation -1). The first JoinGroup starts the initial rebalance delay.
- ``PREPARING_REBALANCE``: waiting for every member to (re)join; JoinGroups are held until
  all have joined (or the initial delay / rebalance timeout passes: dynamic members that
  did not rejoin are dropped). Heartbeats answer REBALANCE_IN_PROGRESS.
- ``COMPLETING_REBALANCE``: the new generation is announced; waiting for the leader's
  SyncGroup with the assignment, and for it to be stored. SyncGroups are held.
- ``STABLE``: every member has its assignment for the current generation.
- ``DEAD``: the group has no state here (deleted, or its partition moved to another
  coordinator); every request answers COORDINATOR_NOT_AVAILABLE.

Transitions are ``TRANSITIONS`` (Kafka's validPreviousStates read forwards); any other
raises ``IllegalGroupTransition``, a bug in this file.

Invariants (checked by ``tests/group/test_state.py``'s stateful test): the generation
never decreases; a Stable or CompletingRebalance group has a leader that is a member; in
a Stable group every member has an assignment; SyncGroups are held only in
CompletingRebalance; a member holds at most one request and is never also pending; every
held request is answered exactly once.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Self

from broker.group.events import (
    GroupConfig,
    JoinGroupMember,
    JoinGroupResult,
    Output,
    Respond,
    Response,
    StoreGroup,
    SyncGroupResult,
)
from broker.group.members import Member, Roster
from broker.group.records import (
    GroupDescription,
    GroupMetadataRecord,
    describe_group,
    group_record,
)
from proto.errors import (
    NONE,
    GroupIdNotFoundError,
    NonEmptyGroupError,
    NotCoordinatorError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

__all__ = ["TRANSITIONS", "GroupState", "GroupStateMachine", "IllegalGroupTransition"]

_NOT_COORDINATOR = NotCoordinatorError.code
_REBALANCING = RebalanceInProgressError.code
_UNKNOWN_MEMBER = UnknownMemberIdError.code


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_S = GroupState
TRANSITIONS: Mapping[GroupState, frozenset[GroupState]] = MappingProxyType(
    {
        _S.EMPTY: frozenset({_S.PREPARING_REBALANCE, _S.DEAD}),
        _S.PREPARING_REBALANCE: frozenset({_S.COMPLETING_REBALANCE, _S.EMPTY, _S.DEAD}),
        _S.COMPLETING_REBALANCE: frozenset({_S.PREPARING_REBALANCE, _S.STABLE, _S.DEAD}),
        _S.STABLE: frozenset({_S.PREPARING_REBALANCE, _S.DEAD}),
        _S.DEAD: frozenset({_S.DEAD}),
    }
)
_CAN_REBALANCE = frozenset({_S.EMPTY, _S.COMPLETING_REBALANCE, _S.STABLE})


class IllegalGroupTransition(RuntimeError):
    """A transition outside TRANSITIONS: a bug in this module, never a client's fault."""


@dataclass(frozen=True, slots=True)
class SyncStore:
    """A StoreGroup of the leader's assignment: the group turns Stable once it is stored."""

    generation: int
    assignment: Mapping[str, bytes]


def _random_member_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


class GroupStateMachine:
    """One group's phases: the state, the generation, the timers and every transition.

    The request inputs (JoinGroup, SyncGroup, ...) are ``broker.group.membership.Group``,
    which validates a request and then drives the transitions defined here.
    ``new_member_id(prefix)`` makes member ids (Kafka: client or instance id + "-" + a
    UUID); tests pass a counter so runs are reproducible.
    """

    def __init__(
        self,
        group_id: str,
        *,
        config: GroupConfig | None = None,
        now_ms: int = 0,
        new_member_id: Callable[[str], str] = _random_member_id,
    ) -> None:
        self.group_id = group_id
        self.config = config or GroupConfig()
        self.roster = Roster()
        self._new_member_id = new_member_id
        self._state = _S.EMPTY
        self._state_ms = now_ms
        self._generation = 0
        self._protocol_name: str | None = None
        self._pending_sync: set[str] = set()  # members that owe this generation a SyncGroup
        self._join_deadline_ms: int | None = None
        self._initial_delay: tuple[int, int] | None = None  # (this delay, remaining)
        self._new_member_added = False
        self._sync_deadline_ms: int | None = None
        self._stores: dict[int, object | None] = {}  # what each StoreGroup waits for
        self._next_store_id = 0
        self._now = now_ms
        self._out: list[Output] = []

    # -- reading -------------------------------------------------------------------------

    @property
    def state(self) -> GroupState:
        return self._state

    @property
    def state_timestamp_ms(self) -> int:
        return self._state_ms

    @property
    def generation_id(self) -> int:
        return self._generation

    @property
    def protocol_type(self) -> str | None:
        return self.roster.protocol_type

    @property
    def protocol_name(self) -> str | None:
        return self._protocol_name

    @property
    def leader_id(self) -> str | None:
        return self.roster.leader_id

    @property
    def members(self) -> Mapping[str, Member]:
        return MappingProxyType(self.roster.members)

    @property
    def pending_sync_members(self) -> frozenset[str]:
        return frozenset(self._pending_sync)

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` next has something to do, or None."""
        timers = self._timers()
        return min(t[0] for t in timers) if timers else None

    def describe(self) -> GroupDescription:
        return describe_group(self)

    # -- time and ownership ------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Output]:
        """Fire every timer due by ``now_ms``, earliest first, each at its own deadline: a
        late tick changes nothing but when the outputs are seen (time still never goes
        back before the previous input)."""
        floor = self._now
        self._begin(now_ms)
        while due := [t for t in self._timers() if t[0] <= now_ms]:
            deadline, kind, key = min(due)
            self._now = max(deadline, floor)
            if kind == 0:
                self._join_timer_fired()
            elif kind == 1:
                self._sync_timer_fired()
            elif kind == 2:
                self._remove_member_and_update(key)  # session (or new-member) expiry
            else:
                del self.roster.pending[key]
                self._try_complete_join()
        self._now = now_ms
        return self._finish()

    def unload(self, now_ms: int) -> list[Output]:
        """Another broker coordinates the group now: held requests get NOT_COORDINATOR
        (clients look the coordinator up again) and the group goes Dead."""
        self._begin(now_ms)
        for m in self.roster.all():
            if m.awaiting_join is not None:
                self._join_error(m.awaiting_join, m.member_id, _NOT_COORDINATOR)
            if m.awaiting_sync is not None:
                self._respond(m.awaiting_sync, SyncGroupResult(_NOT_COORDINATOR))
        self._become_dead()
        return self._finish()

    def delete(self, now_ms: int) -> int:
        """DeleteGroups: only an Empty group goes (the runtime writes the tombstones)."""
        self._now = now_ms
        if self._state is _S.DEAD:
            return GroupIdNotFoundError.code
        if self._state is not _S.EMPTY:
            return NonEmptyGroupError.code
        self._become_dead()
        return NONE

    def _become_dead(self) -> None:
        self._transition(_S.DEAD)
        self.roster.clear()
        self._pending_sync.clear()
        self._stores.clear()
        self._join_deadline_ms = self._sync_deadline_ms = self._initial_delay = None

    # -- rebalancing ---------------------------------------------------------------------

    def _maybe_prepare_rebalance(self) -> None:
        if self._state in _CAN_REBALANCE:
            self._prepare_rebalance()

    def _prepare_rebalance(self) -> None:
        if self._state is _S.COMPLETING_REBALANCE:
            self._reset_and_propagate_assignment_error(_REBALANCING)
        self._pending_sync.clear()
        self._sync_deadline_ms = None
        self._new_member_added = False
        timeout = self.roster.rebalance_timeout_ms()
        if self._state is _S.EMPTY:
            delay = self.config.group_initial_rebalance_delay_ms
            self._initial_delay = (delay, max(timeout - delay, 0))
            self._join_deadline_ms = self._now + delay
        else:
            self._initial_delay = None
            self._join_deadline_ms = self._now + timeout
        self._transition(_S.PREPARING_REBALANCE)
        self._try_complete_join()

    def _try_complete_join(self) -> None:
        """Done once every member has rejoined (the initial delay never ends early)."""
        if (
            self._state is _S.PREPARING_REBALANCE
            and self._initial_delay is None
            and self.roster.all_joined()
        ):
            self._complete_join()

    def _join_timer_fired(self) -> None:
        if self._initial_delay is not None and self._new_member_added:
            delay, remaining = self._initial_delay
            if remaining > 0:  # members are still arriving: wait once more (Kafka's formula)
                self._new_member_added = False
                nxt = min(self.config.group_initial_rebalance_delay_ms, remaining)
                self._initial_delay = (nxt, max(remaining - delay, 0))
                self._join_deadline_ms = self._now + nxt
                return
        self._complete_join()

    def _complete_join(self) -> None:
        roster = self.roster
        # Dynamic members that did not rejoin in time are gone; static ones keep their
        # place (and old metadata) until their session expires (KIP-345).
        for m in roster.all():
            if m.awaiting_join is None and not m.is_static:
                self._remove(m.member_id)
        self._initial_delay = self._join_deadline_ms = None
        if len(roster) and not roster.elect_joined_leader():
            # Only absent static members remain: wait another rebalance timeout.
            self._join_deadline_ms = self._now + roster.rebalance_timeout_ms()
            return
        self._generation += 1
        self._pending_sync.clear()
        if not len(roster):
            self._protocol_name = None
            self._transition(_S.EMPTY)
            self._store(None)
            return
        self._protocol_name = roster.select_protocol()
        self._transition(_S.COMPLETING_REBALANCE)
        for m in roster.all():
            m.assignment = None
            if m.awaiting_join is not None:
                self._respond(m.awaiting_join, self._join_result(m))
                m.awaiting_join = None
            m.last_heartbeat_ms = self._now
            m.is_new = False
            self._pending_sync.add(m.member_id)
        # Kafka 3.0+: members that never send their SyncGroup are removed after this long.
        self._sync_deadline_ms = self._now + roster.rebalance_timeout_ms()

    def _sync_timer_fired(self) -> None:
        self._sync_deadline_ms = None
        laggards = [mid for mid in self.roster.members if mid in self._pending_sync]
        if self._state in (_S.COMPLETING_REBALANCE, _S.STABLE) and laggards:
            for mid in laggards:
                self._remove(mid)
            self._prepare_rebalance()

    def _synced(self, member_id: str) -> None:
        self._pending_sync.discard(member_id)
        if not self._pending_sync:
            self._sync_deadline_ms = None

    def _reset_and_propagate_assignment_error(self, error: int) -> None:
        for m in self.roster.all():
            m.assignment = None
        self._propagate_assignment(error)

    def _propagate_assignment(self, error: int) -> None:
        for m in self.roster.all():
            if m.awaiting_sync is not None:
                result = self._sync_result(m) if error == NONE else SyncGroupResult(error)
                self._respond(m.awaiting_sync, result)
                m.awaiting_sync = None
                m.last_heartbeat_ms = self._now

    def _sync_stored(self, store: SyncStore, err: int) -> None:
        if self._state is not _S.COMPLETING_REBALANCE or store.generation != self._generation:
            return  # a rebalance started since: this assignment is void
        if err != NONE:
            self._reset_and_propagate_assignment_error(err)
            self._prepare_rebalance()
            return
        for m in self.roster.all():
            m.assignment = store.assignment.get(m.member_id, b"")
        self._propagate_assignment(NONE)
        self._transition(_S.STABLE)

    # -- members -------------------------------------------------------------------------

    def _remove_member_and_update(self, member_id: str) -> None:
        self._remove(member_id)
        if self._state in (_S.STABLE, _S.COMPLETING_REBALANCE):
            self._prepare_rebalance()
        else:
            self._try_complete_join()

    def _remove(self, member_id: str) -> None:
        """Drop a member; a request it still has held is answered UNKNOWN_MEMBER_ID, so a
        live client rejoins (Kafka leaves a held SyncGroup to time out instead)."""
        m = self.roster[member_id]
        if m.awaiting_join is not None:
            self._join_error(m.awaiting_join, "", _UNKNOWN_MEMBER)
        if m.awaiting_sync is not None:
            self._respond(m.awaiting_sync, SyncGroupResult(_UNKNOWN_MEMBER))
        self.roster.remove(member_id)
        self._synced(member_id)

    def _rename(self, old_id: str, new_id: str) -> None:
        self.roster.rename(old_id, new_id)
        if old_id in self._pending_sync:
            self._pending_sync.remove(old_id)
            self._pending_sync.add(new_id)

    # -- plumbing ------------------------------------------------------------------------

    def _timers(self) -> list[tuple[int, int, str]]:
        """(deadline, kind, key): 0 join, 1 pending sync, 2 member expiry, 3 handed-out id."""
        timers: list[tuple[int, int, str]] = []
        if self._state is _S.PREPARING_REBALANCE and self._join_deadline_ms is not None:
            timers.append((self._join_deadline_ms, 0, ""))
        if self._sync_deadline_ms is not None:
            timers.append((self._sync_deadline_ms, 1, ""))
        for m in self.roster.all():
            deadline = m.expiry_deadline_ms()
            if deadline is not None:
                timers.append((deadline, 2, m.member_id))
        timers.extend((deadline, 3, mid) for mid, deadline in self.roster.pending.items())
        return timers

    def _transition(self, new: GroupState) -> None:
        if new not in TRANSITIONS[self._state]:
            raise IllegalGroupTransition(f"{self._state.value} -> {new.value}")
        self._state = new
        self._state_ms = self._now

    def _begin(self, now_ms: int) -> None:
        self._now = now_ms
        self._out = []

    def _finish(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def _respond(self, request_id: int, response: Response) -> None:
        self._out.append(Respond(request_id, response))

    def _join_error(self, request_id: int, member_id: str, error: int) -> None:
        self._respond(request_id, JoinGroupResult(error, member_id))

    def _join_result(self, m: Member) -> JoinGroupResult:
        name = self._protocol_name or ""
        leader = self.roster.leader_id or ""
        members: tuple[JoinGroupMember, ...] = ()
        if m.member_id == leader:
            members = tuple(
                JoinGroupMember(x.member_id, x.group_instance_id, x.metadata(name))
                for x in self.roster.all()
            )
        ptype = self.roster.protocol_type
        return JoinGroupResult(
            NONE, m.member_id, self._generation, ptype, self._protocol_name, leader, members
        )

    def _sync_result(self, m: Member) -> SyncGroupResult:
        ptype = self.roster.protocol_type
        return SyncGroupResult(NONE, m.assignment or b"", ptype, self._protocol_name)

    def _store(self, store: object | None, assignment: Mapping[str, bytes] | None = None) -> None:
        store_id = self._next_store_id
        self._next_store_id += 1
        self._stores[store_id] = store
        self._out.append(StoreGroup(store_id, group_record(self, assignment)))

    @classmethod
    def from_record(
        cls,
        record: GroupMetadataRecord,
        *,
        now_ms: int,
        config: GroupConfig | None = None,
        new_member_id: Callable[[str], str] = _random_member_id,
    ) -> Self:
        """Rebuild a group on a new coordinator: Stable at the stored generation, or
        Empty. Every member's session starts now (Kafka's onGroupLoaded)."""
        group = cls(record.group_id, config=config, now_ms=now_ms, new_member_id=new_member_id)
        group._generation = record.generation
        group.roster.protocol_type = record.protocol_type
        if not record.members or record.protocol is None:
            return group
        group._protocol_name = record.protocol
        for r in record.members:
            proto = ((record.protocol, r.subscription),)
            m = Member(
                r.member_id,
                r.group_instance_id,
                r.client_id,
                r.client_host,
                r.rebalance_timeout_ms,
                r.session_timeout_ms,
                record.protocol_type or "",
                proto,
                last_heartbeat_ms=now_ms,
                assignment=r.assignment,
            )
            group.roster.add(m)
        if record.leader in group.roster:
            group.roster.leader_id = record.leader
        group._state = _S.STABLE
        limit = group.config.group_max_size
        if limit is not None and len(group.roster) > limit:
            group._prepare_rebalance()  # lets the surplus commit before it is shed
        return group
