"""The heartbeat task: keeps the member's session alive and notices what poll() must act on.

It heartbeats every heartbeat_interval_ms while the member is in a generation (from the
JoinGroup answer on), and only *detects* (Kafka's HeartbeatThread): REBALANCE_IN_PROGRESS
flags a rejoin, UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION reset the generation (the
partitions are lost), NOT_COORDINATOR or a broken connection send it looking for the
coordinator again, FENCED_INSTANCE_ID is fatal. The rebalance itself happens in poll().
When the application has not called poll() for max_poll_interval_ms, it leaves the group
("consumer poll timeout has expired"): the partitions go to members that do poll.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from client.errors import (
    BrokerResponseError,
    ClientError,
    MinibrokerError,
    NotCoordinatorError,
    for_code,
)
from client.group.discovery import CoordinatorLink
from client.group.membership import POLL_TIMEOUT_REASON, Membership, MemberState
from client.group.responses import HEARTBEAT, Action, action_for
from client.group.timers import MemberTimers
from client.logs import get_logger
from proto.group_messages import HeartbeatRequest, HeartbeatResponse

__all__ = ["HeartbeatTask"]

log = get_logger("client.group.heartbeat")


class HeartbeatTask:
    def __init__(
        self,
        group_id: str,
        membership: Membership,
        timers: MemberTimers,
        link: CoordinatorLink,
        *,
        active: Callable[[], bool],
        on_reset: Callable[[], None],
        on_fatal: Callable[[MinibrokerError], None],
        leave: Callable[[str], Awaitable[None]],
        wake_host: Callable[[], None],
        request_timeout_ms: float,
    ) -> None:
        self.group_id = group_id
        self._request_timeout_ms = request_timeout_ms
        self._m = membership
        self._timers = timers
        self._link = link
        self._active = active  # subscribed, not closing, no fatal error
        self._on_reset = on_reset  # the generation was reset: drop a join in flight
        self._on_fatal = on_fatal
        self._leave = leave
        self._wake_host = wake_host
        self._wake = trio.Event()
        self._log = log.bind(group_id=group_id)
        self.sent = 0  # heartbeats sent (tests count them)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        m, timers = self._m, self._timers
        backoff = timers.retry_backoff_ms / 1000
        while True:
            self._wake = trio.Event()
            if not self._active() or not m.sends_heartbeats:
                await self._wake.wait()
                continue
            now = trio.current_time() * 1000
            if timers.poll_expired(now):
                self._log.warning(
                    "poll_timeout_expired", max_poll_interval_ms=timers.max_poll_interval_ms
                )
                await self._leave(POLL_TIMEOUT_REASON)
                self._wake_host()
                continue
            if not self._link.known:
                try:
                    await self._link.ensure(trio.current_time() + backoff)
                except MinibrokerError as exc:
                    self._log.info("find_coordinator_failed", error=str(exc))
                    await trio.sleep(backoff)
                continue
            if timers.session_expired(now):
                self._link.mark_unknown("session timed out without a heartbeat response")
                timers.restart_session(now)
                continue
            delay = timers.time_to_next_event(now)
            if delay > 0:
                with trio.move_on_after(delay / 1000):
                    await self._wake.wait()
                continue
            await self._beat()

    async def _beat(self) -> None:
        m, timers = self._m, self._timers
        gen = m.generation
        timers.heartbeat_sent(trio.current_time() * 1000)
        self.sent += 1
        try:
            # An answer later than the session timeout is worthless: the coordinator has
            # given up on us by then (a request timeout also closes the connection).
            resp = await self._link.send(
                HeartbeatRequest(
                    self.group_id, gen.generation_id, gen.member_id, m.group_instance_id
                ),
                timeout_ms=min(self._request_timeout_ms, timers.session_timeout_ms),
            )
            assert isinstance(resp, HeartbeatResponse)
            code = resp.error_code
        except ClientError:
            code = NotCoordinatorError.code  # the link already forgot the coordinator
        except BrokerResponseError as exc:
            code = exc.code
        now = trio.current_time() * 1000
        if m.generation != gen:  # the answer is about a generation we no longer have
            timers.heartbeat_failed(now)
            return
        action = action_for(HEARTBEAT, code)
        if action is Action.OK:
            timers.heartbeat_received(now)
            return
        name = for_code(code).name
        self._log.info("heartbeat_error", error=name, action=action.value)
        if action is Action.REJOIN:
            timers.heartbeat_received(now)  # the coordinator is alive and knows us
            if m.state is MemberState.STABLE:
                m.request_rejoin("the group is rebalancing (heartbeat)")
                self._wake_host()
        elif action is Action.RESET_REJOIN:
            timers.heartbeat_failed(now)
            m.reset_generation(f"Heartbeat got {name}")
            self._on_reset()
            self._wake_host()
        elif action is Action.REDISCOVER:
            timers.heartbeat_failed(now)
            self._link.mark_unknown(f"Heartbeat: {name}")
        elif action is Action.BACKOFF:
            timers.heartbeat_failed(now)
        else:
            timers.heartbeat_failed(now)
            self._on_fatal(for_code(code)(f"Heartbeat of group {self.group_id!r}"))
