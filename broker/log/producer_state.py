"""Idempotent-producer state of one partition: Kafka's ``ProducerStateManager``. Sans-IO.

Per producer id the broker keeps the producer epoch and the sequence ranges and offsets of
its last 5 batches (Kafka's ``NumBatchesToRetain``: a producer has at most 5 requests in
flight). ``check`` decides, before anything is written, what a leader does with a batch:

* producer id -1 (not idempotent): accept, no state;
* same epoch and exactly the sequence range of a remembered batch: a retried duplicate,
  answered with the original offsets (``Duplicate``), not appended again;
* an epoch older than the producer's: ``InvalidProducerEpochError`` (47);
* a newer epoch: the sequence must restart at 0, otherwise OUT_OF_ORDER_SEQUENCE_NUMBER;
* the same epoch: the base sequence must follow the last one (wrapping from 2^31-1 to 0),
  otherwise ``OutOfOrderSequenceNumberError`` (45);
* an unknown producer (never seen, or its batches all left the log through retention):
  any sequence is accepted (Kafka since KIP-360).

``update`` records a written batch; ``replay`` does the same from batch headers (follower
appends and recovery: no checks, headers only, never a record). The state reaches disk
only as snapshots (``producer_snapshot.py``); this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto.batch import BatchHeader
from proto.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    OutOfOrderSequenceNumberError,
)

__all__ = [
    "ACCEPT",
    "MAX_SEQUENCE",
    "NUM_BATCHES_TO_RETAIN",
    "Accept",
    "BatchMetadata",
    "Duplicate",
    "ProducerAppend",
    "ProducerEntry",
    "ProducerStateManager",
    "decrement_sequence",
    "increment_sequence",
]

NUM_BATCHES_TO_RETAIN = 5
MAX_SEQUENCE = 2**31 - 1
NO_PRODUCER_ID = -1


def increment_sequence(sequence: int, increment: int) -> int:
    """Kafka's ``DefaultRecordBatch.incrementSequence``: wraps from 2^31-1 to 0."""
    if sequence > MAX_SEQUENCE - increment:
        return increment - (MAX_SEQUENCE - sequence) - 1
    return sequence + increment


def decrement_sequence(sequence: int, decrement: int) -> int:
    if sequence < decrement:
        return MAX_SEQUENCE - (decrement - sequence) + 1
    return sequence - decrement


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int = -1  # the batch's max timestamp (its append time under LogAppendTime)


@dataclass(frozen=True, slots=True)
class ProducerEntry:
    """One producer's epoch and its last batches, oldest first (never empty)."""

    producer_id: int
    producer_epoch: int
    batches: tuple[BatchMetadata, ...]

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.producer_epoch:
            return None
        for b in self.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return b
        return None

    def with_batch(self, epoch: int, batch: BatchMetadata) -> ProducerEntry:
        """This entry after ``batch`` was written (an epoch change forgets the old batches)."""
        kept = self.batches if epoch == self.producer_epoch else ()
        kept = (*kept, batch)[-NUM_BATCHES_TO_RETAIN:]
        return ProducerEntry(self.producer_id, epoch, kept)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retried batch already in the log, at these offsets."""

    first_offset: int
    last_offset: int
    timestamp: int = -1


@dataclass(frozen=True, slots=True)
class Accept:
    """The batch may be appended."""


ACCEPT = Accept()


def _check(
    entry: ProducerEntry | None,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    record_count: int,
) -> Duplicate | Accept:
    if producer_id < 0:
        return ACCEPT
    if producer_epoch < 0 or base_sequence < 0 or record_count <= 0:
        raise InvalidRecordError(
            f"idempotent batch of producer {producer_id} has epoch {producer_epoch}, "
            f"base sequence {base_sequence}, {record_count} records"
        )
    if entry is None:
        # Kafka 2.5+ (KIP-360, ProducerAppendInfo.checkSequence): with no state for the
        # producer (new, or its batches left the log) any sequence is accepted; the
        # UNKNOWN_PRODUCER_ID (59) answer of Kafka 0.11-2.4 is gone from the broker.
        return ACCEPT
    last_seq = increment_sequence(base_sequence, record_count - 1)
    dup = entry.find_duplicate(producer_epoch, base_sequence, last_seq)
    if dup is not None:
        return Duplicate(dup.first_offset, dup.last_offset, dup.timestamp)
    if producer_epoch < entry.producer_epoch:
        raise InvalidProducerEpochError(
            f"producer {producer_id} epoch {producer_epoch} is older than {entry.producer_epoch}"
        )
    if producer_epoch > entry.producer_epoch:
        if base_sequence != 0:
            raise OutOfOrderSequenceNumberError(
                f"producer {producer_id} new epoch {producer_epoch} starts at sequence "
                f"{base_sequence}, not 0"
            )
        return ACCEPT
    if base_sequence != increment_sequence(entry.last_seq, 1):
        raise OutOfOrderSequenceNumberError(
            f"producer {producer_id} epoch {producer_epoch}: sequence {base_sequence} "
            f"does not follow {entry.last_seq}"
        )
    return ACCEPT


def _updated(
    entry: ProducerEntry | None,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    last_sequence: int,
    first_offset: int,
    last_offset: int,
    timestamp: int,
) -> ProducerEntry:
    batch = BatchMetadata(base_sequence, last_sequence, first_offset, last_offset, timestamp)
    if entry is None:
        return ProducerEntry(producer_id, producer_epoch, (batch,))
    return entry.with_batch(producer_epoch, batch)


class ProducerAppend:
    """The producer-state effect of one ``Log.append`` call, staged: each batch is checked
    against the state as the earlier batches of the same call left it, and nothing
    reaches the manager until ``ProducerStateManager.commit`` (all or nothing)."""

    __slots__ = ("_base", "staged")

    def __init__(self, base: Mapping[int, ProducerEntry]) -> None:
        self._base = base
        self.staged: dict[int, ProducerEntry] = {}

    def _entry(self, producer_id: int) -> ProducerEntry | None:
        entry = self.staged.get(producer_id)
        return entry if entry is not None else self._base.get(producer_id)

    def check(
        self, producer_id: int, producer_epoch: int, base_sequence: int, record_count: int
    ) -> Duplicate | Accept:
        return _check(
            self._entry(producer_id), producer_id, producer_epoch, base_sequence, record_count
        )

    def update(
        self,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        last_sequence: int,
        first_offset: int,
        last_offset: int,
        timestamp: int = -1,
    ) -> None:
        if producer_id < 0:
            return
        self.staged[producer_id] = _updated(
            self._entry(producer_id),
            producer_id,
            producer_epoch,
            base_sequence,
            last_sequence,
            first_offset,
            last_offset,
            timestamp,
        )

    def update_from_header(
        self, h: BatchHeader, base_offset: int | None = None, max_timestamp: int | None = None
    ) -> None:
        """Record a batch from its header; ``base_offset`` and ``max_timestamp`` override
        the header's when they are not final yet (a leader append)."""
        if h.producer_id < 0:
            return
        first = h.base_offset if base_offset is None else base_offset
        self.update(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            increment_sequence(h.base_sequence, h.record_count - 1),
            first,
            first + h.last_offset_delta,
            h.max_timestamp if max_timestamp is None else max_timestamp,
        )


