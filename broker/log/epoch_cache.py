"""The leader-epoch cache of one partition: Kafka's ``LeaderEpochFileCache``.

Entries map a leader epoch to the first offset written in it, strictly increasing in both.
The cache answers ``OffsetForLeaderEpoch`` (``end_offset_for``: where an epoch ended on
this replica) so that a new follower truncates its divergent tail at the right offset
(KIP-101 / KIP-279) instead of at its old high watermark. It is truncated with the log at
both ends and checkpointed in ``leader-epoch-checkpoint`` (Kafka's text format)::

    0           version
    2           number of entries
    3 0         epoch start_offset
    5 1200

The cache itself is pure; every change is written through the optional
``LeaderEpochCheckpointFile`` (atomic: temp file, fsync, rename, fsync of the directory).
It never reads the log: ``Log`` feeds it batch epochs on append and on recovery.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.log.checkpoint import read_checkpoint_entries, write_checkpoint_entries
from proto.errors import KafkaStorageError

__all__ = [
    "LEADER_EPOCH_CHECKPOINT",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "EpochEntry",
    "LeaderEpochCache",
    "LeaderEpochCheckpointFile",
]

LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


class LeaderEpochCheckpointFile:
    """``leader-epoch-checkpoint`` of one partition directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, entries: Sequence[EpochEntry]) -> None:
        write_checkpoint_entries(self.path, [f"{e.epoch} {e.start_offset}" for e in entries])

    def read(self) -> list[EpochEntry] | None:
        """The entries, None if the file does not exist. A malformed file, or entries that
        are not strictly increasing in epoch and offset, raise KafkaStorageError."""
        lines = read_checkpoint_entries(self.path)
        if lines is None:
            return None
        out: list[EpochEntry] = []
        try:
            for line in lines:
                epoch, offset = line.split(" ")
                entry = EpochEntry(int(epoch), int(offset))
                if entry.epoch < 0 or entry.start_offset < 0:
                    raise ValueError(f"negative entry {line!r}")
                if out and not (
                    entry.epoch > out[-1].epoch and entry.start_offset > out[-1].start_offset
                ):
                    raise ValueError(f"entry {line!r} does not follow {out[-1]}")
                out.append(entry)
        except ValueError as exc:
            raise KafkaStorageError(f"malformed checkpoint {self.path}: {exc}") from exc
        return out


class LeaderEpochCache:
    """Epoch -> start offset, strictly increasing in both (Kafka's LeaderEpochFileCache).

    Every mutator returns whether the entries changed; a change is written to the
    checkpoint file (when there is one) before the mutator returns.
    """

    __slots__ = ("_checkpoint", "_epochs", "_offsets")

    def __init__(
        self,
        entries: Iterable[EpochEntry] = (),
        *,
        checkpoint: LeaderEpochCheckpointFile | None = None,
    ) -> None:
        self._checkpoint = checkpoint
        self._epochs: list[int] = []
        self._offsets: list[int] = []
        for e in entries:
            if self._epochs and not (
                e.epoch > self._epochs[-1] and e.start_offset > self._offsets[-1]
            ):
                raise ValueError(f"entries must increase strictly: {e} after {self.entries[-1]}")
            self._epochs.append(e.epoch)
            self._offsets.append(e.start_offset)

    # --- queries ------------------------------------------------------------------------

    @property
    def entries(self) -> list[EpochEntry]:
        return [EpochEntry(e, o) for e, o in zip(self._epochs, self._offsets, strict=True)]

    @property
    def latest_epoch(self) -> int | None:
        return self._epochs[-1] if self._epochs else None

    @property
    def latest_entry(self) -> EpochEntry | None:
        return EpochEntry(self._epochs[-1], self._offsets[-1]) if self._epochs else None

    @property
    def earliest_entry(self) -> EpochEntry | None:
        return EpochEntry(self._epochs[0], self._offsets[0]) if self._epochs else None

    def __len__(self) -> int:
        return len(self._epochs)

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """``(epoch, end offset)`` for OffsetForLeaderEpoch, as Kafka's ``endOffsetFor``.

        The latest epoch ends at the log end offset. An older epoch ends where the next
        higher cached epoch starts, and the epoch returned is the largest cached one at or
        below the requested (the requested may have had no entry here). An epoch older
        than the first entry ends where the first entry starts, answered with the requested
        epoch itself (Kafka 2.0+: a follower holding only that older epoch must truncate
        there). UNDEFINED ``(-1, -1)`` when the requested epoch is UNDEFINED, newer than
        the latest, or the cache is empty.
        """
        undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        if requested_epoch == UNDEFINED_EPOCH or not self._epochs:
            return undefined
        if requested_epoch == self._epochs[-1]:
            return requested_epoch, log_end_offset
        higher = bisect.bisect_right(self._epochs, requested_epoch)
        if higher == len(self._epochs):
            return undefined
        if higher == 0:
            return requested_epoch, self._offsets[0]
        return self._epochs[higher - 1], self._offsets[higher]

    def epoch_for_offset(self, offset: int) -> int | None:
        """The epoch whose range holds ``offset`` (None below the first entry)."""
        i = bisect.bisect_right(self._offsets, offset)
        return self._epochs[i - 1] if i else None

    # --- mutators -----------------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``, if the epoch is newer than the
        latest; a same or older epoch is ignored (the log only ever goes forward in
        epochs; truncation is ``truncate_from_end``). A newer epoch starting at or below
        the latest entries' start offsets replaces them (Kafka: those epochs wrote
        nothing that survived)."""
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"cannot assign epoch {epoch} at offset {start_offset}")
        if self._epochs and epoch <= self._epochs[-1]:
            return False
        cut = bisect.bisect_left(self._offsets, start_offset)
        del self._epochs[cut:]
        del self._offsets[cut:]
        self._epochs.append(epoch)
        self._offsets.append(start_offset)
        self._flush()
        return True

    def truncate_from_end(self, end_offset: int) -> bool:
        """Drop every entry starting at or after ``end_offset`` (the log was truncated
        there)."""
        if end_offset < 0 or not self._offsets or self._offsets[-1] < end_offset:
            return False
        cut = bisect.bisect_left(self._offsets, end_offset)
        del self._epochs[cut:]
        del self._offsets[cut:]
        self._flush()
        return True

    def truncate_from_start(self, start_offset: int) -> bool:
        """The log now starts at ``start_offset``: drop entries wholly before it and move
        the start of the epoch that covers it there."""
        keep = bisect.bisect_right(self._offsets, start_offset)
        if keep == 0:
            return False  # every entry starts after start_offset
        covering = keep - 1
        if covering == 0 and self._offsets[0] == start_offset:
            return False
        del self._epochs[:covering]
        del self._offsets[:covering]
        self._offsets[0] = start_offset
        self._flush()
        return True

    def clear(self) -> bool:
        if not self._epochs:
            return False
        self._epochs.clear()
        self._offsets.clear()
        self._flush()
        return True

    def replace(self, entries: Iterable[EpochEntry]) -> None:
        """Take ``entries`` (a rebuild) and write them through."""
        fresh = LeaderEpochCache(entries)
        self._epochs, self._offsets = fresh._epochs, fresh._offsets
        self._flush()

    def _flush(self) -> None:
        if self._checkpoint is not None:
            self._checkpoint.write(self.entries)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{e}@{o}" for e, o in zip(self._epochs, self._offsets, strict=True))
        return f"<LeaderEpochCache [{pairs}]>"
