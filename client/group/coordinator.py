"""The consumer's group runtime (Kafka's ConsumerCoordinator) on trio.

Who does what, as in Kafka:

- ``poll()`` (the application's own call) runs the rebalance: it revokes before joining
  (eager: everything, after committing the positions; cooperative: only topics no longer
  subscribed), starts the JoinGroup/SyncGroup exchange (``client.group.rebalance``) as a
  background task and waits for it no longer than its own timeout, so cooperative
  members keep consuming what they own meanwhile; then applies the result and runs the
  listener. Auto commits start from here too.
- the heartbeat task (``client.group.heartbeat``) only *detects*: rebalances, a lost
  membership, a moved coordinator, an expired poll interval.
- commits (sync, async, automatic) go through one queue (``client.group.commits``).
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from client.assignors import Assignment
from client.cluster import Cluster
from client.config import ConsumerConfig
from client.errors import MinibrokerError
from client.group.commits import CommitCallback, CommitQueue
from client.group.discovery import CoordinatorLink
from client.group.heartbeat import HeartbeatTask
from client.group.listener import CallbackRunner, invoke_listener
from client.group.membership import (
    Membership,
    MemberState,
    rebalance_changes,
    revoked_before_join,
)
from client.group.offsets import OffsetsClient
from client.group.rebalance import GroupHost, JoinAttempt, JoinExchange
from client.group.subscription import SubscriptionState, SubscriptionType
from client.group.timers import MemberTimers
from client.group.topics import TopicWatch
from client.logs import get_logger
from client.types import OffsetAndMetadata, TopicPartition
from proto.group_messages import LeaveGroupMember, LeaveGroupRequest

__all__ = ["CommitCallback", "ConsumerCoordinator", "GroupHost"]

log = get_logger("client.group")


class ConsumerCoordinator:
    def __init__(
        self,
        config: ConsumerConfig,
        cluster: Cluster,
        nursery: trio.Nursery,
        host: GroupHost,
        subscription: SubscriptionState,
        runner: CallbackRunner,
    ) -> None:
        assert config.group_id is not None
        self.config = config
        self.group_id = group_id = config.group_id
        self.subscription = subscription
        self.protocol = config.rebalance_protocol
        self.membership = m = Membership(config.group_instance_id)
        backoff_ms = config.connection.retry_backoff_ms
        self.timers = MemberTimers(
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            session_timeout_ms=config.session_timeout_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            retry_backoff_ms=backoff_ms,
            now_ms=trio.current_time() * 1000,
        )
        self.link = link = CoordinatorLink(group_id, cluster, nursery)
        self.offsets = OffsetsClient(
            group_id,
            link,
            m,
            retry_backoff_ms=backoff_ms,
            group_managed=lambda: self.subscription.auto,
            on_fatal=self._set_fatal,
        )
        self.commits = CommitQueue(group_id, self.offsets, nursery, runner, host.wake)
        self.topics = TopicWatch(
            cluster,
            subscription,
            allow_auto_create_topics=config.allow_auto_create_topics,
            on_change=self._topics_changed,
        )
        self.exchange = JoinExchange(config, m, self.timers, link, self.topics, host, subscription)
        self.heartbeat = HeartbeatTask(
            group_id,
            m,
            self.timers,
            link,
            active=lambda: self.subscription.auto and self._fatal is None and not self._closed,
            on_reset=self._drop_join,
            on_fatal=self._set_fatal,
            leave=self._leave,
            wake_host=host.wake,
            request_timeout_ms=config.connection.request_timeout_ms,
        )
        self.exchange.on_joined = self.heartbeat.wake
        self._nursery = nursery
        self._host = host
        self._runner = runner
        self._log = log.bind(group_id=group_id)
        self._join: JoinAttempt | None = None
        self._retry_join_at = 0.0
        self._prepared = False  # revocation before this rebalance's JoinGroup done
        self._fatal: MinibrokerError | None = None
        self._listener_error: Exception | None = None
        self._next_auto_commit = trio.current_time() + config.auto_commit_interval_ms / 1000
        self._closed = False
        nursery.start_soon(self.heartbeat.run)

    @property
    def _timeout(self) -> float:
        return self.config.connection.request_timeout_ms / 1000

    # -- poll --------------------------------------------------------------------------

    async def poll(self, deadline: float) -> None:
        """One step of the group's work from the application's poll(): callbacks of
        finished async commits, the rebalance (waiting at most until ``deadline``), auto
        commit. Raises a fatal error, or the first error a callback raised."""
        self._raise_fatal()
        self._note(await self.commits.run_callbacks())
        if self.subscription.auto:
            self.polled()
            max_age = self.config.connection.metadata_max_age_ms / 1000
            if self.subscription.type is SubscriptionType.AUTO_PATTERN and (
                self.topics.pattern_stale(max_age)
            ):
                await self.topics.match_pattern()
            if self._rejoin_needed_or_pending():
                await self._ensure_active_group(deadline)
            self._raise_fatal()
        if self._listener_error is not None:
            err, self._listener_error = self._listener_error, None
            raise err
        self._maybe_auto_commit()

    def polled(self) -> None:
        self.timers.polled(trio.current_time() * 1000)

    def wake_interval(self) -> float:
        """Seconds the consumer's poll() may wait for data before calling poll() here again
        (auto commit, rejoins the heartbeat task asked for)."""
        wait = self.config.heartbeat_interval_ms / 1000
        if self.config.enable_auto_commit:
            wait = min(wait, max(0.0, self._next_auto_commit - trio.current_time()))
        return wait

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _set_fatal(self, error: MinibrokerError) -> None:
        if self._fatal is None:
            self._log.error("group_member_fatal", error=str(error))
            self._fatal = error
        self._host.wake()
        self.heartbeat.wake()

    def _note(self, error: Exception | None) -> None:
        if error is not None and self._listener_error is None:
            self._listener_error = error

    def subscription_changed(self) -> None:
        self.topics.pattern_forget()
        self.membership.request_rejoin("the subscription changed")
        self._host.wake()
        self.heartbeat.wake()

    def _topics_changed(self, reason: str) -> None:
        self.membership.request_rejoin(reason)
        self._host.wake()

    def _rejoin_needed_or_pending(self) -> bool:
        m = self.membership
        return self._join is not None or m.rejoin_needed or m.state is not MemberState.STABLE

    def _drop_join(self) -> None:
        """The generation was reset under a join in flight: its answer means nothing."""
        attempt = self._join
        if attempt is not None:
            attempt.stale = True
            attempt.scope.cancel()

    # -- the rebalance, driven from poll() ------------------------------------------------

    async def _ensure_active_group(self, deadline: float) -> None:
        while self._rejoin_needed_or_pending():
            attempt = self._join
            if attempt is None:
                if trio.current_time() < self._retry_join_at:
                    await trio.sleep_until(min(deadline, self._retry_join_at))
                    if trio.current_time() < self._retry_join_at:
                        return
                if not await self.link.ensure(deadline):
                    return
                if self.subscription.type is SubscriptionType.AUTO_PATTERN:
                    await self.topics.match_pattern()
                await self._prepare_join()
                if not self.membership.generation.valid and self._host.owned_partitions():
                    continue  # reset while the listener ran: those partitions are lost
                attempt = self._join = JoinAttempt()
                self._nursery.start_soon(self.exchange.run, attempt)
            if not await self._wait(attempt.done, deadline):
                return
            self._join = None
            if attempt.error is not None:
                self._set_fatal(attempt.error)
                raise attempt.error
            if attempt.assignment is None or attempt.stale:
                self._retry_join_at = attempt.retry_at
                continue
            self._prepared = False
            await self._complete_join(attempt.assignment)

    async def _wait(self, event: trio.Event, deadline: float) -> bool:
        """Wait for ``event`` until ``deadline``; the application is in poll() meanwhile."""
        while not event.is_set():
            now = trio.current_time()
            if now >= deadline:
                return False
            with trio.move_on_at(min(deadline, now + self.config.heartbeat_interval_ms / 1000)):
                await event.wait()
            self.polled()
        return True

    async def _revoke(self, partitions: Iterable[TopicPartition], callback: str) -> None:
        """Tell the listener, then drop the partitions from the assignment."""
        parts = set(partitions)
        if parts:
            self._log.info(callback.removeprefix("on_"), partitions=sorted(parts))
            listener = self.subscription.listener
            self._note(await invoke_listener(listener, callback, parts, self._runner))
            self._host.remove_partitions(parts)

    async def _prepare_join(self) -> None:
        """Kafka's onJoinPrepare: after a reset the partitions are lost; otherwise commit
        and revoke, once per rebalance."""
        m, host = self.membership, self._host
        owned = host.owned_partitions()
        if not m.generation.valid:
            await self._revoke(owned, "on_partitions_lost")
            self._prepared = True
            return
        if self._prepared:
            return
        self._prepared = True
        if self.config.enable_auto_commit:
            await self._commit_quietly(host.consumed_offsets(), "before rebalance")
        revoked = revoked_before_join(self.protocol, owned, self.subscription.topics)
        await self._revoke(revoked, "on_partitions_revoked")

    async def _complete_join(self, assignment: Assignment) -> None:
        """Kafka's onJoinComplete: revoke what the assignment dropped (cooperative), take
        what it added, tell the listener, and rejoin at once if anything was revoked."""
        m, host = self.membership, self._host
        changes = rebalance_changes(self.protocol, host.owned_partitions(), assignment.partitions)
        if not m.is_leader:
            self.topics.forget()
        if changes.revoked and self.config.enable_auto_commit:
            await self._commit_quietly(host.consumed_offsets(changes.revoked), "on revocation")
        await self._revoke(changes.revoked, "on_partitions_revoked")
        host.add_partitions(changes.added)
        self._log.info(
            "joined_group",
            generation=m.generation.generation_id,
            member_id=m.generation.member_id,
            leader=m.is_leader,
            protocol=m.generation.protocol_name,
            assigned=sorted(assignment.partitions),
            added=sorted(changes.added),
        )
        listener = self.subscription.listener
        added = set(changes.added)
        self._note(await invoke_listener(listener, "on_partitions_assigned", added, self._runner))
        if changes.rejoin:
            m.request_rejoin("partitions were revoked: they must be reassigned (KIP-429)")

    # -- commits -------------------------------------------------------------------------

    def _deadline(self, timeout_ms: float | None = None) -> float:
        timeout = self._timeout if timeout_ms is None else timeout_ms / 1000
        return trio.current_time() + timeout

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self._raise_fatal()
        try:
            await self.commits.commit(offsets, self._deadline(), "commit")
        finally:
            self._note(await self.commits.run_callbacks())

    def commit_async(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], callback: CommitCallback | None
    ) -> None:
        self.commits.commit_async(offsets, self._deadline(), callback)

    async def committed(
        self, partitions: set[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        return await self.offsets.fetch(partitions, self._deadline())

    async def _commit_quietly(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], why: str
    ) -> None:
        """An automatic commit (before a revocation, on close): a failure is logged; the
        records since the last commit will be read again by the next owner."""
        try:
            await self.commits.commit(offsets, self._deadline(), f"auto commit {why}")
        except MinibrokerError as exc:
            self._log.warning("auto_commit_failed", when=why, error=str(exc))

    def _maybe_auto_commit(self) -> None:
        if not self.config.enable_auto_commit:
            return
        now = trio.current_time()
        if now < self._next_auto_commit:
            return
        self._next_auto_commit = now + self.config.auto_commit_interval_ms / 1000
        if self.subscription.auto and self.membership.generation_if_stable() is None:
            return  # rebalancing: the commit before revocation covers it
        offsets = self._host.consumed_offsets()
        if offsets:
            self.commits.commit_async(offsets, self._deadline(), None, "auto commit")

    # -- leaving -------------------------------------------------------------------------

    async def _leave(self, reason: str) -> None:
        """Kafka's maybeLeaveGroup: forget the generation; a dynamic member also tells the
        coordinator (LeaveGroup), so the group rebalances now rather than after the
        session timeout. A static member does not: its return within the session timeout
        must not move its partitions."""
        m = self.membership
        self._drop_join()
        # Mid-join a member has an id (MEMBER_ID_REQUIRED gave it) but no generation yet:
        # it leaves all the same, or the rebalance would wait for it.
        member_id = m.generation.member_id if m.generation.valid else m.member_id
        m.left(reason)
        self.topics.forget()
        if m.is_static or not member_id or not self.link.known:
            return
        request = LeaveGroupRequest(self.group_id, [LeaveGroupMember(member_id, None, reason)])
        self._log.info("leaving_group", member_id=member_id, reason=reason)
        try:
            with trio.move_on_after(self._timeout):
                await self.link.send(request)
        except MinibrokerError as exc:
            self._log.info("leave_group_failed", error=str(exc))

    async def _give_up_partitions(self, why: str) -> None:
        m, host = self.membership, self._host
        if m.generation.valid:
            if self.config.enable_auto_commit:
                await self._commit_quietly(host.consumed_offsets(), why)
            await self._revoke(host.owned_partitions(), "on_partitions_revoked")
        else:
            await self._revoke(host.owned_partitions(), "on_partitions_lost")

    async def unsubscribe(self) -> None:
        if self.subscription.auto:
            await self._give_up_partitions("on unsubscribe")
            await self._leave("the consumer unsubscribed from all topics")
        self._prepared = False

    async def close(self) -> None:
        """Commit (auto commit), revoke, leave (dynamic members), wait for queued commits."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.subscription.auto:
                await self._give_up_partitions("on close")
                await self._leave("the consumer is being closed")
            elif self.config.enable_auto_commit:
                await self._commit_quietly(self._host.consumed_offsets(), "on close")
            await self.commits.drain(self._deadline())
            self._note(await self.commits.run_callbacks())
            if self._listener_error is not None:
                self._log.warning("callback_failed_on_close", error=repr(self._listener_error))
        finally:
            await self.link.aclose()
