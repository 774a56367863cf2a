"""The controller's partition decisions, sans-IO: pure functions over metadata values.

Given the partitions (replica assignment plus the state znode's ``PartitionState``), the
live brokers and the controller epoch, these functions say which state znodes to rewrite
and with what, as ``StateChange`` values carrying the znode version the compare-and-set
must expect. The controller's trio code writes them (each in a multi that first checks
``/controller_epoch``); a failed CAS means the input was stale: re-read and decide again.

Rules (Kafka's ZooKeeper-mode controller):

- a partition whose leader is not live gets the first live replica, in replica order, that
  is in the ISR; with ``unclean.leader.election.enable``, failing that, the first live
  replica. The leader epoch is bumped; the ISR loses the dead brokers (an unclean leader
  starts a new ISR of itself).
- when nobody can lead, the partition goes offline (leader -1, epoch bumped) and the ISR
  keeps one member, never none: the replica that must return for a clean election.
- a partition whose leader lives but whose ISR lists dead brokers keeps its leader and
  epoch and loses them from the ISR.
- preferred-leader election moves leadership back to the first replica when it is live and
  in the ISR (epoch bumped, ISR unchanged).
- controlled shutdown (Kafka's ControlledShutdownPartitionLeaderElection): a partition led
  by a broker that is shutting down gets the first replica that is live, in the ISR and
  not shutting down; the new ISR drops every shutting-down broker. Partitions it follows
  lose it from their ISR (never down to an empty ISR). With no other ISR member the
  leader stays (RF 1, or an ISR of one): the broker is told which partitions remain.
- brokers shutting down are never chosen as leaders by any rule, though they still count
  as live leaders (their partitions are not offline until they are gone).

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.zk_layout import PartitionState

NO_LEADER = -1  # Kafka's LeaderAndIsr.NoLeader: the partition is offline
LEADER_IMBALANCE_PER_BROKER_PERCENTAGE = 10


class PartitionLike(Protocol):
    """What these functions read of a partition (``metadata_cache.PartitionInfo`` fits)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def replicas(self) -> Sequence[int]: ...

    @property
    def state(self) -> PartitionState | None: ...


class ChangeReason(enum.Enum):
    LEADER_ELECTED = "leader_elected"  # the leader was dead or absent; a new one leads
    PARTITION_OFFLINE = "partition_offline"  # the leader died and nobody can replace it
    ISR_SHRUNK = "isr_shrunk"  # dead followers leave the ISR; leader and epoch unchanged
    PREFERRED_LEADER = "preferred_leader"  # leadership back to the first replica
    CONTROLLED_SHUTDOWN = "controlled_shutdown"  # moved away from a broker shutting down


@dataclass(frozen=True, slots=True)
class StateChange:
    """Write ``state`` to the partition's state znode if its version is still
    ``expected_version``."""

    topic: str
    partition: int
    state: PartitionState
    expected_version: int
    reason: ChangeReason


Versions = Mapping[tuple[str, int], int]  # (topic, partition) -> state znode version


def elect_leader(
    replicas: Sequence[int], isr: Collection[int], live: Collection[int], *, unclean: bool = False
) -> int | None:
    """The first live replica, in replica order, that is in the ISR; with ``unclean``,
    failing that, the first live replica. None: nobody can lead (offline)."""
    for r in replicas:
        if r in live and r in isr:
            return r
    if unclean:
        for r in replicas:
            if r in live:
                return r
    return None


def _version(versions: Versions, p: PartitionLike) -> int:
    try:
        return versions[(p.topic, p.partition)]
    except KeyError:
        raise KeyError(f"no state znode version for {p.topic}-{p.partition}") from None


def on_brokers_changed(
    partitions: Iterable[PartitionLike],
    live: Collection[int],
    controller_epoch: int,
    unclean: Callable[[str], bool],
    *,
    versions: Versions,
    shutting_down: Collection[int] = (),
) -> list[StateChange]:
    """The state changes the current set of live brokers calls for (after deaths and
    returns alike): elections for partitions without a live leader, ISR shrinks for
    partitions whose ISR lists dead brokers. Partitions with no state znode are skipped.
    ``shutting_down`` brokers are live but never elected."""
    changes: list[StateChange] = []
    candidates = [b for b in live if b not in shutting_down] if shutting_down else live
    for p in partitions:
        st = p.state
        if st is None:
            continue
        live_isr = [b for b in st.isr if b in live]
        if st.leader != NO_LEADER and st.leader in live:
            if live_isr != st.isr and st.leader in live_isr:
                new = PartitionState(st.leader, st.leader_epoch, live_isr, controller_epoch)
                changes.append(_change(p, new, versions, ChangeReason.ISR_SHRUNK))
            continue
        leader = elect_leader(p.replicas, st.isr, candidates, unclean=unclean(p.topic))
        if leader is not None:
            isr = live_isr if leader in st.isr else [leader]
            new = PartitionState(leader, st.leader_epoch + 1, isr, controller_epoch)
            changes.append(_change(p, new, versions, ChangeReason.LEADER_ELECTED))
        elif st.leader != NO_LEADER:
            # Keep the old leader (it has the longest log) as the one member that must
            # come back; a stored ISR without it keeps its first member.
            keep = [st.leader] if st.leader in st.isr or not st.isr else st.isr[:1]
            new = PartitionState(NO_LEADER, st.leader_epoch + 1, keep, controller_epoch)
            changes.append(_change(p, new, versions, ChangeReason.PARTITION_OFFLINE))
    return changes


