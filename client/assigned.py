"""The consumer's assigned partitions: their fetch states, where their positions come
from, and handing buffered records to poll().

A newly assigned partition has no position. With a ``group_id`` it first asks the group
for its committed offset (``needs_committed``); without one, or when nothing is
committed, ``auto_offset_reset`` decides. A seek in between wins. Split out of
``client.consumer``, which owns one ``AssignedPartitions``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from client.cluster import Cluster
from client.config import ConsumerConfig
from client.errors import BrokerResponseError, ClientError, IllegalStateError, OffsetOutOfRangeError
from client.fetcher import PartitionState
from client.log_offsets import list_log_offsets
from client.logs import get_logger
from client.types import ConsumerRecord, OffsetAndMetadata, TopicPartition
from proto.messages import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

__all__ = ["AssignedPartitions", "CommittedLookup"]

log = get_logger("client.consumer")

CommittedLookup = Callable[
    [set[TopicPartition]], Awaitable[dict[TopicPartition, OffsetAndMetadata | None]]
]


class AssignedPartitions:
    def __init__(self, config: ConsumerConfig) -> None:
        self._config = config
        self.states: dict[TopicPartition, PartitionState] = {}
        self.needs_committed: set[TopicPartition] = set()  # position from the group first
        self._rotate = 0

    def replace(self, partitions: Iterable[TopicPartition]) -> None:
        """A manual assignment: keep the state of partitions that stay."""
        new: dict[TopicPartition, PartitionState] = {}
        for tp in partitions:
            st = self.states.get(tp)
            if st is None:
                st = PartitionState()
                if self._config.group_id is not None:
                    self.needs_committed.add(tp)
            new[tp] = st
        self.needs_committed.intersection_update(new)
        self.states = new

    def add(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions the group assigned: they start at the group's committed offset."""
        for tp in partitions:
            if tp not in self.states:
                self.states[tp] = PartitionState()
                self.needs_committed.add(tp)

    def remove(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.states.pop(tp, None)
            self.needs_committed.discard(tp)

    def state(self, tp: TopicPartition) -> PartitionState:
        st = self.states.get(tp)
        if st is None:
            raise IllegalStateError(f"{tp} is not assigned to this consumer")
        return st

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.state(tp).seek(offset)
        self.needs_committed.discard(TopicPartition(*tp))

    def consumed(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The position of every assigned partition that has one: what a commit of
        "everything consumed" sends (the next offset to read, Kafka's convention)."""
        wanted = None if partitions is None else set(partitions)
        return {
            tp: OffsetAndMetadata(st.position)
            for tp, st in self.states.items()
            if st.position is not None and (wanted is None or tp in wanted)
        }

    async def resolve(self, cluster: Cluster, committed: CommittedLookup | None) -> bool:
        """Positions for partitions without one: the group's committed offset first (with
        a group_id), else ``auto_offset_reset``. True if any position was set."""
        pending = {tp for tp, st in self.states.items() if st.position is None}
        if not pending:
            return False
        from_group = pending & self.needs_committed
        if from_group and committed is not None:
            try:
                offsets = await committed(from_group)
            except (ClientError, BrokerResponseError) as exc:
                if not exc.retriable:
                    raise
                log.info("committed_offsets_unavailable", error=str(exc))
                return False  # again on the next poll; not reset meanwhile
            for tp, om in offsets.items():
                self.needs_committed.discard(tp)
                st = self.states.get(tp)
                if st is not None and st.position is None and om is not None:
                    st.seek(om.offset)
        need = {
            tp: st
            for tp, st in self.states.items()
            if st.position is None and tp not in self.needs_committed
        }
        if not need:
            return True
        reset = self._config.auto_offset_reset
        if reset == "none":
            for tp, st in need.items():
                if st.error is None:
                    st.error = OffsetOutOfRangeError(
                        f"{tp} has no valid position and auto_offset_reset is 'none'"
                    )
            return False
        ts = EARLIEST_TIMESTAMP if reset == "earliest" else LATEST_TIMESTAMP
        found = await list_log_offsets(cluster, dict.fromkeys(need, ts), strict=True)
        for tp, (offset, _) in found.items():
            st = need[tp]
            if st.position is None:  # unless a seek() raced with us
                st.seek(offset)
        return True

    def collect(self, limit: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Up to ``limit`` buffered records, starting with a different partition each time
        (so none starves); a partition's error is raised once nothing else is handed back."""
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        items = list(self.states.items())
        if not items:
            return out
        self._rotate = (self._rotate + 1) % len(items)
        items = items[self._rotate :] + items[: self._rotate]
        count = 0
        for tp, st in items:
            if st.error is not None:
                err, st.error = st.error, None
                if out:  # hand back what we have; the error comes on the next poll
                    st.error = err
                    break
                raise err
            while st.completed and count < limit and st.position is not None:
                cf = st.completed[0]
                records = cf.take(limit - count, st.position)
                if records:
                    count += len(records)
                    out.setdefault(tp, []).extend(records)
                    st.position = records[-1].offset + 1
                if cf.exhausted:
                    st.completed.popleft()
                    st.position = max(st.position, cf.end_offset)
            if count >= limit:
                break
        kd, vd = self._config.key_deserializer, self._config.value_deserializer
        if kd is not None or vd is not None:
            for tp, recs in out.items():
                out[tp] = [
                    r._replace(
                        key=kd(r.key) if kd is not None and r.key is not None else r.key,
                        value=vd(r.value) if vd is not None and r.value is not None else r.value,
                    )
                    for r in recs
                ]
        return out
