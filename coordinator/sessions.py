"""Session liveness: who must be expired, given the time. Sans-IO: time is an input.

The tracker knows each live session's timeout and deadline (last heard + timeout). It
never deletes anything itself: ``expired(now_ms)`` names the sessions whose deadline has
passed and marks them closing, and the server turns each into a CloseSessionTxn. A closing
session can no longer be touched or reattached by a reconnecting client.

``disconnected`` is where minibroker departs from ZooKeeper on purpose: when a session's
connection closes without a CloseSession (the client process died, or the network cut it
off), its deadline is brought forward to ``grace_ms`` from now. A live client reconnects
(to any member) well within that and is touched back to its full timeout; a dead one is
expired in about ``grace_ms`` instead of a whole session timeout, so a broker killed with
SIGKILL loses its ephemeral znodes (and its leaderships) in about a second. A client that
is merely paused keeps its connection open and gets its full timeout, as in ZooKeeper.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SessionTracker", "first_session_id"]


def first_session_id(server_id: int, wall_ms: int) -> int:
    """ZooKeeper's scheme: server id in the top byte, the start time below it, so ids
    stay unique across restarts of the same server."""
    return (((wall_ms << 24) & 0xFFFF_FFFF_FFFF_FFFF) >> 8) | (server_id << 56)


@dataclass(slots=True)
class _Tracked:
    timeout_ms: int
    deadline_ms: int
    closing: bool = False
    home: int | None = None  # the ensemble member its client was last heard through


class SessionTracker:
    __slots__ = ("_sessions", "max_timeout_ms", "min_timeout_ms")

    def __init__(self, min_timeout_ms: int, max_timeout_ms: int) -> None:
        self.min_timeout_ms = min_timeout_ms
        self.max_timeout_ms = max_timeout_ms
        self._sessions: dict[int, _Tracked] = {}

    def negotiate(self, requested_ms: int) -> int:
        return max(self.min_timeout_ms, min(self.max_timeout_ms, requested_ms))

    def add(self, session_id: int, timeout_ms: int, now_ms: int) -> None:
        self._sessions[session_id] = _Tracked(timeout_ms, now_ms + timeout_ms)

    def touch(self, session_id: int, now_ms: int, home: int | None = None) -> bool:
        """Heard from the session (through member ``home``, in an ensemble); False if it
        is unknown or already closing."""
        s = self._sessions.get(session_id)
        if s is None or s.closing:
            return False
        s.deadline_ms = now_ms + s.timeout_ms
        if home is not None:
            s.home = home
        return True

    def disconnected(
        self, session_id: int, now_ms: int, grace_ms: int, member: int | None = None
    ) -> None:
        """Its connection closed unannounced: expire it ``grace_ms`` from now unless it is
        touched again first (never later than its current deadline). In an ensemble
        ``member`` reports it, and only the member the client was last heard through
        counts: a late report from a member the client has already left (and been
        touched through another since) is ignored. A session not heard through any
        member yet (created and dropped within one report) takes the report."""
        s = self._sessions.get(session_id)
        if s is None or s.closing or grace_ms <= 0:
            return
        if member is not None and s.home not in (None, member):
            return
        s.deadline_ms = min(s.deadline_ms, now_ms + grace_ms)

    def is_live(self, session_id: int) -> bool:
        s = self._sessions.get(session_id)
        return s is not None and not s.closing

    def remove(self, session_id: int) -> None:
        self._sessions.pop(session_id, None)

    def expired(self, now_ms: int) -> list[int]:
        """Sessions past their deadline, each reported once (they become closing)."""
        out = []
        for sid, s in self._sessions.items():
            if not s.closing and s.deadline_ms <= now_ms:
                s.closing = True
                out.append(sid)
        return sorted(out)

    def next_deadline_ms(self) -> int | None:
        live = [s.deadline_ms for s in self._sessions.values() if not s.closing]
        return min(live) if live else None

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions
