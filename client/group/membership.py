"""One consumer's membership in its group, sans-IO: state, generation and decisions.

This is the member's half of Kafka's classic group protocol (AbstractCoordinator and
ConsumerCoordinator's logic without their network code). ``Membership`` holds the state,
the generation and the "must rejoin" flag, moving only along ``TRANSITIONS``;
``rebalance_changes`` says what a finished rebalance revokes and adds under the eager
and the cooperative protocol; ``commit_refusal`` says why a commit cannot be sent; the
leader's ``perform_assignment`` runs the chosen assignor. What each response's error code
makes the member do is in ``client.group.responses``; its timers in
``client.group.timers``.

Nothing here imports trio, reads a clock or does I/O: the runtime
(``client.group.coordinator``) feeds responses in and carries the decisions out.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from client.assignors import (
    ASSIGNORS,
    Assignment,
    RebalanceProtocol,
    Subscription,
    decode_subscription,
    encode_assignment,
)
from client.errors import CommitFailedError, ConfigurationError, RebalanceInProgressError
from client.types import TopicPartition
from proto.group_messages import NO_GENERATION, UNKNOWN_MEMBER_ID

__all__ = [
    "NO_GENERATION_INFO",
    "POLL_TIMEOUT_REASON",
    "TRANSITIONS",
    "Generation",
    "IllegalMemberTransition",
    "MemberState",
    "Membership",
    "RebalanceChanges",
    "common_rebalance_protocol",
    "perform_assignment",
    "rebalance_changes",
]

POLL_TIMEOUT_REASON = "consumer poll timeout has expired"


class MemberState(enum.Enum):
    """Where this member stands (Kafka's AbstractCoordinator.MemberState).

    UNJOINED: not in a rebalance: never joined, left, kicked out, or its last join
    failed (the generation may still be valid then). PREPARING_REBALANCE: JoinGroup sent,
    not answered; partitions owned under the cooperative protocol keep being consumed,
    but no commit is sent (the coordinator would refuse it once the join completes).
    COMPLETING_REBALANCE: JoinGroup answered with a new generation, SyncGroup not yet;
    heartbeats flow again. STABLE: the member has its assignment for the generation;
    only now does it commit with that generation.
    """

    UNJOINED = "unjoined"
    PREPARING_REBALANCE = "preparing_rebalance"
    COMPLETING_REBALANCE = "completing_rebalance"
    STABLE = "stable"


_M = MemberState
TRANSITIONS: Mapping[MemberState, frozenset[MemberState]] = {
    _M.UNJOINED: frozenset({_M.PREPARING_REBALANCE}),
    _M.PREPARING_REBALANCE: frozenset({_M.COMPLETING_REBALANCE, _M.UNJOINED}),
    _M.COMPLETING_REBALANCE: frozenset({_M.STABLE, _M.UNJOINED, _M.PREPARING_REBALANCE}),
    _M.STABLE: frozenset({_M.PREPARING_REBALANCE, _M.UNJOINED}),
}


class IllegalMemberTransition(RuntimeError):
    """A bug: the runtime moved the member along an edge TRANSITIONS does not have."""


@dataclass(frozen=True, slots=True)
class Generation:
    """The generation the member last joined: its id in it, and the assignor chosen."""

    generation_id: int
    member_id: str
    protocol_name: str | None

    @property
    def valid(self) -> bool:
        return self.generation_id != NO_GENERATION and self.member_id != UNKNOWN_MEMBER_ID


NO_GENERATION_INFO = Generation(NO_GENERATION, UNKNOWN_MEMBER_ID, None)


class Membership:
    """State, generation and the rejoin flag of one member; every change goes through a
    method named after its cause, so the runtime cannot forget half of a transition."""

    def __init__(self, group_instance_id: str | None = None) -> None:
        self.group_instance_id = group_instance_id
        self.state = MemberState.UNJOINED
        self.generation = NO_GENERATION_INFO
        self.member_id = UNKNOWN_MEMBER_ID  # kept across a reset only for KIP-394's id
        self.rejoin_needed = True
        self.rejoin_reason = "initial join"
        # Why the member last lost its generation; what a refused commit explains.
        self.reset_reason: str | None = None
        self.is_leader = False

    # -- reading ------------------------------------------------------------------------

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def rebalance_in_progress(self) -> bool:
        return self.state in (_M.PREPARING_REBALANCE, _M.COMPLETING_REBALANCE)

    @property
    def sends_heartbeats(self) -> bool:
        """Kafka 2.5+: a member heartbeats from its JoinGroup answer on."""
        return self.state in (_M.COMPLETING_REBALANCE, _M.STABLE) and self.generation.valid

    def generation_if_stable(self) -> Generation | None:
        return self.generation if self.state is _M.STABLE and self.generation.valid else None

    # -- transitions --------------------------------------------------------------------

    def _move(self, new: MemberState) -> None:
        if new is not self.state and new not in TRANSITIONS[self.state]:
            raise IllegalMemberTransition(f"{self.state.name} -> {new.name}")
        self.state = new

    def request_rejoin(self, reason: str) -> None:
        if not self.rejoin_needed:
            self.rejoin_reason = reason
        self.rejoin_needed = True

    def join_sent(self) -> None:
        """JoinGroup is on its way: the flag is consumed; a later request sets it again."""
        self._move(_M.PREPARING_REBALANCE)
        self.rejoin_needed = False

    def member_id_required(self, member_id: str) -> None:
        """KIP-394: the coordinator handed out our id; the next JoinGroup carries it."""
        self.member_id = member_id

    def joined(self, generation_id: int, member_id: str, protocol: str | None, leader: str) -> None:
        self._move(_M.COMPLETING_REBALANCE)
        self.member_id = member_id
        self.generation = Generation(generation_id, member_id, protocol)
        self.is_leader = member_id == leader
        self.reset_reason = None

    def synced(self) -> None:
        self._move(_M.STABLE)

    def rebalance_failed(self, reason: str) -> None:
        """The join or sync failed in a way that keeps the generation (coordinator moved,
        group rebalancing again): try again."""
        self._move(_M.UNJOINED)
        self.request_rejoin(reason)

    def reset_generation(self, reason: str, *, forget_member_id: bool = True) -> None:
        """The coordinator no longer knows this member or this generation (or it left on
        its own): what it owned is lost, and it joins again from scratch."""
        self._move(_M.UNJOINED)
        self.generation = NO_GENERATION_INFO
        if forget_member_id:
            self.member_id = UNKNOWN_MEMBER_ID
        self.is_leader = False
        self.reset_reason = reason
        self.request_rejoin(reason)

    def left(self, reason: str) -> None:
        """LeaveGroup sent (or, for a static member, skipped): as Kafka's
        resetGenerationOnLeaveGroup."""
        self.reset_generation(reason)

    # -- what a commit may do -----------------------------------------------------------

    def commit_refusal(self) -> Exception | None:
        """Why an OffsetCommit of a subscribed (group-managed) consumer cannot be sent now,
        or None: then it goes with ``generation_if_stable()``."""
        if self.generation_if_stable() is not None:
            return None
        if self.rebalance_in_progress or (self.generation.valid and self.state is _M.UNJOINED):
            return RebalanceInProgressError(
                "offset commit cannot be completed since the consumer is undergoing a "
                "rebalance; complete it by calling poll() and then retry the commit"
            )
        return commit_failed(self.reset_reason)


def commit_failed(reset_reason: str | None) -> CommitFailedError:
    """Kafka's explanation, specific about the poll timeout when that is what happened."""
    if reset_reason == POLL_TIMEOUT_REASON:
        return CommitFailedError(
            "commit cannot be completed since the consumer left the group: the time "
            "between subsequent calls to poll() was longer than max_poll_interval_ms, "
            "which typically means the poll loop spends too much time processing records. "
            "Increase max_poll_interval_ms, or reduce the size of the batches poll() returns "
            "with max_poll_records; the next poll() rejoins the group"
        )
    why = f" ({reset_reason})" if reset_reason else ""
    return CommitFailedError(
        "commit cannot be completed since the group has already rebalanced and assigned "
        f"the partitions to another member{why}. This usually means the time between "
        "subsequent calls to poll() was longer than max_poll_interval_ms: increase "
        "max_poll_interval_ms or reduce max_poll_records; the next poll() rejoins the group"
    )


# -- the protocol family ------------------------------------------------------------------


def common_rebalance_protocol(names: Sequence[str]) -> RebalanceProtocol:
    """Kafka's rule: the most advanced protocol every configured assignor supports
    (COOPERATIVE only if all of them do); none in common is a configuration error."""
    common: set[RebalanceProtocol] | None = None
    for name in names:
        protocols = set(ASSIGNORS[name].protocols)
        common = protocols if common is None else common & protocols
    if not common:
        raise ConfigurationError(
            f"partition_assignment_strategy {list(names)!r}: the assignors share no "
            "rebalance protocol"
        )
    return (
        RebalanceProtocol.COOPERATIVE
        if RebalanceProtocol.COOPERATIVE in common
        else (RebalanceProtocol.EAGER)
    )


# -- what a rebalance changes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RebalanceChanges:
    """What the member does with a new assignment: ``revoked`` (the listener's
    on_partitions_revoked, after committing their positions), ``added`` (positions from
    the committed offsets, then on_partitions_assigned), and whether it must rejoin at
    once (KIP-429: a cooperative member that gave something up rejoins so that the
    partitions can go to their new owner in the follow-up rebalance)."""

    revoked: frozenset[TopicPartition]
    added: frozenset[TopicPartition]
    rejoin: bool


def revoked_before_join(
    protocol: RebalanceProtocol,
    owned: Iterable[TopicPartition],
    subscribed_topics: Iterable[str],
) -> frozenset[TopicPartition]:
    """What a member gives up before it sends JoinGroup: eager, everything; cooperative,
    only the partitions of topics it no longer subscribes to."""
    owned = frozenset(owned)
    if protocol is RebalanceProtocol.EAGER:
        return owned
    topics = set(subscribed_topics)
    return frozenset(tp for tp in owned if tp.topic not in topics)


def rebalance_changes(
    protocol: RebalanceProtocol,
    owned: Iterable[TopicPartition],
    assigned: Iterable[TopicPartition],
) -> RebalanceChanges:
    """After SyncGroup. Eager members own nothing at this point (they revoked all before
    joining), so everything assigned is added. Cooperative members keep what stays,
    revoke what the assignment dropped, and rejoin if they revoked anything."""
    owned, assigned = frozenset(owned), frozenset(assigned)
    if protocol is RebalanceProtocol.EAGER:
        return RebalanceChanges(owned, assigned, rejoin=False)
    revoked = owned - assigned
    return RebalanceChanges(revoked, assigned - owned, rejoin=bool(revoked))


# -- the leader's job ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaderInput:
    """One member as the leader's JoinGroup answer lists it."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes


def member_subscriptions(members: Sequence[LeaderInput]) -> dict[str, Subscription]:
    return {m.member_id: decode_subscription(m.metadata, m.group_instance_id) for m in members}


def perform_assignment(
    protocol_name: str,
    subscriptions: Mapping[str, Subscription],
    partitions_per_topic: Mapping[str, int],
) -> dict[str, bytes]:
    """Run the chosen assignor; every member gets an entry (maybe an empty assignment).

    A cooperative assignment is checked as Kafka's leader checks it: no partition may
    move straight from one current owner to another in one generation.
    """
    assignor = ASSIGNORS.get(protocol_name)
    if assignor is None:
        raise ConfigurationError(f"the group chose assignor {protocol_name!r}, unknown here")
    result = assignor.assign(subscriptions, partitions_per_topic)
    if RebalanceProtocol.COOPERATIVE in assignor.protocols:
        validate_cooperative(subscriptions, result)
    return {m: encode_assignment(result.get(m, Assignment(()))) for m in subscriptions}


def validate_cooperative(
    subscriptions: Mapping[str, Subscription], result: Mapping[str, Assignment]
) -> None:
    newest = max((s.generation for s in subscriptions.values()), default=NO_GENERATION)
    owner: dict[TopicPartition, str] = {}
    for m, sub in subscriptions.items():
        if sub.generation == newest:
            for tp in sub.owned_partitions:
                owner[tp] = m
    for m, a in result.items():
        for tp in a.partitions:
            prev = owner.get(tp)
            if prev is not None and prev != m:
                raise AssertionError(
                    f"cooperative assignment moves {tp} from {prev} to {m} in one generation"
                )
