"""The member's three clocks, sans-IO (Kafka's consumer-side ``Heartbeat``).

- heartbeat: the next Heartbeat is due ``heartbeat_interval_ms`` after the last one was
  sent (``retry_backoff_ms`` after a failed one);
- session: no successful heartbeat for ``session_timeout_ms`` means the coordinator has
  surely given up on us too; the member looks for the coordinator again;
- poll: the application must call poll() at least every ``max_poll_interval_ms``, or the
  member leaves the group on its own (the heartbeat task checks; only poll() resets it).

Times are milliseconds on any monotonic clock the caller chooses; nothing here reads one.
"""

from __future__ import annotations

__all__ = ["MemberTimers"]


class MemberTimers:
    def __init__(
        self,
        *,
        heartbeat_interval_ms: float,
        session_timeout_ms: float,
        max_poll_interval_ms: float,
        retry_backoff_ms: float,
        now_ms: float,
    ) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.session_timeout_ms = session_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.retry_backoff_ms = retry_backoff_ms
        self._next_heartbeat_ms = now_ms
        self._last_heartbeat_ok_ms = now_ms
        self._last_poll_ms = now_ms
        self.heartbeat_in_flight = False

    # -- heartbeats ---------------------------------------------------------------------

    def reset(self, now_ms: float) -> None:
        """A new generation: the session starts now, the first heartbeat is due after an
        interval."""
        self._last_heartbeat_ok_ms = now_ms
        self._next_heartbeat_ms = now_ms + self.heartbeat_interval_ms
        self.heartbeat_in_flight = False

    def heartbeat_sent(self, now_ms: float) -> None:
        self.heartbeat_in_flight = True
        self._next_heartbeat_ms = now_ms + self.heartbeat_interval_ms

    def heartbeat_received(self, now_ms: float) -> None:
        self.heartbeat_in_flight = False
        self._last_heartbeat_ok_ms = now_ms

    def heartbeat_failed(self, now_ms: float) -> None:
        self.heartbeat_in_flight = False
        self._next_heartbeat_ms = now_ms + self.retry_backoff_ms

    def restart_session(self, now_ms: float) -> None:
        """The session ran out and the coordinator is being looked up again: heartbeat to
        the one found at once (its answer says whether we are still a member) instead of
        finding the session expired again and again."""
        self._last_heartbeat_ok_ms = now_ms
        self._next_heartbeat_ms = now_ms
        self.heartbeat_in_flight = False

    def time_to_next_heartbeat(self, now_ms: float) -> float:
        return max(0.0, self._next_heartbeat_ms - now_ms)

    def session_expired(self, now_ms: float) -> bool:
        return now_ms - self._last_heartbeat_ok_ms >= self.session_timeout_ms

    # -- the application's poll loop ----------------------------------------------------

    def polled(self, now_ms: float) -> None:
        self._last_poll_ms = now_ms

    def poll_expired(self, now_ms: float) -> bool:
        return now_ms - self._last_poll_ms >= self.max_poll_interval_ms

    def time_to_poll_expiry(self, now_ms: float) -> float:
        return max(0.0, self._last_poll_ms + self.max_poll_interval_ms - now_ms)

    def time_to_next_event(self, now_ms: float) -> float:
        """How long the heartbeat task may sleep before something is due."""
        return min(self.time_to_next_heartbeat(now_ms), self.time_to_poll_expiry(now_ms))
