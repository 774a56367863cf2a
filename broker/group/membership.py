"""The requests of the group membership protocol for one group, sans-IO.

``Group`` is what the runtime drives: JoinGroup (with KIP-394's MEMBER_ID_REQUIRED and
KIP-345's static members), SyncGroup, Heartbeat, LeaveGroup, the OffsetCommit check and
the outcome of group-record appends. Each validates the request in Kafka's order (Dead,
fenced instance, unknown member, generation) and then moves the group through the
transitions ``broker.group.state`` defines; every call returns its outputs.

Nothing here imports trio, reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker.group.events import (
    HeartbeatResult,
    JoinGroupRequest,
    JoinGroupResult,
    LeaveGroupResult,
    MemberIdentity,
    MemberLeaveResult,
    Output,
    SyncGroupResult,
)
from broker.group.members import Member, Protocols
from broker.group.records import store_error
from broker.group.state import GroupState, GroupStateMachine, SyncStore
from broker.group.subscriptions import owes_follow_up_rejoin, same_subscriptions
from proto.errors import (
    NONE,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupMaxSizeReachedError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidSessionTimeoutError,
    MemberIdRequiredError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

__all__ = ["Group"]

_S = GroupState
_UNAVAILABLE = CoordinatorNotAvailableError.code
_FENCED = FencedInstanceIdError.code
_INCONSISTENT = InconsistentGroupProtocolError.code
_REBALANCING = RebalanceInProgressError.code
_UNKNOWN_MEMBER = UnknownMemberIdError.code


@dataclass(frozen=True, slots=True)
class _StaticRejoinStore:
    request_id: int
    old_member_id: str
    new_member_id: str
    old_protocols: Protocols
    old_timeouts: tuple[int, int]  # (session, rebalance)
    leader_id: str  # the leader before the rejoin, which the response reports


class Group(GroupStateMachine):
    """The membership of one group on its coordinator."""

    # -- JoinGroup -----------------------------------------------------------------------

    def join(self, request_id: int, req: JoinGroupRequest, now_ms: int) -> list[Output]:
        self._begin(now_ms)
        cfg, roster = self.config, self.roster
        known = roster.members.get(req.member_id)
        if not (
            cfg.group_min_session_timeout_ms
            <= req.session_timeout_ms
            <= cfg.group_max_session_timeout_ms
        ):
            self._join_error(request_id, req.member_id, InvalidSessionTimeoutError.code)
        elif self._over_capacity(req, known):
            if known is not None:
                self._remove_member_and_update(known.member_id)
            self._join_error(request_id, "", GroupMaxSizeReachedError.code)
        elif self._state is _S.DEAD:
            self._join_error(request_id, req.member_id, _UNAVAILABLE)
        elif not roster.supports(req.protocol_type, req.protocols):
            self._join_error(request_id, req.member_id, _INCONSISTENT)
        elif not req.member_id:
            self._join_unknown(request_id, req)
        else:
            self._join_known(request_id, req)
        self._try_complete_join()
        return self._finish()

    def _over_capacity(self, req: JoinGroupRequest, known: Member | None) -> bool:
        limit, size = self.config.group_max_size, len(self.roster)
        if limit is None:
            return False
        if not req.member_id:  # a static member's restart does not add to the group
            return req.group_instance_id not in self.roster.static and size >= limit
        # A group loaded over a lowered limit sheds the members that have not rejoined.
        return size > limit and known is not None and known.awaiting_join is None

    def _join_unknown(self, request_id: int, req: JoinGroupRequest) -> None:
        instance = req.group_instance_id
        new_id = self.roster.fresh_member_id(self._new_member_id, instance or req.client_id)
        if instance is not None and instance in self.roster.static:
            self._replace_static_member(request_id, req, new_id)
        elif instance is not None:
            self._add_member_and_rebalance(request_id, Member.from_join(req, new_id, self._now))
        else:
            # KIP-394: hand out an id and have the client come back with it, so a client
            # that gives up mid-join never leaves an anonymous member behind.
            self.roster.pending[new_id] = self._now + req.session_timeout_ms
            self._join_error(request_id, new_id, MemberIdRequiredError.code)

    def _join_known(self, request_id: int, req: JoinGroupRequest) -> None:
        member_id, instance = req.member_id, req.group_instance_id
        if member_id in self.roster.pending:
            if instance is not None:  # ids handed out by MEMBER_ID_REQUIRED are dynamic
                self._join_error(request_id, member_id, _UNKNOWN_MEMBER)
            else:
                m = Member.from_join(req, member_id, self._now)
                self._add_member_and_rebalance(request_id, m)
            return
        error = self._validate_member(member_id, instance)
        if error is None and instance is not None and instance not in self.roster.static:
            error = _UNKNOWN_MEMBER
        if error is not None:
            self._join_error(request_id, member_id, error)
            return
        m = self.roster[member_id]
        unchanged = m.matches(req.protocols)
        if (self._state is _S.COMPLETING_REBALANCE and unchanged) or (
            self._state is _S.STABLE and unchanged and member_id != self.roster.leader_id
        ):
            # Nothing changed (it may have missed its JoinGroup response): the current
            # generation again, no rebalance.
            self._respond(request_id, self._join_result(m))
        else:
            # New metadata, or the leader rejoining (it may have seen topic metadata
            # change), or a rebalance collecting joins.
            self._update_member(m, request_id, req)
            self._maybe_prepare_rebalance()

    def _add_member_and_rebalance(self, request_id: int, m: Member) -> None:
        if self._state is _S.PREPARING_REBALANCE and self._generation == 0:
            self._new_member_added = True  # extends the initial rebalance delay
        m.awaiting_join = request_id
        self.roster.add(m)
        self._maybe_prepare_rebalance()

    def _update_member(self, m: Member, request_id: int, req: JoinGroupRequest) -> None:
        if m.awaiting_join is not None:  # superseded by the member's newer JoinGroup
            self._respond(m.awaiting_join, JoinGroupResult(_REBALANCING, m.member_id))
        m.protocols = req.protocols
        m.session_timeout_ms, m.rebalance_timeout_ms = (
            req.session_timeout_ms,
            req.rebalance_timeout_ms,
        )
        m.awaiting_join = request_id

    def _replace_static_member(self, request_id: int, req: JoinGroupRequest, new_id: str) -> None:
        """KIP-345: a known group.instance.id came back without a member id (a restart).

        The old member id is fenced; the new one takes its place, assignment and possibly
        leadership. In a Stable group with unchanged protocols there is no rebalance: the
        record is stored, then the JoinGroup answered with the current generation and the
        leader id from *before* the rejoin, so the member never computes an assignment a
        Stable group would not broadcast (Kafka 2.4-3.1). For consumers "unchanged" means
        the same subscriptions, whatever they own, unless the old incarnation still owed
        the group a KIP-429 follow-up rejoin.
        """
        old_id = self.roster.static[req.group_instance_id or ""]
        m = self.roster[old_id]
        if m.awaiting_join is not None:
            self._respond(m.awaiting_join, JoinGroupResult(_FENCED, old_id))
            m.awaiting_join = None
        if m.awaiting_sync is not None:
            self._respond(m.awaiting_sync, SyncGroupResult(_FENCED))
            m.awaiting_sync = None
        store = _StaticRejoinStore(
            request_id,
            old_id,
            new_id,
            m.protocols,
            (m.session_timeout_ms, m.rebalance_timeout_ms),
            self.roster.leader_id or "",
        )
        # What it asks for, not what it holds: a restarted consumer owns nothing (see
        # broker/group/subscriptions.py). Its fresh metadata is stored all the same.
        unchanged = same_subscriptions(m.protocol_type, m.protocols, req.protocols)
        if unchanged and self._state is _S.STABLE and self._protocol_name is not None:
            metadata = m.metadata(self._protocol_name)
            unchanged = not owes_follow_up_rejoin(m.protocol_type, metadata, m.assignment)
        self._rename(old_id, new_id)
        m.last_heartbeat_ms = self._now
        m.client_id, m.client_host = req.client_id, req.client_host
        self._update_member(m, request_id, req)
        if self._state is _S.STABLE:
            if unchanged and self.roster.select_protocol() == self._protocol_name:
                self._store(store)
            else:
                self._prepare_rebalance()
        elif self._state is _S.COMPLETING_REBALANCE:
            self._prepare_rebalance()  # the leader may be assigning to the old id right now

    # -- SyncGroup, Heartbeat, LeaveGroup, OffsetCommit ----------------------------------

    def sync(
        self,
        request_id: int,
        *,
        member_id: str,
        generation_id: int,
        assignments: Mapping[str, bytes],
        now_ms: int,
        group_instance_id: str | None = None,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> list[Output]:
        """SyncGroup. The leader's ``assignments`` are stored as they are (members it left
        out get an empty one); the others' are ignored."""
        self._begin(now_ms)
        error = self._validate_generation(member_id, group_instance_id, generation_id)
        if error is None and (
            protocol_type not in (None, self.roster.protocol_type)
            or protocol_name not in (None, self._protocol_name)
        ):
            error = _INCONSISTENT
        if error is None and self._state is _S.PREPARING_REBALANCE:
            error = _REBALANCING
        if error is not None:
            self._respond(request_id, SyncGroupResult(error))
            return self._finish()
        m = self.roster[member_id]
        self._synced(member_id)
        if self._state is _S.STABLE:
            m.last_heartbeat_ms = now_ms
            self._respond(request_id, self._sync_result(m))
            return self._finish()
        if m.awaiting_sync is not None:  # superseded by the member's newer SyncGroup
            self._respond(m.awaiting_sync, SyncGroupResult(_REBALANCING))
        m.awaiting_sync = request_id
        if member_id == self.roster.leader_id:
            full = {mid: bytes(assignments.get(mid, b"")) for mid in self.roster.members}
            self._store(SyncStore(self._generation, full), full)
        return self._finish()

    def heartbeat(
        self,
        request_id: int,
        *,
        member_id: str,
        generation_id: int,
        now_ms: int,
        group_instance_id: str | None = None,
    ) -> list[Output]:
        self._begin(now_ms)
        error = self._validate_generation(member_id, group_instance_id, generation_id)
        if error is None:
            # A member with its JoinGroup answer may heartbeat before its SyncGroup returns
            # (Kafka 2.5+): only a rebalance still collecting joins says REBALANCE_IN_PROGRESS.
            self.roster[member_id].last_heartbeat_ms = now_ms
            error = _REBALANCING if self._state is _S.PREPARING_REBALANCE else NONE
        self._respond(request_id, HeartbeatResult(error))
        return self._finish()

    def leave(
        self, request_id: int, members: Sequence[MemberIdentity], now_ms: int
    ) -> list[Output]:
        """LeaveGroup for a batch (KIP-345): by member id, or by instance id alone (an
        operator removing a static member)."""
        self._begin(now_ms)
        if self._state is _S.DEAD:
            self._respond(request_id, LeaveGroupResult(_UNAVAILABLE))
            return self._finish()
        roster, results = self.roster, []
        for who in members:
            mid, instance = who.member_id, who.group_instance_id
            error = NONE
            if mid and roster.is_fenced(mid, instance):
                error = _FENCED
            elif mid in roster.pending and instance is None:
                del roster.pending[mid]
                self._try_complete_join()
            elif instance is not None and instance in roster.static:
                self._remove_member_and_update(roster.static[instance])
            elif mid in roster:
                self._remove_member_and_update(mid)
            else:
                error = _UNKNOWN_MEMBER
            results.append(MemberLeaveResult(mid, instance, error))
        self._respond(request_id, LeaveGroupResult(NONE, tuple(results)))
        return self._finish()

    def validate_commit(
        self,
        *,
        member_id: str,
        generation_id: int,
        now_ms: int,
        group_instance_id: str | None = None,
    ) -> int:
        """The error an OffsetCommit from this member gets (0: store it).

        Generation -1 with no member id is a client managing its own partitions, allowed
        only while the group has no members. A valid commit counts as a heartbeat.
        """
        if self._state is _S.DEAD:
            return _UNAVAILABLE
        if generation_id < 0 and not member_id and group_instance_id is None:
            return NONE if self._state is _S.EMPTY else _UNKNOWN_MEMBER
        error = self._validate_generation(member_id, group_instance_id, generation_id)
        if error is not None:
            return error
        if self._state is _S.COMPLETING_REBALANCE:
            return _REBALANCING  # it has the new generation but not its assignment yet
        self.roster[member_id].last_heartbeat_ms = now_ms
        return NONE

    # -- storage -------------------------------------------------------------------------

    def store_completed(self, store_id: int, error: int, now_ms: int) -> list[Output]:
        """The append of StoreGroup ``store_id`` ended with ``error`` (0: replicated).
        Completions the group no longer waits for (it went Dead) are ignored."""
        self._begin(now_ms)
        store = self._stores.pop(store_id, None)
        err = store_error(error) if error != NONE else NONE
        if isinstance(store, SyncStore):
            self._sync_stored(store, err)
        elif isinstance(store, _StaticRejoinStore):
            self._static_rejoin_stored(store, err)
        return self._finish()

    def _static_rejoin_stored(self, store: _StaticRejoinStore, err: int) -> None:
        m = self.roster.members.get(store.new_member_id)
        if self._state is not _S.STABLE or m is None or m.awaiting_join != store.request_id:
            return  # a rebalance has it (and will answer it), or a leave answered it
        m.awaiting_join = None
        if err != NONE:  # undo: the old incarnation is the member again
            self._rename(store.new_member_id, store.old_member_id)
            m.protocols = store.old_protocols
            m.session_timeout_ms, m.rebalance_timeout_ms = store.old_timeouts
            self._join_error(store.request_id, store.new_member_id, err)
            return
        result = JoinGroupResult(
            NONE,
            m.member_id,
            self._generation,
            self.roster.protocol_type,
            self._protocol_name,
            store.leader_id,
        )
        self._respond(store.request_id, result)

    # -- validation ----------------------------------------------------------------------

    def _validate_generation(
        self, member_id: str, instance: str | None, generation_id: int
    ) -> int | None:
        error = self._validate_member(member_id, instance)
        if error is None and generation_id != self._generation:
            error = IllegalGenerationError.code
        return error

    def _validate_member(self, member_id: str, instance: str | None) -> int | None:
        if self._state is _S.DEAD:
            return _UNAVAILABLE
        if self.roster.is_fenced(member_id, instance):
            return _FENCED
        return None if member_id in self.roster else _UNKNOWN_MEMBER
