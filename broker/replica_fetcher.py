"""One replica fetcher task per leader broker: the follower side of the data path.

Each round sends one ``FetchRequest`` (``replica_id`` = this broker) for every partition
this broker follows on that leader, at the local log end offset, long-polling
(``replica.fetch.wait.max.ms``, ``replica.fetch.min.bytes``). The leader's batches are
appended unchanged (``assign_offsets=False``) and the follower's HW follows the leader's
(``FollowerState.on_fetch_response``). A partition just followed is first truncated where
its log diverges from the leader's: ``OffsetForLeaderEpoch`` for its latest local epoch,
then ``FollowerState.truncation_offset`` (KIP-101, KIP-279), repeated while the answer
names an epoch this log never saw. Errors back off ``replica.fetch.backoff.ms`` and
reconnect; the partition set changes as the metadata view does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio

from broker.log import Log
from broker.replication import EpochEndOffset
from proto import messages as m
from proto.connection import ClientConnection
from proto.errors import BrokerResponseError, MinibrokerError, error_name, for_code

if TYPE_CHECKING:
    from broker.replica_manager import Following, Key, ReplicaManager

log = structlog.get_logger("broker.fetcher")

RECEIVE_SIZE = 256 * 1024


def local_epoch_end_offset(plog: Log) -> Callable[[int], EpochEndOffset]:
    """This log's own OffsetForLeaderEpoch answer, for ``truncation_offset``."""

    def end_offset(epoch: int) -> EpochEndOffset:
        return EpochEndOffset(*plog.leader_epoch_cache.end_offset_for(epoch, plog.log_end_offset))

    return end_offset


