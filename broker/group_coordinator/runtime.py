"""The group coordinator's runtime: which ``__consumer_offsets`` partitions this broker
coordinates, the requests held in its groups, their appends and their timers.

Owns (Kafka's GroupMetadataManager plus the delayed-operation plumbing of its
GroupCoordinator):

- Ownership: the partitions this broker leads, each loaded in a task when it starts
  leading (or leads a newer epoch: reloaded) and unloaded when it stops (``roles_changed``,
  called after every change of the replica manager's roles). A group request is served
  only by a LOADED partition whose loaded epoch is still the one this broker leads.
- Held requests: each request fed to a ``Group`` gets a request id and a slot; a
  ``Respond`` output fills the slot, from the call itself or from any later one
  (``deliver``), so a JoinGroup may return much later than it arrived.
- Group records: a ``StoreGroup`` output is appended at once (log order is decision order)
  and replicated in a task, then ``store_completed`` reports the outcome to the group.
- Timers: ``timers.GroupTimers`` sleeps until the earliest ``next_deadline_ms`` over
  loaded groups and has due groups ``tick``; ``deliver`` reschedules the group it acted
  for, since any call may move its deadline.

The state machines run on trio's clock (``now_ms``: the autojump clock in tests); what is
stored (commit times, the group record's state time) is wall time. Never blocks a request
on a load: requests of a loading partition answer COORDINATOR_LOAD_IN_PROGRESS.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import structlog
import trio

from broker.config import BrokerConfig
from broker.group import Group, Output, Respond, Response, StoreGroup
from broker.group.offsets_records import (
    OFFSETS_TOPIC,
    group_metadata_record,
    group_tombstone,
    offset_tombstone,
    partition_for,
)
from broker.group_coordinator.appender import AppendedBatch, OffsetsAppender, Record
from broker.group_coordinator.partition import (
    LoadedGroup,
    OffsetsPartition,
    is_empty_and_unused,
    read_offsets_log,
)
from broker.group_coordinator.timers import GroupTimers
from broker.log.log import wall_clock_ms
from broker.purgatory import FetchPurgatory
from broker.replica_manager import ReplicaManager
from proto.errors import (
    NONE,
    BrokerResponseError,
    CoordinatorLoadInProgressError,
    KafkaStorageError,
    NotCoordinatorError,
    RemoteProtocolError,
)

__all__ = ["GroupRuntime"]

log = structlog.get_logger("broker.group_coordinator")

_LOAD_RETRY_MAX_S = 5.0


@dataclasses.dataclass(eq=False, slots=True)
class _Slot:
    """Where a held request's response lands."""

    event: trio.Event = dataclasses.field(default_factory=trio.Event)
    response: Response | None = None