class ProducerStateManager:
    """Producer id -> ``ProducerEntry`` for one partition."""

    __slots__ = ("_producers",)

    def __init__(self, producers: Iterable[ProducerEntry] = ()) -> None:
        self._producers: dict[int, ProducerEntry] = {p.producer_id: p for p in producers}

    @property
    def producers(self) -> Mapping[int, ProducerEntry]:
        return self._producers

    def last_entry(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    def __len__(self) -> int:
        return len(self._producers)

    def check(
        self, producer_id: int, producer_epoch: int, base_sequence: int, record_count: int
    ) -> Duplicate | Accept:
        """What a leader does with this batch: see the module docstring. Raises
        OutOfOrderSequenceNumberError, InvalidProducerEpochError or (a batch claiming a
        producer id without epoch or sequence) InvalidRecordError."""
        return _check(
            self._producers.get(producer_id),
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
        )

    def update(
        self,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        last_sequence: int,
        first_offset: int,
        last_offset: int,
        timestamp: int = -1,
    ) -> None:
        """Record a batch written at ``[first_offset, last_offset]`` (no checks)."""
        if producer_id < 0:
            return
        self._producers[producer_id] = _updated(
            self._producers.get(producer_id),
            producer_id,
            producer_epoch,
            base_sequence,
            last_sequence,
            first_offset,
            last_offset,
            timestamp,
        )

    def begin(self) -> ProducerAppend:
        return ProducerAppend(self._producers)

    def commit(self, append: ProducerAppend) -> None:
        self._producers.update(append.staged)
        append.staged = {}

    def replay(self, headers: Iterable[BatchHeader]) -> None:
        """Apply batches read back from the log, in offset order (headers only)."""
        append = self.begin()
        for h in headers:
            append.update_from_header(h)
        self.commit(append)

    def rebuild(self, headers: Iterable[BatchHeader]) -> None:
        """Forget everything and replay ``headers`` (a whole log, from its start)."""
        self._producers = {}
        self.replay(headers)

    def truncate_head(self, log_start_offset: int) -> int:
        """Forget producers whose last batch is below the new log start (retention removed
        them, so a rebuild would not see them either). Returns how many went."""
        gone = [pid for pid, e in self._producers.items() if e.last_offset < log_start_offset]
        for pid in gone:
            del self._producers[pid]
        return len(gone)

    def clear(self) -> None:
        self._producers = {}

    def __repr__(self) -> str:
        return f"<ProducerStateManager producers={len(self._producers)}>"