class ReplicaFetcher:
    def __init__(self, manager: ReplicaManager, leader_id: int) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.cancel_scope = trio.CancelScope()
        self._partitions: dict[Key, int] = {}  # -> leader epoch
        self._changed = trio.Event()
        self.log = log.bind(broker_id=manager.broker_id, leader=leader_id)

    def set_partitions(self, partitions: dict[Key, int]) -> None:
        if partitions != self._partitions:
            self._partitions = dict(partitions)
            self._changed.set()

    async def run(self) -> None:
        config = self.manager.config
        backoff = config.replica_fetch_backoff_ms / 1000
        with self.cancel_scope:
            self.log.info("replica_fetcher_started", partitions=len(self._partitions))
            while True:
                reg = self.manager.view.brokers.get(self.leader_id)
                if reg is None:
                    await self._pause(backoff)
                    continue
                try:
                    stream = await trio.open_tcp_stream(reg.host, reg.port)
                except OSError as exc:
                    self.log.info("replica_fetcher_connect_failed", error=str(exc))
                    await self._pause(backoff)
                    continue
                try:
                    async with stream:
                        await self._fetch_loop(stream)
                except (OSError, trio.BrokenResourceError, MinibrokerError) as exc:
                    self.log.info("replica_fetch_failed", error=str(exc))
                await self._pause(backoff)

    async def _pause(self, seconds: float) -> None:
        self._changed = trio.Event()
        with trio.move_on_after(seconds):
            await self._changed.wait()

    async def _fetch_loop(self, stream: trio.SocketStream) -> None:
        conn = ClientConnection(f"replica-fetcher-{self.manager.broker_id}")
        config = self.manager.config
        # A partition error right after a leader change usually means the new leader has
        # not seen its own state change yet (NOT_LEADER, UNKNOWN_LEADER_EPOCH): retry soon,
        # backing off to replica.fetch.backoff.ms, rather than sitting out a whole second
        # of acks=all unavailability.
        backoff = config.replica_fetch_backoff_ms / 1000
        delay = min(0.05, backoff)
        while True:
            epochs = self._epoch_request()
            if epochs is not None:
                reply = await self._call(stream, conn, epochs)
                assert isinstance(reply, m.OffsetForLeaderEpochResponse)
                if not self._truncate(reply):
                    await self._pause(delay)
                    delay = min(delay * 2, backoff)
                else:
                    delay = min(0.05, backoff)
                continue
            request = self._request()
            if request is None:
                await self._pause(backoff)
                continue
            response = await self._call(stream, conn, request)
            assert isinstance(response, m.FetchResponse)
            if not self._apply(response):
                await self._pause(delay)
                delay = min(delay * 2, backoff)
            else:
                delay = min(0.05, backoff)

    @staticmethod
    async def _call(
        stream: trio.SocketStream, conn: ClientConnection, request: m.Request
    ) -> m.Response:
        _cid, frame = conn.send_request(request)
        await stream.send_all(frame)
        while (event := conn.next_event()) is None:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise trio.BrokenResourceError("leader closed the connection")
            conn.receive_data(data)
        if event.response is None:
            raise for_code(event.error_code)(f"{type(request).__name__} refused")
        return event.response

    # --- truncation at become-follower ------------------------------------------------

    def _epoch_request(self) -> m.OffsetForLeaderEpochRequest | None:
        """Ask for the partitions still to truncate; those whose log knows no epoch are
        truncated to their HW at once (Kafka's fallback)."""
        by_topic: dict[str, list[m.OffsetForLeaderPartition]] = {}
        for (topic, partition), epoch in sorted(self._partitions.items()):
            following = self.manager.following.get((topic, partition))
            plog = self.manager.logs.get_log(topic, partition)
            if following is None or plog is None or not following.needs_truncation:
                continue
            latest = plog.leader_epoch_cache.latest_epoch
            if latest is None:
                self._truncate_to(topic, partition, following.high_watermark)
                following.needs_truncation = False
                continue
            by_topic.setdefault(topic, []).append(
                m.OffsetForLeaderPartition(partition, epoch, latest)
            )
        if not by_topic:
            return None
        return m.OffsetForLeaderEpochRequest(
            [m.OffsetForLeaderTopic(t, parts) for t, parts in by_topic.items()],
            replica_id=self.manager.broker_id,
        )

    def _replica(self, key: Key) -> tuple[Following, Log] | None:
        """This partition's follower state and log, if we still follow it."""
        following = self.manager.following.get(key)
        plog = self.manager.logs.get_log(*key)
        return None if following is None or plog is None else (following, plog)

    def _truncate(self, reply: m.OffsetForLeaderEpochResponse) -> bool:
        """Apply the leader's answers; False when none could be used (back off)."""
        ok = False
        for t in reply.topics:
            for p in t.partitions:
                key = (t.name, p.partition)
                found = self._replica(key)
                if found is None or not found[0].needs_truncation:
                    continue
                following, plog = found
                if p.error_code:
                    self.log.info(
                        "offset_for_leader_epoch_error",
                        topic=t.name,
                        partition=p.partition,
                        error=error_name(p.error_code),
                        message=p.error_message,
                    )
                    continue
                ok = True
                truncation = following.state.truncation_offset(
                    plog.log_end_offset,
                    EpochEndOffset(p.leader_epoch, p.end_offset),
                    local_epoch_end_offset(plog),
                    following.high_watermark,
                )
                self._truncate_to(t.name, p.partition, truncation.offset)
                following.high_watermark = min(following.high_watermark, plog.log_end_offset)
                following.needs_truncation = not truncation.completed
        return ok

    def _truncate_to(self, topic: str, partition: int, offset: int) -> None:
        plog = self.manager.logs.get_log(topic, partition)
        if plog is not None and offset < plog.log_end_offset:
            self.log.info(
                "follower_truncating",
                topic=topic,
                partition=partition,
                to_offset=offset,
                log_end_offset=plog.log_end_offset,
            )
            plog.truncate_to(offset)
            # What follows is new, so dirty for the log cleaner (Kafka's maybeTruncateCheckpoint).
            self.manager.logs.cleaner.truncate_checkpoint(topic, partition, offset)

    # --- fetching ---------------------------------------------------------------------

    def _request(self) -> m.FetchRequest | None:
        config = self.manager.config
        by_topic: dict[str, list[m.FetchPartition]] = {}
        for (topic, partition), epoch in sorted(self._partitions.items()):
            plog = self.manager.logs.get_log(topic, partition)
            following = self.manager.following.get((topic, partition))
            if plog is None or following is None or following.needs_truncation:
                continue
            by_topic.setdefault(topic, []).append(
                m.FetchPartition(
                    partition,
                    plog.log_end_offset,
                    config.replica_fetch_max_bytes,
                    epoch,
                    plog.log_start_offset,
                )
            )
        if not by_topic:
            return None
        return m.FetchRequest(
            config.replica_fetch_wait_max_ms,
            config.replica_fetch_min_bytes,
            config.replica_fetch_response_max_bytes,
            [m.FetchTopic(t, parts) for t, parts in by_topic.items()],
            replica_id=self.manager.broker_id,
        )

    def _apply(self, response: m.FetchResponse) -> bool:
        """Append what came; False when every partition failed (back off)."""
        ok = False
        for t in response.topics:
            for p in t.partitions:
                key = (t.name, p.partition)
                found = self._replica(key)
                if found is None or key not in self._partitions:
                    continue  # the view moved on while the fetch was in flight
                following, plog = found
                if p.error_code:
                    self.log.info(
                        "replica_fetch_partition_error",
                        topic=t.name,
                        partition=p.partition,
                        error=error_name(p.error_code),
                        message=p.error_message,
                    )
                    continue
                ok = True
                records = p.records
                assert isinstance(records, bytes)
                if records:
                    try:
                        plog.append(records, assign_offsets=False)
                    except BrokerResponseError as exc:
                        self.log.warning(
                            "replica_append_failed",
                            topic=t.name,
                            partition=p.partition,
                            error=str(exc),
                        )
                        ok = False
                        continue
                following.high_watermark = following.state.on_fetch_response(
                    p.high_watermark, plog.log_end_offset, plog.log_start_offset
                )
        return ok
