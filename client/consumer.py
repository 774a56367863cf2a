"""The async consumer: subscribe (consumer groups) or assign, positions, poll.

A background task (``client.fetch_loop``) prefetches records for the assignment.
``poll()`` runs the group's work first (``client.group``: rebalances and their listener
callbacks, auto commit), then decodes what is buffered (client.fetcher), starting new
partitions at their committed offset (with a ``group_id``) or per ``auto_offset_reset``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

import trio

from client.assigned import AssignedPartitions
from client.cluster import Cluster
from client.config import ConsumerConfig
from client.errors import (
    ConfigurationError,
    IllegalStateError,
    UnknownTopicOrPartitionError,
)
from client.fetch_loop import FetchLoop
from client.group.commits import CommitCallback
from client.group.coordinator import ConsumerCoordinator
from client.group.listener import CallbackRunner, check_listener, run_in_thread, run_inline
from client.group.offsets import validate_offsets
from client.group.subscription import SubscriptionState
from client.lifecycle import BackgroundTasks
from client.log_offsets import list_log_offsets
from client.logs import get_logger
from client.types import (
    ConsumerRecord,
    OffsetAndMetadata,
    OffsetAndTimestamp,
    TopicPartition,
)
from proto.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
)

__all__ = ["AsyncConsumer"]

log = get_logger("client.consumer")


class AsyncConsumer:
    """Reads records. ``async with AsyncConsumer("t", group_id="g", ...) as c:`` subscribes
    to "t" in group "g"; without a group_id, topics given here are read whole (every
    partition assigned); ``assign()`` picks partitions by hand."""

    def __init__(self, *topics: str, **configs: Any) -> None:
        # _blocking: client.sync.Consumer's; callbacks then run in a worker thread.
        self._blocking = bool(configs.pop("_blocking", False))
        self.config = ConsumerConfig.build(**configs)
        self._runner: CallbackRunner = run_in_thread if self._blocking else run_inline
        self._subscription = SubscriptionState()
        self._initial_topics = topics
        self._parts = AssignedPartitions(self.config)
        self._cluster: Cluster | None = None
        self._coordinator: ConsumerCoordinator | None = None
        self._tasks = BackgroundTasks()
        self._nursery: trio.Nursery | None = None
        self._fetcher: FetchLoop | None = None
        self._data = trio.Event()
        self._closed = False
        if topics and self.config.group_id is not None:
            self.subscribe(list(topics))

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        nursery = self._nursery = await self._tasks.open()
        try:
            cluster = self._cluster = Cluster(self.config.connection, nursery)
            self._fetcher = FetchLoop(
                self.config, cluster, nursery, lambda: self._parts.states, self.wake
            )
            cluster.listeners.append(self._fetcher.wake)
            if self.config.group_id is not None:
                self._coordinator = ConsumerCoordinator(
                    self.config, cluster, nursery, self, self._subscription, self._runner
                )
                await cluster.refresh()
                self._want_topics(self._subscription.topics)
            else:
                await cluster.refresh(self._initial_topics)
                if self._initial_topics:
                    tps: list[TopicPartition] = []
                    for t in self._initial_topics:
                        parts = await cluster.partitions_for(t)
                        tps.extend(TopicPartition(t, p.partition) for p in parts)
                    self.assign(tps)
        except BaseException:
            await self._tasks.close()
            raise
        assert self._fetcher is not None
        nursery.start_soon(self._fetcher.run)

    async def close(self) -> None:
        """Commit (auto commit), revoke, leave the group (unless a static member), stop."""
        if self._closed:
            return
        self._closed = True
        if self._nursery is None:
            return
        assert self._nursery is not None and self._cluster is not None
        try:
            if self._coordinator is not None:
                await self._coordinator.close()
        finally:
            self._nursery.cancel_scope.cancel()
            try:
                await self._cluster.aclose()
            finally:
                await self._tasks.close()

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise IllegalStateError("consumer not started: use 'async with' or start()")
        return self._cluster

    def _group(self, what: str) -> ConsumerCoordinator:
        if self.config.group_id is None:
            raise ConfigurationError(f"{what} needs a group_id")
        if self._coordinator is None:
            raise IllegalStateError("consumer not started: use 'async with' or start()")
        return self._coordinator

    # --- subscription and assignment ----------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str] | str | None = None,
        pattern: str | re.Pattern[str] | None = None,
        listener: object | None = None,
    ) -> None:
        """Join the group for ``topics`` (or every topic ``pattern`` matches in full); the
        group spreads their partitions over its members. Takes effect in poll()."""
        if self.config.group_id is None:
            raise ConfigurationError("subscribe() needs a group_id (or use assign())")
        if (topics is None) == (pattern is None):
            raise ConfigurationError("subscribe() takes topics or a pattern (exactly one)")
        if listener is not None:
            check_listener(listener, blocking=self._blocking)
        sub = self._subscription
        if topics is not None:
            names = [topics] if isinstance(topics, str) else list(topics)
            changed = sub.subscribe_topics(names, listener)
            self._want_topics(sub.topics)
        else:
            assert pattern is not None
            sub.subscribe_pattern(pattern, listener)
            changed = True
        if changed and self._coordinator is not None:
            self._coordinator.subscription_changed()

    def _want_topics(self, topics: Iterable[str]) -> None:
        # Metadata requests name these topics (and may auto-create them, Kafka's
        # allow.auto.create.topics); without that permission only the leader's full
        # listing of topics is used.
        if self._cluster is not None and self.config.allow_auto_create_topics:
            self._cluster.wanted.update(topics)

    async def unsubscribe(self) -> None:
        """Leave the group (listener's on_partitions_revoked first) or drop the manual
        assignment."""
        if self._coordinator is not None:
            await self._coordinator.unsubscribe()
        self._subscription.unsubscribe()
        self._parts.remove(list(self._parts.states))

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions, without group membership (commits still go to the
        group, with generation -1). Not allowed while subscribed."""
        tps = [TopicPartition(*tp) for tp in partitions]
        if self._subscription.auto:
            raise IllegalStateError(
                "assign() is not allowed while subscribed: call unsubscribe() first"
            )
        if tps:
            self._subscription.assign_manually()
        else:
            self._subscription.unsubscribe()
        self._parts.replace(tps)
        self.cluster.wanted.update(tp.topic for tp in tps)
        self._wake_fetcher()

    def assignment(self) -> set[TopicPartition]:
        return set(self._parts.states)

    def subscription(self) -> set[str]:
        """The topics subscribed to (for a pattern: those it matched last)."""
        return set(self._subscription.topics) if self._subscription.auto else set()

    # the coordinator's view of us (client.group.rebalance.GroupHost)

    def owned_partitions(self) -> set[TopicPartition]:
        return set(self._parts.states)

    def consumed_offsets(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return self._parts.consumed(partitions)

    def add_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        tps = list(partitions)
        self._parts.add(tps)
        self.cluster.wanted.update(tp.topic for tp in tps)
        self._wake_fetcher()

    def remove_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        self._parts.remove(partitions)

    def wake(self) -> None:
        self._data.set()

    def _wake_fetcher(self) -> None:
        if self._fetcher is not None:
            self._fetcher.wake()

    # --- committed offsets ----------------------------------------------------------------

    async def commit(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None
    ) -> None:
        """Commit ``offsets`` (default: the position of every assigned partition) and wait
        until the coordinator has them replicated. Raises CommitFailedError when the
        group rebalanced without this member, RebalanceInProgressError during a
        rebalance (poll(), then commit again)."""
        group = self._group("commit()")
        todo = self.consumed_offsets() if offsets is None else validate_offsets(offsets)
        await group.commit(todo)

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None,
        callback: CommitCallback | None = None,
    ) -> None:
        """Queue a commit; ``callback(offsets, error_or_None)`` runs in a later poll(),
        commit() or close()."""
        group = self._group("commit_async()")
        if callback is not None and not callable(callback):
            raise ConfigurationError(f"callback must be callable, not {callback!r}")
        todo = self.consumed_offsets() if offsets is None else validate_offsets(offsets)
        group.commit_async(todo, callback)

    @overload
    async def committed(self, partitions: TopicPartition) -> OffsetAndMetadata | None: ...

    @overload
    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]: ...

    async def committed(
        self, partitions: TopicPartition | Iterable[TopicPartition]
    ) -> OffsetAndMetadata | dict[TopicPartition, OffsetAndMetadata | None] | None:
        """The group's committed offset of one partition (None: nothing committed), or a
        dict for a collection of partitions."""
        group = self._group("committed()")
        if isinstance(partitions, TopicPartition):
            return (await group.committed({partitions}))[partitions]
        tps = {TopicPartition(*tp) for tp in partitions}
        return await group.committed(tps)

    # --- positions ------------------------------------------------------------------------

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if offset < 0:
            raise ConfigurationError(f"offset must be >= 0, not {offset}")
        self._parts.seek(partition, offset)
        self._wake_fetcher()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        await self._seek_to(partitions, EARLIEST_TIMESTAMP)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        await self._seek_to(partitions, LATEST_TIMESTAMP)

    async def _seek_to(self, partitions: Sequence[TopicPartition], ts: int) -> None:
        tps = list(partitions) or list(self._parts.states)
        for tp in tps:
            self._parts.state(tp)
        offsets = await list_log_offsets(self.cluster, {tp: ts for tp in tps}, strict=True)
        for tp, (offset, _) in offsets.items():
            self._parts.seek(tp, offset)
        self._wake_fetcher()

    async def position(self, partition: TopicPartition) -> int:
        st = self._parts.state(partition)
        if st.position is None:
            await self._update_positions()
        if st.error is not None:
            raise st.error
        if st.position is None:
            raise IllegalStateError(f"{partition}: its committed offset could not be fetched")
        return st.position

    def highwater(self, partition: TopicPartition) -> int | None:
        hw = self._parts.state(partition).high_watermark
        return hw if hw >= 0 else None

    async def beginning_offsets(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        res = await list_log_offsets(
            self.cluster, {tp: EARLIEST_TIMESTAMP for tp in partitions}, strict=True
        )
        return {tp: off for tp, (off, _) in res.items()}

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        res = await list_log_offsets(
            self.cluster, {tp: LATEST_TIMESTAMP for tp in partitions}, strict=True
        )
        return {tp: off for tp, (off, _) in res.items()}

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        for tp, ts in timestamps.items():
            if ts < 0:
                raise ConfigurationError(f"timestamp for {tp} must be >= 0, not {ts}")
        res = await list_log_offsets(self.cluster, dict(timestamps), strict=True)
        return {
            tp: OffsetAndTimestamp(off, ts) if off >= 0 else None for tp, (off, ts) in res.items()
        }

    async def topics(self) -> set[str]:
        md = await self.cluster.fetch_metadata(None)
        return {t.name for t in md.topics if t.error_code == 0}

    async def partitions_for_topic(self, topic: str) -> set[int] | None:
        try:
            parts = await self.cluster.partitions_for(topic)
        except UnknownTopicOrPartitionError:
            return None
        return {p.partition for p in parts}

    async def _update_positions(self) -> None:
        group = self._coordinator
        if await self._parts.resolve(self.cluster, group.committed if group else None):
            self._wake_fetcher()

    # --- polling ------------------------------------------------------------------------

    async def poll(
        self, timeout_ms: float = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records fetched for the assignment, at most ``max_records`` in all. With a group,
        rebalances (and the listener's callbacks) and auto commits happen in here."""
        limit = max_records or self.config.max_poll_records
        deadline = trio.current_time() + timeout_ms / 1000
        group = self._coordinator
        while True:
            self._data = trio.Event()
            if group is not None:
                await group.poll(deadline)
            await self._update_positions()
            records = self._parts.collect(limit)
            if records:
                self._wake_fetcher()
                return records
            now = trio.current_time()
            if now >= deadline:
                return {}
            wake_at = deadline if group is None else min(deadline, now + group.wake_interval())
            with trio.move_on_at(wake_at):
                await self._data.wait()
