"""Appending coordinator records to a ``__consumer_offsets`` partition this broker leads.

As a produce with acks=all (broker/handlers.py ``produce``): refuse before writing when the
ISR is below min.insync.replicas, append locally in the leader epoch the partition was
loaded at, then wait until the high watermark passes the batch. The local append is
synchronous, so records reach the log in the order the coordinator decided them; only the
wait for replication is awaited.

Errors are the produce path's (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS,
NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT, ...); what a client sees instead is
Kafka's mapping, ``commit_error`` here for OffsetCommit and ``broker.group.records.
store_error`` for group records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.group.offsets_records import OFFSETS_TOPIC
from broker.log.log import wall_clock_ms
from broker.purgatory import FetchPurgatory
from broker.replica_manager import ReplicaManager
from broker.replication import LeaderState
from proto.batch import BatchBuilder
from proto.errors import (
    NONE,
    BrokerResponseError,
    CoordinatorNotAvailableError,
    InvalidCommitOffsetSizeError,
    InvalidFetchSizeError,
    KafkaStorageError,
    MessageSizeTooLargeError,
    NotCoordinatorError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RecordListTooLargeError,
    UnknownTopicOrPartitionError,
)

__all__ = ["AppendedBatch", "OffsetsAppender", "Record", "commit_error"]

Record = tuple[bytes, bytes | None]  # (key, value); value None is a tombstone


@dataclass(frozen=True, slots=True)
class AppendedBatch:
    """A batch in the leader's log, waiting to be replicated."""

    partition: int
    leader: LeaderState
    first_offset: int
    last_offset: int
    timestamp_ms: int  # the wall time stamped on its records


class OffsetsAppender:
    def __init__(
        self, replicas: ReplicaManager, purgatory: FetchPurgatory, timeout_ms: int
    ) -> None:
        self._replicas = replicas
        self._purgatory = purgatory
        self.timeout_ms = timeout_ms  # offsets.commit.timeout.ms

    def append(self, partition: int, leader_epoch: int, records: Sequence[Record]) -> AppendedBatch:
        """Write ``records`` as one batch, now. Raises the produce path's errors; nothing
        is written when it raises."""
        key = (OFFSETS_TOPIC, partition)
        leader = self._replicas.leaders.get(key)
        plog = self._replicas.logs.get_log(*key)
        if leader is None or plog is None or leader.leader_epoch != leader_epoch:
            raise NotLeaderForPartitionError(
                f"{OFFSETS_TOPIC}-{partition} is no longer led here in epoch {leader_epoch}"
            )
        if not leader.enough_replicas_for_acks_all():
            raise NotEnoughReplicasError(
                f"{OFFSETS_TOPIC}-{partition}: ISR {leader.isr} is smaller than "
                f"min.insync.replicas {leader.min_insync_replicas}"
            )
        now = wall_clock_ms()
        builder = BatchBuilder()
        for k, v in records:
            builder.append(v, key=k, timestamp_ms=now)
        info = plog.append(builder.build(), leader_epoch=leader_epoch)
        self._replicas.on_append(key, plog.log_end_offset)
        self._purgatory.notify(key)
        return AppendedBatch(partition, leader, info.first_offset, info.last_offset, now)

    async def replicated(self, batch: AppendedBatch) -> int:
        """Wait until every ISR member has ``batch`` (acks=all): 0, or the error code."""
        key = (OFFSETS_TOPIC, batch.partition)
        failed = await self._replicas.wait_acks_all(
            {key: (batch.leader, batch.last_offset)}, self.timeout_ms
        )
        exc = failed.get(key)
        return NONE if exc is None else exc.code

    async def append_and_wait(
        self, partition: int, leader_epoch: int, records: Sequence[Record]
    ) -> tuple[AppendedBatch | None, int]:
        """Append then wait: the batch (None if nothing was written) and 0 or an error."""
        try:
            batch = self.append(partition, leader_epoch, records)
        except BrokerResponseError as exc:
            return None, exc.code
        return batch, await self.replicated(batch)


# Kafka's GroupMetadataManager.storeOffsets: what a failed append of commits tells the
# committing client (a group record's failure maps through records.store_error instead).
_COMMIT_ERRORS: dict[int, int] = {
    UnknownTopicOrPartitionError.code: CoordinatorNotAvailableError.code,
    NotEnoughReplicasError.code: CoordinatorNotAvailableError.code,
    NotEnoughReplicasAfterAppendError.code: CoordinatorNotAvailableError.code,
    NotLeaderForPartitionError.code: NotCoordinatorError.code,
    KafkaStorageError.code: NotCoordinatorError.code,
    MessageSizeTooLargeError.code: InvalidCommitOffsetSizeError.code,
    RecordListTooLargeError.code: InvalidCommitOffsetSizeError.code,
    InvalidFetchSizeError.code: InvalidCommitOffsetSizeError.code,
}


def commit_error(append_error: int) -> int:
    """The error an OffsetCommit (or a deletion) answers for a failed append; a timeout
    stays REQUEST_TIMED_OUT."""
    return _COMMIT_ERRORS.get(append_error, append_error)
