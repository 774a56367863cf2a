"""One JoinGroup + SyncGroup exchange, run as a background task that poll() waits on.

JoinGroup carries the subscription (and, cooperative, the partitions owned with their
generation); MEMBER_ID_REQUIRED (KIP-394) and a superseded join are answered by joining
again at once. The leader's JoinGroup answer lists every member: it runs the assignor
over their subscriptions with current partition counts and sends the result in its
SyncGroup. The outcome lands in the ``JoinAttempt``: the assignment, a retry (maybe after
a backoff), or a fatal error; every failure's effect on the membership is decided by
``client.group.responses``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from client.assignors import (
    CONSUMER_PROTOCOL_TYPE,
    Assignment,
    RebalanceProtocol,
    Subscription,
    decode_assignment,
    encode_subscription,
)
from client.config import ConsumerConfig
from client.errors import (
    BrokerResponseError,
    ClientError,
    ConfigurationError,
    MemberIdRequiredError,
    MinibrokerError,
    NotCoordinatorError,
    RemoteProtocolError,
    for_code,
)
from client.group.discovery import CoordinatorLink
from client.group.membership import (
    LeaderInput,
    Membership,
    member_subscriptions,
    perform_assignment,
)
from client.group.responses import JOIN_GROUP, SYNC_GROUP, Action, action_for
from client.group.subscription import SubscriptionState
from client.group.timers import MemberTimers
from client.group.topics import TopicWatch
from client.logs import get_logger
from client.types import OffsetAndMetadata, TopicPartition
from proto.group_messages import (
    JoinGroupMemberMetadata,
    JoinGroupProtocol,
    JoinGroupRequest,
    JoinGroupResponse,
    SyncGroupAssignment,
    SyncGroupRequest,
    SyncGroupResponse,
)

__all__ = ["JOIN_TIMEOUT_MARGIN_MS", "GroupHost", "JoinAttempt", "JoinExchange"]

log = get_logger("client.group.rebalance")

# Kafka's JOIN_GROUP_TIMEOUT_LAPSE: the coordinator may hold a JoinGroup (or SyncGroup)
# for the whole rebalance timeout, so the request waits that long and a bit more.
JOIN_TIMEOUT_MARGIN_MS = 5_000


class GroupHost(Protocol):
    """What the coordinator needs from the consumer that owns it."""

    def owned_partitions(self) -> set[TopicPartition]: ...

    def consumed_offsets(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]: ...

    def add_partitions(self, partitions: Iterable[TopicPartition]) -> None: ...

    def remove_partitions(self, partitions: Iterable[TopicPartition]) -> None: ...

    def wake(self) -> None: ...


@dataclass(eq=False)
class JoinAttempt:
    """One exchange's outcome. ``stale``: superseded (the member left or was reset while
    it ran): whatever it got is dropped."""

    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    assignment: Assignment | None = None
    retry_at: float = 0.0
    error: MinibrokerError | None = None
    stale: bool = False


class JoinExchange:
    def __init__(
        self,
        config: ConsumerConfig,
        membership: Membership,
        timers: MemberTimers,
        link: CoordinatorLink,
        topics: TopicWatch,
        host: GroupHost,
        subscription: SubscriptionState,
    ) -> None:
        assert config.group_id is not None
        self.group_id = config.group_id
        self._config = config
        self._m = membership
        self._timers = timers
        self._link = link
        self._topics = topics
        self._host = host
        self._subscription = subscription
        self.on_joined: Callable[[], None] = lambda: None  # start heartbeating
        self._log = log.bind(group_id=self.group_id)

    async def run(self, attempt: JoinAttempt) -> None:
        try:
            with attempt.scope:
                await self._join_and_sync(attempt)
        finally:
            attempt.done.set()
            self._host.wake()

    def _join_request(self) -> JoinGroupRequest:
        m, cfg = self._m, self._config
        topics = tuple(sorted(self._subscription.topics))
        if cfg.rebalance_protocol is RebalanceProtocol.COOPERATIVE and m.generation.valid:
            owned = tuple(sorted(self._host.owned_partitions()))
            sub = Subscription(topics, owned, b"", m.generation.generation_id)
        else:
            # Eager members own nothing when they join, so the generation says nothing
            # either: leaving both out keeps the metadata of a restarted static member
            # equal to its predecessor's, and the coordinator does not rebalance for it.
            sub = Subscription(topics)
        metadata = encode_subscription(sub)
        return JoinGroupRequest(
            self.group_id,
            cfg.session_timeout_ms,
            cfg.rebalance_timeout_ms,
            m.member_id,
            CONSUMER_PROTOCOL_TYPE,
            [JoinGroupProtocol(name, metadata) for name in cfg.partition_assignment_strategy],
            m.group_instance_id,
            m.rejoin_reason,
        )

    async def _exchange(self, request: JoinGroupRequest | SyncGroupRequest) -> tuple[int, Any]:
        """(error code, response); a broken connection counts as NOT_COORDINATOR (the
        link has already forgotten the coordinator)."""
        timeout = self._config.rebalance_timeout_ms + JOIN_TIMEOUT_MARGIN_MS
        try:
            resp = await self._link.send(request, join=True, timeout_ms=timeout)
        except ClientError:
            return NotCoordinatorError.code, None
        except BrokerResponseError as exc:
            return exc.code, None
        assert isinstance(resp, JoinGroupResponse | SyncGroupResponse)
        return resp.error_code, resp

    async def _join_and_sync(self, attempt: JoinAttempt) -> None:
        m = self._m
        while True:
            request = self._join_request()
            m.join_sent()
            code, join = await self._exchange(request)
            if attempt.stale:
                return
            action = action_for(JOIN_GROUP, code)
            if action is Action.OK:
                break
            if action is not Action.RETRY:
                self._failed(attempt, action, code, "JoinGroup")
                return
            if code == MemberIdRequiredError.code and join is not None:
                m.member_id_required(join.member_id)
        assert isinstance(join, JoinGroupResponse)
        m.joined(join.generation_id, join.member_id, join.protocol_name, join.leader)
        self._timers.reset(trio.current_time() * 1000)
        self.on_joined()
        assignments: list[SyncGroupAssignment] = []
        if m.is_leader and not join.skip_assignment:
            try:
                assignments = await self._assign(join.protocol_name or "", join.members)
            except (ClientError, BrokerResponseError) as exc:
                self._log.info("assignment_failed", error=str(exc))
                m.rebalance_failed(f"the leader could not assign: {exc}")
                backoff = self._config.connection.retry_backoff_ms / 1000
                attempt.retry_at = trio.current_time() + backoff
                return
            except (RemoteProtocolError, ConfigurationError) as exc:
                m.rebalance_failed(f"the leader could not assign: {exc}")
                attempt.error = exc
                return
            if attempt.stale:
                return
        gen = m.generation
        request_sync = SyncGroupRequest(
            self.group_id,
            gen.generation_id,
            gen.member_id,
            assignments,
            m.group_instance_id,
            CONSUMER_PROTOCOL_TYPE,
            gen.protocol_name,
        )
        code, sync = await self._exchange(request_sync)
        if attempt.stale:
            return
        action = action_for(SYNC_GROUP, code)
        if action is not Action.OK:
            self._failed(attempt, action, code, "SyncGroup")
            return
        assert isinstance(sync, SyncGroupResponse)
        try:
            attempt.assignment = decode_assignment(sync.assignment)
        except RemoteProtocolError as exc:
            m.rebalance_failed(f"undecodable assignment: {exc}")
            attempt.error = exc
            return
        m.synced()

    def _failed(self, attempt: JoinAttempt, action: Action, code: int, what: str) -> None:
        m = self._m
        err = for_code(code)(f"{what} for group {self.group_id!r}")
        reason = f"{what} failed: {err.name}"
        self._log.info("rebalance_failed", request=what, error=err.name, action=action.value)
        if action is Action.RESET_REJOIN:
            m.reset_generation(reason)
            return
        m.rebalance_failed(reason)
        if action in (Action.FATAL, Action.FAIL):
            attempt.error = err
        elif action is Action.REDISCOVER:
            self._link.mark_unknown(reason)
        elif action is Action.BACKOFF:
            backoff = self._config.connection.retry_backoff_ms / 1000
            attempt.retry_at = trio.current_time() + backoff

    async def _assign(
        self, protocol: str, members: list[JoinGroupMemberMetadata]
    ) -> list[SyncGroupAssignment]:
        """The leader's job: every member's subscription, current partition counts, the
        assignor chosen by the group."""
        subs = member_subscriptions(
            [LeaderInput(x.member_id, x.group_instance_id, x.metadata) for x in members]
        )
        topics = {t for s in subs.values() for t in s.topics}
        counts = await self._topics.partition_counts(topics)
        result = perform_assignment(protocol, subs, counts)
        self._log.info("assigned", protocol=protocol, members=len(subs), topics=sorted(counts))
        return [SyncGroupAssignment(mid, data) for mid, data in result.items()]
