"""The idempotent producer's bookkeeping: producer id, epoch and per-partition sequences.

Kafka's ``TransactionManager`` without transactions, and sans-IO: the sender asks for a
producer id (InitProducerId) while ``needs_producer_id`` is set, and ``stamp``s each batch
the first time it is drained: producer id, epoch and the partition's next sequence, once
per batch (never per record). A retried batch keeps its stamp, so the broker recognises
it (the last 5 batches per producer and partition) and answers its original offset.

When a stamped batch fails for good (retries or delivery timeout exhausted, a
non-retriable answer such as OUT_OF_ORDER_SEQUENCE_NUMBER) its sequences leave a gap that
every later batch of the partition would trip over. Kafka then bumps the epoch; here the
producer takes a new producer id instead (``batch_failed``), whose sequences start at 0
on every partition: the broker accepts any first sequence from a producer it has no state
for (KIP-360). Batches already stamped with the old id keep it and still dedup.
"""

from __future__ import annotations

from client.accumulator import ProducerBatch
from client.types import TopicPartition

__all__ = ["SEQUENCE_MODULUS", "IdempotenceState"]

SEQUENCE_MODULUS = 2**31  # sequences wrap from 2^31-1 to 0, as Kafka's incrementSequence

NO_PRODUCER_ID = -1


class IdempotenceState:
    """Producer id, epoch and next sequence per partition; used by the sender task only."""

    __slots__ = ("_next_sequence", "needs_producer_id", "producer_epoch", "producer_id", "resets")

    def __init__(self) -> None:
        self.producer_id = NO_PRODUCER_ID
        self.producer_epoch = -1
        self.needs_producer_id = True
        self.resets = 0  # producer ids replaced after a failed batch
        self._next_sequence: dict[TopicPartition, int] = {}

    def set_producer_id(self, producer_id: int, producer_epoch: int) -> None:
        """InitProducerId answered: every partition's sequences restart at 0."""
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.needs_producer_id = False
        self._next_sequence.clear()

    def next_sequence(self, tp: TopicPartition) -> int:
        return self._next_sequence.get(tp, 0)

    def stamp(self, batch: ProducerBatch) -> bool:
        """Give a never-sent batch the producer id and its partition's next sequences.
        False (nothing done) when it already has them: a retry keeps its stamp."""
        builder = batch.builder
        if builder.producer_id != NO_PRODUCER_ID:
            return False
        seq = self._next_sequence.get(batch.tp, 0)
        builder.producer_id = self.producer_id
        builder.producer_epoch = self.producer_epoch
        builder.base_sequence = seq
        self._next_sequence[batch.tp] = (seq + builder.count) % SEQUENCE_MODULUS
        return True

    def batch_failed(self, batch: ProducerBatch) -> bool:
        """A batch failed for good. If it carried the current producer id, its sequences
        are a gap: ask for a new id (True). Batches of an older id change nothing."""
        pid = batch.builder.producer_id
        if pid == NO_PRODUCER_ID or pid != self.producer_id or self.needs_producer_id:
            return False
        self.needs_producer_id = True
        self.resets += 1
        return True
