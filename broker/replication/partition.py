"""One partition's replication decisions, sans-IO: the leader's book and the follower's rule.

``LeaderState`` is what the leader of one partition knows: its own log end offset (LEO),
each follower's LEO and the last time that follower was caught up, the ISR and the high
watermark (HW). It decides and never writes: an ISR change comes back as a proposal the
broker writes to the partition state znode by compare-and-set, then reports with
``isr_updated`` (or ``isr_update_failed``); ISR writes by others arrive as
``isr_observed``. ``FollowerState`` holds the follower side: the KIP-101/KIP-279 rule for
where to truncate after OffsetForLeaderEpoch, and its HW.

Nothing here imports trio, touches a file or reads a clock: time is an argument (``now_ms``).

Invariants (tested in ``tests/replication/``):

- the HW never decreases and never passes the LEO of a member of the maximal ISR;
- the ISR is never empty and always contains the leader;
- while an ISR change is in flight the HW is computed over the current ISR plus the
  proposed one (Kafka's "maximal ISR", KIP-497): a follower the coordinator may already
  list as in sync never lags a HW that a consumer has seen, so electing it loses nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from proto.errors import (
    FencedLeaderEpochError,
    NotLeaderForPartitionError,
    OffsetOutOfRangeError,
    UnknownLeaderEpochError,
)

UNKNOWN_OFFSET = -1  # a follower's LEO before its first fetch to this leader
UNDEFINED_EPOCH = -1  # Kafka's UNDEFINED_EPOCH in OffsetForLeaderEpoch
UNDEFINED_EPOCH_OFFSET = -1  # Kafka's UNDEFINED_EPOCH_OFFSET
NO_EPOCH_CHECK = -1  # current_leader_epoch = -1: the requester did not send one

REPLICA_LAG_TIME_MAX_MS = 30_000


@dataclass(frozen=True, slots=True)
class FetchUpdate:
    """What a follower fetch changed: whether the HW moved (complete delayed acks=all
    produces, tell consumers) and an ISR expansion to write by CAS, if one is due."""

    hw_changed: bool
    expand_isr_to: list[int] | None


class AcksAllStatus(enum.Enum):
    """Where an acks=all produce stands (Kafka's ``checkEnoughReplicasReachOffset``)."""

    WAITING = "waiting"  # the HW has not passed the batch yet
    DONE = "done"
    # The HW passed it but the ISR is now below min.insync.replicas: the record is written
    # and will stay, but the producer is told NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = "not_enough_replicas_after_append"


@dataclass(slots=True)
class _FollowerProgress:
    log_end_offset: int
    last_caught_up_ms: int
    last_fetch_leader_leo: int  # the leader's LEO when this follower last fetched
    last_fetch_ms: int


class LeaderState:
    """The leader's view of one partition it leads, for one leader epoch.

    Build a new one whenever this broker becomes leader (a new epoch): follower progress
    does not carry over between epochs. ``log_end_offset`` at construction is the leader
    epoch's start offset: a follower joins the ISR only once it has reached it.
    """

    __slots__ = (
        "_followers",
        "_hw",
        "_isr",
        "_leo",
        "_pending_isr",
        "broker_id",
        "leader_epoch",
        "leader_epoch_start_offset",
        "min_insync_replicas",
        "replica_lag_time_max_ms",
        "replicas",
    )

    def __init__(
        self,
        broker_id: int,
        leader_epoch: int,
        replicas: Sequence[int],
        isr: Sequence[int],
        log_end_offset: int,
        high_watermark: int,
        now_ms: int,
        replica_lag_time_max_ms: int = REPLICA_LAG_TIME_MAX_MS,
        min_insync_replicas: int = 1,
    ) -> None:
        if broker_id not in replicas:
            raise ValueError(f"leader {broker_id} is not a replica {list(replicas)}")
        if log_end_offset < 0 or replica_lag_time_max_ms < 0 or min_insync_replicas < 1:
            raise ValueError("negative log end offset or lag time, or min.insync.replicas < 1")
        self.broker_id = broker_id
        self.leader_epoch = leader_epoch
        self.replicas: tuple[int, ...] = tuple(replicas)
        self.replica_lag_time_max_ms = replica_lag_time_max_ms
        self.min_insync_replicas = min_insync_replicas
        self.leader_epoch_start_offset = log_end_offset
        self._leo = log_end_offset
        # A checkpointed HW can lag the log, never lead it (Kafka clamps it the same way).
        self._hw = max(0, min(high_watermark, log_end_offset))
        self._isr = self._checked_isr(isr)
        self._pending_isr: tuple[int, ...] | None = None
        # Kafka's resetReplicaState for a new leader: ISR followers count as caught up now,
        # so each gets a full replica.lag.time.max.ms to make its first fetch.
        self._followers = {
            r: _FollowerProgress(UNKNOWN_OFFSET, now_ms if r in self._isr else 0, self._leo, now_ms)
            for r in self.replicas
            if r != broker_id
        }
        self._maybe_advance_hw()  # a leader alone in the ISR commits its whole log

    def _checked_isr(self, isr: Sequence[int]) -> tuple[int, ...]:
        if self.broker_id not in isr:
            raise ValueError(f"ISR {list(isr)} does not contain the leader {self.broker_id}")
        unknown = set(isr) - set(self.replicas)
        if unknown:
            raise ValueError(f"ISR members {sorted(unknown)} are not replicas {self.replicas}")
        return tuple(r for r in self.replicas if r in isr)

    # -- reading -------------------------------------------------------------------------

    @property
    def log_end_offset(self) -> int:
        return self._leo

    @property
    def high_watermark(self) -> int:
        return self._hw

    @property
    def isr(self) -> list[int]:
        """The ISR as last written to the coordinator (replica order)."""
        return list(self._isr)

    @property
    def pending_isr(self) -> list[int] | None:
        """The ISR change proposed and not yet confirmed or failed, if any."""
        return None if self._pending_isr is None else list(self._pending_isr)

    @property
    def maximal_isr(self) -> list[int]:
        """Current ISR plus any member a pending change adds: what the HW waits for."""
        members = set(self._isr) | set(self._pending_isr or ())
        return [r for r in self.replicas if r in members]

    @property
    def follower_fetch_limit(self) -> int:
        """Followers read to the log end."""
        return self._leo

    @property
    def consumer_fetch_limit(self) -> int:
        """Consumers read only what is committed: below the HW."""
        return self._hw

    def follower_log_end_offset(self, replica_id: int) -> int:
        """The follower's LEO as of its last fetch (``UNKNOWN_OFFSET`` before the first)."""
        return self._progress(replica_id).log_end_offset

    def check_current_leader_epoch(self, current_leader_epoch: int) -> None:
        """Kafka's fencing of a request's ``current_leader_epoch`` (-1: not checked).

        Older than ours: the requester is behind (FENCED_LEADER_EPOCH, it must refresh
        metadata). Newer: this broker has not yet learned of a newer epoch
        (UNKNOWN_LEADER_EPOCH, retry).
        """
        if current_leader_epoch == NO_EPOCH_CHECK:
            return
        if current_leader_epoch < self.leader_epoch:
            raise FencedLeaderEpochError(
                f"request epoch {current_leader_epoch} is older than {self.leader_epoch}"
            )
        if current_leader_epoch > self.leader_epoch:
            raise UnknownLeaderEpochError(
                f"request epoch {current_leader_epoch} is newer than {self.leader_epoch}"
            )

    # -- acks=all ------------------------------------------------------------------------

    def enough_replicas_for_acks_all(self) -> bool:
        """Checked before appending: with fewer, fail NOT_ENOUGH_REPLICAS, write nothing."""
        return len(self._isr) >= self.min_insync_replicas

    def acks_all_satisfied(self, last_offset: int) -> bool:
        """Every ISR member has the batch ending at ``last_offset``."""
        return self._hw > last_offset

    def acks_all_status(self, last_offset: int) -> AcksAllStatus:
        if not self.acks_all_satisfied(last_offset):
            return AcksAllStatus.WAITING
        if len(self._isr) < self.min_insync_replicas:
            return AcksAllStatus.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return AcksAllStatus.DONE

    # -- events --------------------------------------------------------------------------

    def on_append(self, log_end_offset: int) -> bool:
        """The leader appended up to ``log_end_offset``; returns whether the HW moved
        (it does at once when the leader is alone in the ISR)."""
        if log_end_offset < self._leo:
            raise ValueError(f"a leader's log end offset cannot go back: {log_end_offset}")
        self._leo = log_end_offset
        return self._maybe_advance_hw()

    def on_follower_fetch(self, replica_id: int, fetch_offset: int, now_ms: int) -> FetchUpdate:
        """A follower fetched from ``fetch_offset``, which is its LEO.

        Caught up (Kafka's lastCaughtUpTime rule): at this fetch when it has the leader's
        whole log; at its previous fetch when it now has everything the leader had then.
        """
        progress = self._progress(replica_id)
        if fetch_offset > self._leo:
            raise OffsetOutOfRangeError(
                f"follower {replica_id} fetches at {fetch_offset}, past the log end {self._leo}"
            )
        if fetch_offset >= self._leo:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, now_ms)
        elif fetch_offset >= progress.last_fetch_leader_leo:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.last_fetch_leader_leo = self._leo
        progress.last_fetch_ms = now_ms
        progress.log_end_offset = fetch_offset
        expand: list[int] | None = None
        if (
            self._pending_isr is None
            and replica_id not in self._isr
            and fetch_offset >= self._hw
            and fetch_offset >= self.leader_epoch_start_offset
        ):
            expand = [r for r in self.replicas if r in self._isr or r == replica_id]
            self._pending_isr = tuple(expand)
        return FetchUpdate(self._maybe_advance_hw(), expand)

    def maybe_shrink_isr(self, now_ms: int) -> list[int] | None:
        """The ISR without the followers not caught up within replica.lag.time.max.ms, to
        write by CAS; None when nothing changes or another ISR change is in flight.

        A follower that has the leader's whole log is in sync however long ago it fetched
        (as Kafka: no writes, no lag).
        """
        if self._pending_isr is not None:
            return None
        lagging = {
            r
            for r in self._isr
            if r != self.broker_id
            and self._followers[r].log_end_offset != self._leo
            and now_ms - self._followers[r].last_caught_up_ms > self.replica_lag_time_max_ms
        }
        if not lagging:
            return None
        shrunk = [r for r in self._isr if r not in lagging]
        self._pending_isr = tuple(shrunk)
        return shrunk

    def isr_updated(self, new_isr: Sequence[int]) -> bool:
        """Our CAS of the proposal landed: the state znode holds ``new_isr``. Returns
        whether the HW moved. Each proposal gets exactly one ``isr_updated`` or
        ``isr_update_failed``, and there is one proposal at a time."""
        self._isr = self._checked_isr(new_isr)
        self._pending_isr = None
        return self._maybe_advance_hw()

    def isr_update_failed(self) -> bool:
        """Our CAS lost: forget the proposal (returns whether the HW moved, as a member it
        would have added no longer holds it back). The caller re-reads the state znode and
        either calls ``isr_observed`` (same epoch) or drops this LeaderState (deposed)."""
        self._pending_isr = None
        return self._maybe_advance_hw()

    def isr_observed(self, isr: Sequence[int]) -> bool:
        """The state znode shows ``isr`` for this epoch, written by someone else (the
        controller) or re-delivered by a watch; deliver observations in znode order.
        A proposal in flight stays in the maximal ISR: our write may still land."""
        self._isr = self._checked_isr(isr)
        return self._maybe_advance_hw()

    # -- internals -----------------------------------------------------------------------

    def _progress(self, replica_id: int) -> _FollowerProgress:
        progress = self._followers.get(replica_id)
        if progress is None:
            raise NotLeaderForPartitionError(
                f"broker {replica_id} is not a follower of this partition {self.replicas}"
            )
        return progress

    def _maybe_advance_hw(self) -> bool:
        new_hw = self._leo
        for r in self.maximal_isr:
            if r != self.broker_id:
                new_hw = min(new_hw, self._followers[r].log_end_offset)
        if new_hw > self._hw:
            self._hw = new_hw
            return True
        return False