class PreferredOutcome(enum.Enum):
    """What a preferred-leader election does to one partition (ElectLeaders' answer)."""

    ELECTED = "elected"  # leadership moves to the preferred replica
    NOT_NEEDED = "not_needed"  # it already leads (Kafka's ELECTION_NOT_NEEDED)
    NOT_AVAILABLE = "not_available"  # not live or not in the ISR (PREFERRED_LEADER_NOT_AVAILABLE)


def preferred_leader_election(
    p: PartitionLike,
    live: Collection[int],
    *,
    controller_epoch: int,
    versions: Versions,
) -> tuple[PreferredOutcome, StateChange | None]:
    """Kafka's PreferredReplicaPartitionLeaderElection for one partition: the first
    replica leads if it is live and in the ISR. ``live`` excludes brokers shutting down."""
    st = p.state
    if st is None or not p.replicas:
        return PreferredOutcome.NOT_AVAILABLE, None
    preferred = p.replicas[0]
    if st.leader == preferred:
        return PreferredOutcome.NOT_NEEDED, None
    if preferred not in live or preferred not in st.isr:
        return PreferredOutcome.NOT_AVAILABLE, None
    new = PartitionState(preferred, st.leader_epoch + 1, list(st.isr), controller_epoch)
    return PreferredOutcome.ELECTED, _change(p, new, versions, ChangeReason.PREFERRED_LEADER)


def preferred_leader_elections(
    partitions: Iterable[PartitionLike],
    live: Collection[int],
    *,
    controller_epoch: int,
    versions: Versions,
    brokers: Collection[int] | None = None,
) -> list[StateChange]:
    """Move leadership back to the first replica where it is live, in the ISR and not
    leading; ``brokers`` limits this to partitions whose preferred leader is one of them
    (the brokers ``imbalanced_brokers`` names)."""
    changes: list[StateChange] = []
    for p in partitions:
        if brokers is not None and (not p.replicas or p.replicas[0] not in brokers):
            continue
        _outcome, change = preferred_leader_election(
            p, live, controller_epoch=controller_epoch, versions=versions
        )
        if change is not None:
            changes.append(change)
    return changes


@dataclass(frozen=True, slots=True)
class ControlledShutdownPlan:
    """The writes one ControlledShutdown request calls for, and what stays with the broker."""

    changes: list[StateChange]
    remaining: list[tuple[str, int]]  # replicated partitions it will still lead


def controlled_shutdown_leader(
    replicas: Sequence[int],
    isr: Collection[int],
    live: Collection[int],
    shutting_down: Collection[int],
) -> int | None:
    """Kafka's ControlledShutdownPartitionLeaderElection: the first replica, in replica
    order, that is live, in the ISR and not shutting down."""
    for r in replicas:
        if r in live and r in isr and r not in shutting_down:
            return r
    return None


def controlled_shutdown(
    partitions: Iterable[PartitionLike],
    broker_id: int,
    live: Collection[int],
    shutting_down: Collection[int],
    *,
    controller_epoch: int,
    versions: Versions,
) -> ControlledShutdownPlan:
    """Move leadership away from ``broker_id`` (which is in ``shutting_down``) and drop it
    from the ISRs it is in.

    ``remaining`` lists the replicated partitions it still leads where another replica is
    live and not shutting down (a lagging follower may rejoin the ISR while the broker
    waits to retry). Where no other replica could ever take over now, retrying cannot
    help, so the partition is not reported (Kafka reports every replicated partition,
    which makes the last broker of a cluster retry for nothing).
    """
    changes: list[StateChange] = []
    remaining: list[tuple[str, int]] = []
    for p in partitions:
        st = p.state
        if st is None or broker_id not in p.replicas or len(p.replicas) < 2:
            continue
        if st.leader == broker_id:
            leader = controlled_shutdown_leader(p.replicas, st.isr, live, shutting_down)
            if leader is not None:
                isr = [b for b in st.isr if b not in shutting_down]
                new = PartitionState(leader, st.leader_epoch + 1, isr, controller_epoch)
                changes.append(_change(p, new, versions, ChangeReason.CONTROLLED_SHUTDOWN))
            elif any(r in live and r not in shutting_down for r in p.replicas):
                remaining.append((p.topic, p.partition))
        elif st.leader != NO_LEADER and broker_id in st.isr and len(st.isr) > 1:
            isr = [b for b in st.isr if b != broker_id]
            new = PartitionState(st.leader, st.leader_epoch, isr, controller_epoch)
            changes.append(_change(p, new, versions, ChangeReason.ISR_SHRUNK))
    return ControlledShutdownPlan(changes, remaining)


def imbalance_ratio(partitions: Iterable[PartitionLike]) -> dict[int, float]:
    """Per preferred leader: the share of the partitions it should lead that it does not
    (Kafka's ``checkAndTriggerAutoLeaderRebalance``). Partitions without state are left out."""
    preferred: dict[int, int] = {}
    not_leading: dict[int, int] = {}
    for p in partitions:
        if p.state is None or not p.replicas:
            continue
        b = p.replicas[0]
        preferred[b] = preferred.get(b, 0) + 1
        if p.state.leader != b:
            not_leading[b] = not_leading.get(b, 0) + 1
    return {b: not_leading.get(b, 0) / n for b, n in sorted(preferred.items())}


def imbalanced_brokers(
    ratios: Mapping[int, float],
    leader_imbalance_per_broker_percentage: int = LEADER_IMBALANCE_PER_BROKER_PERCENTAGE,
) -> list[int]:
    """The brokers whose ratio is over the threshold (strictly, as Kafka)."""
    limit = leader_imbalance_per_broker_percentage / 100
    return [b for b, ratio in sorted(ratios.items()) if ratio > limit]


def _change(
    p: PartitionLike, state: PartitionState, versions: Versions, reason: ChangeReason
) -> StateChange:
    return StateChange(p.topic, p.partition, state, _version(versions, p), reason)
