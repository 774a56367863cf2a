"""Session liveness: who must be expired, given the time. Sans-IO: time is an input.

The tracker knows each live session's timeout and deadline (last heard + timeout). It
never deletes anything itself: ``expired(now_ms)`` names the sessions whose deadline has
passed and marks them closing, and the server turns each into a CloseSessionTxn. A closing
session can no longer be touched or reattached by a reconnecting client.
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

    def touch(self, session_id: int, now_ms: int) -> bool:
        """Heard from the session; False if it is unknown or already closing."""
        s = self._sessions.get(session_id)
        if s is None or s.closing:
            return False
        s.deadline_ms = now_ms + s.timeout_ms
        return True

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