@dataclass(frozen=True, slots=True)
class EpochEndOffset:
    """An OffsetForLeaderEpoch answer: the largest epoch <= the one asked for, and the
    offset where it ends (the next epoch's start, or the log end for the latest)."""

    leader_epoch: int
    end_offset: int

    @property
    def undefined(self) -> bool:
        return self.end_offset == UNDEFINED_EPOCH_OFFSET


UNDEFINED_EPOCH_END_OFFSET = EpochEndOffset(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)


@dataclass(frozen=True, slots=True)
class Truncation:
    """Truncate the local log to ``offset``; when not ``completed`` (the follower did not
    know the epoch the leader answered with), ask again with the new latest local epoch."""

    offset: int
    completed: bool


@dataclass(frozen=True, slots=True)
class FollowerState:
    """A broker following ``leader_id`` in ``leader_epoch`` for one partition."""

    broker_id: int
    leader_id: int
    leader_epoch: int

    def truncation_offset(
        self,
        local_leo: int,
        leader_reply: EpochEndOffset | tuple[int, int],
        local_epoch_end_offset: Callable[[int], EpochEndOffset],
        high_watermark: int,
    ) -> Truncation:
        """Where to truncate after asking the leader for the end of our latest epoch
        (Kafka's ``AbstractFetcherThread.getOffsetTruncationState``, KIP-101 + KIP-279).

        ``local_epoch_end_offset(epoch)`` is our own epoch cache's answer to the same
        question (UNDEFINED when we know no epoch at or below it).
        """
        reply = (
            leader_reply
            if isinstance(leader_reply, EpochEndOffset)
            else EpochEndOffset(*leader_reply)
        )
        if reply.undefined:
            # The leader knows no epoch at or below ours: fall back to the high watermark.
            return Truncation(min(high_watermark, local_leo), True)
        if reply.leader_epoch == UNDEFINED_EPOCH:
            # A KIP-101-only leader (no epoch in the answer): trust its end offset.
            return Truncation(min(reply.end_offset, local_leo), True)
        local = local_epoch_end_offset(reply.leader_epoch)
        if local.undefined:
            # We know no epoch that old: the leader's end offset is the divergence point.
            return Truncation(min(reply.end_offset, local_leo), True)
        if local.leader_epoch != reply.leader_epoch:
            # We never saw the leader's epoch: cut to the end of our largest epoch below it
            # and ask again with that one (KIP-279's two-failures-in-a-row case).
            return Truncation(min(local.end_offset, local_leo), False)
        return Truncation(min(local.end_offset, reply.end_offset, local_leo), True)

    def on_fetch_response(self, leader_hw: int, local_leo: int, log_start_offset: int = 0) -> int:
        """The follower's new HW: the leader's, bounded by what this log holds."""
        return max(log_start_offset, min(leader_hw, local_leo))
