"""A replica's log for tests: one (leader_epoch, record_id) per offset, plus the leader-epoch
cache exactly as Kafka keeps it (``LeaderEpochFileCache``): an entry is assigned when a
broker becomes leader and when an append carries a newer epoch; truncation drops entries
that start at or past the new end. Kept independent of ``broker/log/epoch_cache.py`` on
purpose: it is the reference the replication rules are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.replication import (
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_END_OFFSET,
    EpochEndOffset,
)

Entry = tuple[int, int]  # (leader_epoch, record_id)


@dataclass
class SimLog:
    entries: list[Entry] = field(default_factory=list)
    epochs: list[tuple[int, int]] = field(default_factory=list)  # (epoch, start_offset)
    high_watermark: int = 0

    @classmethod
    def of(cls, epochs_per_offset: list[int], high_watermark: int = 0) -> SimLog:
        """A log whose offset i holds a record of epoch ``epochs_per_offset[i]``."""
        log = cls(high_watermark=high_watermark)
        for i, epoch in enumerate(epochs_per_offset):
            log.append(epoch, i)
        return log

    @property
    def leo(self) -> int:
        return len(self.entries)

    @property
    def latest_epoch(self) -> int:
        return self.epochs[-1][0] if self.epochs else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> None:
        """A newer epoch replaces the entries starting at or past its start: those epochs
        wrote nothing that survived (Kafka's ``maybeTruncateNonMonotonicEntries``)."""
        if not self.epochs or epoch > self.epochs[-1][0]:
            self.epochs = [(e, s) for e, s in self.epochs if s < start_offset]
            self.epochs.append((epoch, start_offset))

    def append(self, epoch: int, record_id: int) -> None:
        self.assign(epoch, self.leo)
        self.entries.append((epoch, record_id))

    def truncate_to(self, offset: int) -> None:
        del self.entries[offset:]
        self.epochs = [(e, s) for e, s in self.epochs if s < offset]
        self.high_watermark = min(self.high_watermark, offset)

    def end_offset_for(self, requested: int) -> EpochEndOffset:
        """Kafka's ``LeaderEpochFileCache.endOffsetFor(requestedEpoch, logEndOffset)``."""
        if requested == UNDEFINED_EPOCH or not self.epochs:
            return UNDEFINED_EPOCH_END_OFFSET
        if requested == self.latest_epoch:
            return EpochEndOffset(requested, self.leo)
        higher = [(e, s) for e, s in self.epochs if e > requested]
        if not higher:
            return UNDEFINED_EPOCH_END_OFFSET  # newer than anything we know
        floor = [(e, s) for e, s in self.epochs if e <= requested]
        if not floor:
            return EpochEndOffset(requested, higher[0][1])
        return EpochEndOffset(floor[-1][0], higher[0][1])
