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
) -> list[StateChange]:
    """The state changes the current set of live brokers calls for (after deaths and
    returns alike): elections for partitions without a live leader, ISR shrinks for
    partitions whose ISR lists dead brokers. Partitions with no state znode are skipped."""
    changes: list[StateChange] = []
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
        leader = elect_leader(p.replicas, st.isr, live, unclean=unclean(p.topic))
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
        st = p.state
        if st is None or not p.replicas:
            continue
        preferred = p.replicas[0]
        if brokers is not None and preferred not in brokers:
            continue
        if st.leader != preferred and preferred in live and preferred in st.isr:
            new = PartitionState(preferred, st.leader_epoch + 1, list(st.isr), controller_epoch)
            changes.append(_change(p, new, versions, ChangeReason.PREFERRED_LEADER))
    return changes


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
