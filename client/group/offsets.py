"""Committed offsets: OffsetCommit and OffsetFetch against the group coordinator.

A commit of a subscribed consumer carries its generation and member id, so the
coordinator refuses it once the group has moved on without it (CommitFailedError); a
consumer that assigned its partitions itself commits with generation -1. A commit is
retried against whichever broker coordinates the group until ``deadline``; the broker
answers only once the commit is replicated (acks=all). Commits go out one at a time, in
the order they were asked for (``commit_async`` ones included), so a later commit never
lands before an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import trio

from client.errors import (
    BrokerResponseError,
    ClientError,
    CommitFailedError,
    ConfigurationError,
    MinibrokerError,
    RebalanceInProgressError,
    RequestTimedOutError,
    for_code,
)
from client.group.discovery import CoordinatorLink
from client.group.membership import Generation, Membership, commit_failed
from client.group.responses import (
    COMMIT,
    OFFSET_FETCH,
    OFFSET_FETCH_PARTITION,
    Action,
    action_for,
)
from client.logs import get_logger
from client.types import OffsetAndMetadata, TopicPartition
from proto.group_messages import (
    NO_GENERATION,
    NO_LEADER_EPOCH,
    NO_OFFSET,
    UNKNOWN_MEMBER_ID,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitTopic,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchTopic,
)

__all__ = ["OffsetsClient", "validate_offsets"]

log = get_logger("client.group.offsets")


def validate_offsets(offsets: object) -> dict[TopicPartition, OffsetAndMetadata]:
    """``{TopicPartition: OffsetAndMetadata | int}`` as given to commit(); anything else is
    a ConfigurationError that says what is wrong."""
    if not isinstance(offsets, Mapping):
        raise ConfigurationError(
            f"offsets must map TopicPartition to OffsetAndMetadata, not {offsets!r}"
        )
    out: dict[TopicPartition, OffsetAndMetadata] = {}
    for tp, om in offsets.items():
        if not (
            isinstance(tp, tuple)
            and len(tp) == 2
            and isinstance(tp[0], str)
            and type(tp[1]) is int
            and tp[1] >= 0
        ):
            raise ConfigurationError(f"{tp!r} is not a TopicPartition")
        if type(om) is int:
            om = OffsetAndMetadata(om)
        if not isinstance(om, OffsetAndMetadata) or type(om.offset) is not int or om.offset < 0:
            raise ConfigurationError(
                f"offset for {tp} must be an OffsetAndMetadata with offset >= 0, not {om!r}"
            )
        if not isinstance(om.metadata, str):
            raise ConfigurationError(f"metadata for {tp} must be a str, not {om.metadata!r}")
        out[TopicPartition(*tp)] = om
    return out


class OffsetsClient:
    def __init__(
        self,
        group_id: str,
        link: CoordinatorLink,
        membership: Membership,
        *,
        retry_backoff_ms: float,
        group_managed: Callable[[], bool],
        on_fatal: Callable[[MinibrokerError], None],
    ) -> None:
        self.group_id = group_id
        self._link = link
        self._membership = membership
        self._backoff = retry_backoff_ms / 1000
        self._group_managed = group_managed  # subscribed (True) or assigned manually
        self._on_fatal = on_fatal
        self.lock = trio.Lock()  # one commit at a time, in order (trio's Lock is fair)

    # -- OffsetCommit ---------------------------------------------------------------------

    async def commit(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata], deadline: float
    ) -> None:
        """Commit until every partition is acknowledged or ``deadline`` (trio time) passes
        (RequestTimedOutError). Raises CommitFailedError, RebalanceInProgressError, or the
        broker's error for a non-retriable code."""
        if not offsets:
            return
        async with self.lock:
            await self._commit(dict(offsets), deadline)

    async def _commit(self, todo: dict[TopicPartition, OffsetAndMetadata], deadline: float) -> None:
        m = self._membership
        last: MinibrokerError | None = None
        while todo:
            if trio.current_time() >= deadline:
                raise RequestTimedOutError(
                    f"offset commit for group {self.group_id!r} not acknowledged in time"
                ) from last
            generation: Generation | None = None
            instance: str | None = None
            if self._group_managed():
                refusal = m.commit_refusal()
                if refusal is not None:
                    raise refusal
                generation, instance = m.generation, m.group_instance_id
            if not await self._link.ensure(deadline):
                continue
            request = _commit_request(self.group_id, todo, generation, instance)
            codes: dict[TopicPartition, int] | None = None
            try:
                with trio.move_on_at(deadline):
                    response = await self._link.send(request)
                    assert isinstance(response, OffsetCommitResponse)
                    codes = {
                        TopicPartition(t.name, p.partition): p.error_code
                        for t in response.topics
                        for p in t.partitions
                    }
            except (ClientError, BrokerResponseError) as exc:
                if isinstance(exc, BrokerResponseError) and not exc.retriable:
                    raise
                last = exc
                await self._pause(deadline)
                continue
            if codes is None:
                continue  # the deadline passed: the loop's head raises
            retry_error = self._apply(todo, codes, generation)
            if retry_error is not None:
                last = retry_error
                await self._pause(deadline)

    async def _pause(self, deadline: float) -> None:
        await trio.sleep_until(min(deadline, trio.current_time() + self._backoff))

    def _apply(
        self,
        todo: dict[TopicPartition, OffsetAndMetadata],
        codes: Mapping[TopicPartition, int],
        generation: Generation | None,
    ) -> MinibrokerError | None:
        """Drop acknowledged partitions from ``todo``; raise what ends the commit; return
        the error to retry after, if any partition must be sent again."""
        retry: MinibrokerError | None = None
        for tp, code in codes.items():
            if tp not in todo:
                continue
            action = action_for(COMMIT, code)
            if action is Action.OK:
                del todo[tp]
                continue
            err = for_code(code)(f"commit of {tp} for group {self.group_id!r}")
            if action is Action.REDISCOVER:
                self._link.mark_unknown(f"OffsetCommit: {err.name}")
                retry = err
            elif action is Action.BACKOFF:
                retry = err
            elif action is Action.REJOIN:
                self._membership.request_rejoin(f"OffsetCommit: {err.name}")
                raise RebalanceInProgressError(
                    "the group is rebalancing: call poll() to complete it, then commit again"
                ) from err
            elif action is Action.RESET_REJOIN:
                raise self._stale_member(generation, err) from err
            else:
                if action is Action.FATAL:
                    self._on_fatal(err)
                raise err
        return retry

    def _stale_member(self, sent: Generation | None, err: BrokerResponseError) -> CommitFailedError:
        m = self._membership
        if sent is None:  # a manual-assignment commit while the group has members
            return CommitFailedError(
                f"commit with generation -1 refused ({err.name}): group {self.group_id!r} has "
                "active members, which own its partitions"
            )
        if m.generation == sent:  # not reset by someone else meanwhile
            m.reset_generation(f"OffsetCommit got {err.name}")
        return commit_failed(m.reset_reason)

    # -- OffsetFetch ----------------------------------------------------------------------

    async def fetch(
        self, partitions: set[TopicPartition], deadline: float
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """The committed offset of each partition (None: nothing committed)."""
        if not partitions:
            return {}
        by_topic: dict[str, list[int]] = {}
        for tp in sorted(partitions):
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        request = OffsetFetchRequest(
            self.group_id, [OffsetFetchTopic(t, ps) for t, ps in by_topic.items()]
        )
        last: MinibrokerError | None = None
        while True:
            if trio.current_time() >= deadline:
                raise RequestTimedOutError(
                    f"committed offsets of group {self.group_id!r} not fetched in time"
                ) from last
            if not await self._link.ensure(deadline):
                continue
            try:
                with trio.move_on_at(deadline) as scope:
                    response = await self._link.send(request)
                if scope.cancelled_caught:
                    continue
                assert isinstance(response, OffsetFetchResponse)
                return self._fetched(partitions, response)
            except _Retry as exc:
                last = exc.error
            except (ClientError, BrokerResponseError) as exc:
                if isinstance(exc, BrokerResponseError) and not exc.retriable:
                    raise
                last = exc
            await trio.sleep_until(min(deadline, trio.current_time() + self._backoff))

    def _fetched(
        self, partitions: set[TopicPartition], response: OffsetFetchResponse
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        action = action_for(OFFSET_FETCH, response.error_code)
        if action is not Action.OK:
            err = for_code(response.error_code)(f"OffsetFetch for group {self.group_id!r}")
            if action is Action.REDISCOVER:
                self._link.mark_unknown(f"OffsetFetch: {err.name}")
            if action in (Action.REDISCOVER, Action.BACKOFF):
                raise _Retry(err)
            raise err
        out: dict[TopicPartition, OffsetAndMetadata | None] = dict.fromkeys(partitions)
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition)
                if tp not in out:
                    continue
                action = action_for(OFFSET_FETCH_PARTITION, p.error_code)
                if action is Action.OK and p.committed_offset != NO_OFFSET:
                    epoch = p.committed_leader_epoch
                    out[tp] = OffsetAndMetadata(
                        p.committed_offset,
                        p.metadata or "",
                        None if epoch == NO_LEADER_EPOCH else epoch,
                    )
                elif action is Action.BACKOFF:
                    raise _Retry(for_code(p.error_code)(f"committed offset of {tp}"))
                elif action not in (Action.OK, Action.SKIP):
                    raise for_code(p.error_code)(f"committed offset of {tp}")
        return out


class _Retry(Exception):
    def __init__(self, error: MinibrokerError) -> None:
        super().__init__(str(error))
        self.error = error


def _commit_request(
    group_id: str,
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
    generation: Generation | None,
    instance: str | None,
) -> OffsetCommitRequest:
    topics: dict[str, list[OffsetCommitPartition]] = {}
    for tp, om in sorted(offsets.items()):
        epoch = om.leader_epoch if om.leader_epoch is not None else NO_LEADER_EPOCH
        topics.setdefault(tp.topic, []).append(
            OffsetCommitPartition(tp.partition, om.offset, epoch, om.metadata)
        )
    gen_id, member = NO_GENERATION, UNKNOWN_MEMBER_ID
    if generation is not None:
        gen_id, member = generation.generation_id, generation.member_id
    return OffsetCommitRequest(
        group_id,
        [OffsetCommitTopic(t, ps) for t, ps in topics.items()],
        gen_id,
        member,
        instance,
    )