class GroupRuntime:
    def __init__(
        self, config: BrokerConfig, replicas: ReplicaManager, purgatory: FetchPurgatory
    ) -> None:
        self.config = config
        self.group_config = config.group_config
        self.replicas = replicas
        self.appender = OffsetsAppender(replicas, purgatory, config.offsets_commit_timeout_ms)
        self.partitions: dict[int, OffsetsPartition] = {}
        self.log = log.bind(broker_id=config.broker_id)
        self._slots: dict[int, _Slot] = {}
        self._request_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self.timers = GroupTimers(self.is_current)
        self._last_now = 0

    # --- clocks -------------------------------------------------------------------------

    def now_ms(self, at_least: int = 0) -> int:
        """The state machines' clock: trio's, never going back."""
        self._last_now = max(self._last_now, int(trio.current_time() * 1000), at_least)
        return self._last_now

    @staticmethod
    def wall_ms() -> int:
        return wall_clock_ms()

    # --- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the loads, appends and timers; loads what this broker leads already."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.timers.run, self.now_ms, self._fire)
            self.roles_changed()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def spawn(self, fn: Callable[..., object], *args: object) -> None:
        if self._nursery is None:
            raise RuntimeError("the group coordinator is not running")
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    # --- ownership ----------------------------------------------------------------------

    def num_partitions(self) -> int:
        """The offsets topic's partition count (Kafka reads it from the topic once it
        exists), else offsets.topic.num.partitions."""
        topic = self.replicas.view.topics.get(OFFSETS_TOPIC)
        if topic is not None and topic.partitions:
            return len(topic.partitions)
        return self.config.offsets_topic_num_partitions

    def partition_of(self, group_id: str) -> int:
        return partition_for(group_id, self.num_partitions())

    def owner(self, group_id: str) -> tuple[OffsetsPartition | None, int]:
        """The loaded partition coordinating ``group_id``, or why this broker cannot
        answer for it (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS)."""
        p = self.partition_of(group_id)
        part = self.partitions.get(p)
        if part is None:
            return None, NotCoordinatorError.code
        if not part.loaded:
            return None, CoordinatorLoadInProgressError.code
        leader = self.replicas.leaders.get((OFFSETS_TOPIC, p))
        if leader is None or leader.leader_epoch != part.leader_epoch:
            return None, NotCoordinatorError.code  # the reload is on its way
        return part, NONE

    def roles_changed(self) -> None:
        """Load the offsets partitions this broker now leads (a newer epoch: reload) and
        unload the ones it no longer does. Called after the replica manager's roles
        change (``Broker.reconcile``)."""
        if self._nursery is None:
            return  # ``run`` applies the roles when it starts
        led = {
            p: state.leader_epoch
            for (topic, p), state in self.replicas.leaders.items()
            if topic == OFFSETS_TOPIC
        }
        for p, part in list(self.partitions.items()):
            if led.get(p) != part.leader_epoch:
                self.unload(p)
        for p, epoch in led.items():
            if p not in self.partitions:
                part = OffsetsPartition(p, epoch)
                self.partitions[p] = part
                self._nursery.start_soon(self._load, part)

    async def _load(self, part: OffsetsPartition) -> None:
        key = (OFFSETS_TOPIC, part.partition)
        started = trio.current_time()
        backoff = 0.1
        with part.scope:
            while True:
                plog = self.replicas.logs.get_log(*key)
                try:
                    if plog is None:
                        raise KafkaStorageError(f"no local log for {key[0]}-{key[1]}")
                    state = await read_offsets_log(plog, part.partition)
                    break
                except (BrokerResponseError, RemoteProtocolError, OSError) as exc:
                    self.log.error(
                        "offsets_partition_load_failed",
                        partition=part.partition,
                        epoch=part.leader_epoch,
                        error=str(exc),
                        retry_s=backoff,
                    )
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, _LOAD_RETRY_MAX_S)
            part.install(state, self.group_config, self.now_ms(), self.wall_ms())
            for entry in part.groups.values():
                self.timers.schedule(part, entry)
            self.log.info(
                "offsets_partition_loaded",
                partition=part.partition,
                epoch=part.leader_epoch,
                groups=len(part.groups),
                offsets=sum(len(o) for o in part.offsets.values()),
                ms=round((trio.current_time() - started) * 1000, 1),
            )

    def unload(self, p: int) -> None:
        """Stop coordinating partition ``p``: every group goes Dead (requests it holds get
        NOT_COORDINATOR, so clients look the coordinator up again) and the cache goes."""
        part = self.partitions.pop(p)
        part.scope.cancel()
        now = self.now_ms()
        for entry in part.groups.values():
            self.deliver(part, entry, entry.group.unload(now))
        self.log.info(
            "offsets_partition_unloaded",
            partition=p,
            epoch=part.leader_epoch,
            groups=len(part.groups),
            was_loaded=part.loaded,
        )
        part.groups.clear()
        part.offsets.clear()

    # --- groups and held requests -------------------------------------------------------

    def is_current(self, part: OffsetsPartition, entry: LoadedGroup) -> bool:
        """``entry`` is still a group of ``part`` and ``part`` is still loaded here."""
        return (
            part.loaded
            and self.partitions.get(part.partition) is part
            and part.groups.get(entry.group.group_id) is entry
        )

    def new_group(self, part: OffsetsPartition, group_id: str) -> LoadedGroup:
        group = Group(group_id, config=self.group_config, now_ms=self.now_ms())
        return part.add_group(group, self.now_ms(), self.wall_ms())

    def forget_if_unused(self, part: OffsetsPartition, entry: LoadedGroup) -> None:
        """Drop a group a failed first JoinGroup created and nothing refers to."""
        gid = entry.group.group_id
        if (
            part.groups.get(gid) is entry
            and entry.group.generation_id == 0
            and is_empty_and_unused(entry, part.group_offsets(gid))
        ):
            del part.groups[gid]

    async def call(
        self,
        part: OffsetsPartition,
        entry: LoadedGroup,
        feed: Callable[[int], list[Output]],
    ) -> Response:
        """Feed one request to its group under a fresh request id and wait until some
        output answers it (this call's or a later one's)."""
        request_id = next(self._request_ids)
        slot = _Slot()
        self._slots[request_id] = slot
        try:
            self.deliver(part, entry, feed(request_id))
            await slot.event.wait()
        finally:
            self._slots.pop(request_id, None)
        assert slot.response is not None
        return slot.response

    def deliver(self, part: OffsetsPartition, entry: LoadedGroup, outputs: list[Output]) -> None:
        """Act on a group's outputs: answer held requests, append group records."""
        for out in outputs:
            if isinstance(out, Respond):
                slot = self._slots.pop(out.request_id, None)
                if slot is not None:  # else its waiter is gone (cancelled at shutdown)
                    slot.response = out.response
                    slot.event.set()
            else:
                self._store_group(part, entry, out)
        self.timers.schedule(part, entry)  # the call may have moved its deadline

    def _store_group(self, part: OffsetsPartition, entry: LoadedGroup, out: StoreGroup) -> None:
        # The stored state time is wall time (Kafka's currentStateTimestamp), so that a
        # later coordinator can run retention from it.
        record = dataclasses.replace(
            out.record,
            current_state_timestamp_ms=entry.state_wall_ms(self.now_ms(), self.wall_ms()),
        )
        batch: AppendedBatch | None = None
        try:
            batch = self.appender.append(
                part.partition, part.leader_epoch, [group_metadata_record(record)]
            )
            error = NONE
        except BrokerResponseError as exc:
            error = exc.code
        self.spawn(self._complete_store, part, entry, out.store_id, batch, error)

    async def _complete_store(
        self,
        part: OffsetsPartition,
        entry: LoadedGroup,
        store_id: int,
        batch: AppendedBatch | None,
        error: int,
    ) -> None:
        if batch is not None:
            error = await self.appender.replicated(batch)
        if error != NONE:
            self.log.warning(
                "group_store_failed", group=entry.group.group_id, partition=part.partition,
                error=error,
            )  # fmt: skip
        # A group unloaded or deleted meanwhile is Dead and ignores the completion.
        self.deliver(part, entry, entry.group.store_completed(store_id, error, self.now_ms()))

    # --- removals -----------------------------------------------------------------------

    def delete_offsets(
        self,
        part: OffsetsPartition,
        group_id: str,
        tps: Sequence[tuple[str, int]],
        *,
        with_group: bool = False,
    ) -> AppendedBatch | None:
        """Append tombstones for ``tps`` of ``group_id`` (and for its group record) and
        drop them from the cache at once: the leader's log has them, as a reload would
        see. The caller may wait for replication. Raises, writing nothing, when it cannot
        append; None when there was nothing to write."""
        records: list[Record] = [offset_tombstone(group_id, t, p) for t, p in tps]
        if with_group:
            records.append(group_tombstone(group_id))
        if not records:
            return None
        batch = self.appender.append(part.partition, part.leader_epoch, records)
        for i, tp in enumerate(tps):
            part.drop_offset(group_id, tp, batch.first_offset + i)
        return batch

    # --- timers -------------------------------------------------------------------------

    def _fire(self, part: OffsetsPartition, entry: LoadedGroup, now: int) -> None:
        self.deliver(part, entry, entry.group.tick(self.now_ms(now)))
