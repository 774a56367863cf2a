"""One ``__consumer_offsets`` partition this broker coordinates: its groups and offsets cache.

A partition is LOADING from the moment this broker leads it (in a leader epoch) until its
log has been read from the start to the log end it had then; requests for its groups get
COORDINATOR_LOAD_IN_PROGRESS meanwhile. Once LOADED it serves its groups from memory, and
every change to them is appended to its log before (or, for deletions, as) it is applied.
Reading the log here is broker-side decoding of whole batches, acceptable for this
internal topic; it never runs on a request's path.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

import structlog
import trio

from broker.group import Group, GroupConfig, GroupMetadataRecord, GroupState
from broker.group.offsets_records import OFFSETS_TOPIC, OffsetCommitValue, OffsetsPartitionState
from broker.log import Log
from proto.batch import decode_records, iter_batches
from proto.errors import RemoteProtocolError

__all__ = [
    "LOAD_BUFFER_BYTES",
    "CommittedOffset",
    "LoadedGroup",
    "OffsetsPartition",
    "PartitionPhase",
    "is_empty_and_unused",
    "read_offsets_log",
]

log = structlog.get_logger("broker.group_coordinator")

LOAD_BUFFER_BYTES = 5 * 1024 * 1024  # Kafka's offsets.load.buffer.size


class PartitionPhase(enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"


@dataclass(slots=True)
class CommittedOffset:
    value: OffsetCommitValue
    # Where the commit is in the log: of two commits replicated out of order, the later
    # record wins (-1: loaded, older than anything appended since).
    log_offset: int = -1


@dataclass(slots=True)
class LoadedGroup:
    """A group and the clocks needed to tell when it became what it is in wall time: the
    state machine runs on the monotonic clock; retention and the stored record use wall
    time. ``since_ms``/``since_wall_ms`` are the two clocks at load (or creation); a state
    entered before then is the stored record's (``record_state_wall_ms``)."""

    group: Group
    since_ms: int
    since_wall_ms: int
    record_state_wall_ms: int

    def state_wall_ms(self, now_ms: int, now_wall_ms: int) -> int:
        """When (wall time) the group entered its current state."""
        entered = self.group.state_timestamp_ms
        if entered <= self.since_ms:
            return self.record_state_wall_ms
        return now_wall_ms - (now_ms - entered)


@dataclass(eq=False)
class OffsetsPartition:
    partition: int
    leader_epoch: int
    phase: PartitionPhase = PartitionPhase.LOADING
    groups: dict[str, LoadedGroup] = field(default_factory=dict)
    # group -> (topic, partition) -> its committed offset
    offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = field(default_factory=dict)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    # Commits appended and not yet replicated, and the log offset of each tombstone
    # written meanwhile: a commit older than its key's tombstone stays deleted.
    pending_commits: int = 0
    tombstoned: dict[tuple[str, str, int], int] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.phase is PartitionPhase.LOADED

    def group_offsets(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
        return self.offsets.get(group_id, {})

    def add_group(self, group: Group, now_ms: int, now_wall_ms: int) -> LoadedGroup:
        entry = LoadedGroup(group, now_ms, now_wall_ms, now_wall_ms)
        self.groups[group.group_id] = entry
        return entry

    def set_offset(self, group_id: str, tp: tuple[str, int], committed: CommittedOffset) -> None:
        """A replicated commit: kept unless a later commit or a later tombstone of the
        same key is already in the log."""
        if committed.log_offset < self.tombstoned.get((group_id, *tp), -1):
            return
        offsets = self.offsets.setdefault(group_id, {})
        current = offsets.get(tp)
        if current is None or current.log_offset <= committed.log_offset:
            offsets[tp] = committed

    def drop_offset(self, group_id: str, tp: tuple[str, int], tombstone_offset: int) -> None:
        offsets = self.offsets.get(group_id)
        if offsets is not None:
            offsets.pop(tp, None)
            if not offsets:
                del self.offsets[group_id]
        if self.pending_commits:
            self.tombstoned[(group_id, *tp)] = tombstone_offset

    def commit_settled(self) -> None:
        """One appended commit is replicated or failed."""
        self.pending_commits -= 1
        if not self.pending_commits:
            self.tombstoned.clear()

    def install(
        self, state: OffsetsPartitionState, config: GroupConfig, now_ms: int, now_wall_ms: int
    ) -> None:
        """Build the groups and the cache from what the log says (Kafka's onGroupLoaded):
        a group with a record is rebuilt Stable at its generation (or Empty); a group with
        offsets and no record (a client committing without group management) is Empty."""
        for (group_id, topic, p), value in state.offsets.items():
            self.offsets.setdefault(group_id, {})[(topic, p)] = CommittedOffset(value)
        for group_id, record in state.groups.items():
            group = Group.from_record(record, now_ms=now_ms, config=config)
            self.groups[group_id] = LoadedGroup(
                group, now_ms, now_wall_ms, _record_wall_ms(record, now_wall_ms)
            )
        for group_id in self.offsets:
            if group_id not in self.groups:
                self.add_group(Group(group_id, config=config, now_ms=now_ms), now_ms, now_wall_ms)
        self.phase = PartitionPhase.LOADED


def _record_wall_ms(record: GroupMetadataRecord, now_wall_ms: int) -> int:
    # The runtime stores the state's wall time; a value from the future (another clock)
    # counts from now, so retention never expires offsets early.
    stamp = record.current_state_timestamp_ms
    return stamp if 0 <= stamp <= now_wall_ms else now_wall_ms


async def read_offsets_log(plog: Log, partition: int) -> OffsetsPartitionState:
    """Apply every record of the partition's log, from its start to the log end it has
    now, in offset order (``OffsetsPartitionState.apply``, the loader of
    ``load_offsets_partition``). Yields to other tasks between chunks; a record this code
    cannot decode is logged and skipped, so one bad record cannot keep every group of the
    partition without a coordinator."""
    state = OffsetsPartitionState()
    end = plog.log_end_offset
    offset = plog.log_start_offset
    bad = 0
    while offset < end:
        offset = max(offset, plog.log_start_offset)
        result = plog.read(offset, LOAD_BUFFER_BYTES, max_offset=end)
        if result.records is None:
            break
        fr = result.records
        buf = os.pread(fr.fd, fr.size, fr.position)  # before any await: the fd is the log's
        for pos, header in iter_batches(buf):
            for record in decode_records(buf, pos):
                if record.offset < offset:
                    continue
                try:
                    state.apply(record.key, record.value)
                except RemoteProtocolError as exc:
                    bad += 1
                    log.error(
                        "offsets_record_skipped",
                        topic=OFFSETS_TOPIC,
                        partition=partition,
                        offset=record.offset,
                        error=str(exc),
                    )
            offset = header.next_offset
        await trio.lowlevel.checkpoint()
    if bad or state.skipped:
        log.warning(
            "offsets_partition_loaded_with_skips",
            partition=partition,
            undecodable=bad,
            unknown_kinds=state.skipped,
        )
    return state


def is_empty_and_unused(
    entry: LoadedGroup, offsets: dict[tuple[str, int], CommittedOffset]
) -> bool:
    """An Empty group that holds nothing: no offsets, no handed-out member id, no member."""
    group = entry.group
    return (
        group.state is GroupState.EMPTY
        and not offsets
        and not group.members
        and not group.roster.pending
    )
