"""The values the coordinator client hands out and takes: states, events, multi ops.

Re-exported by ``coordinator.client``; they live here to keep the client module about I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from proto.zk import EventType, Stat

__all__ = [
    "CheckOp",
    "CreateOp",
    "DeleteOp",
    "EventType",
    "SessionState",
    "SetDataOp",
    "Stat",
    "WatchedEvent",
    "Watcher",
]


class SessionState(enum.Enum):
    """The client's view of its session, as kazoo's ``KazooState``.

    Transitions: CONNECTED -> SUSPENDED (connection lost) -> CONNECTED (reconnected within
    the session timeout: ephemerals and watches survived) or -> LOST (the server said the
    session expired, or the client closed it). LOST is final.
    """

    CONNECTED = "CONNECTED"
    """The session is live and requests flow."""

    SUSPENDED = "SUSPENDED"
    """The connection is lost and the client is reconnecting; the session may still be
    alive. Do not assume ephemerals or locks are valid during this time: another
    process may already have taken over. Requests wait for the reconnection (up to
    request_timeout_ms) and then fail with ConnectionLossError."""

    LOST = "LOST"
    """The session expired (or was closed): its ephemerals are gone, its watches will not
    fire. Every request raises SessionExpiredError; open a new client."""


@dataclass(frozen=True, slots=True)
class WatchedEvent:
    type: EventType
    path: str


Watcher = Callable[[WatchedEvent], None]
"""Called once, from the client's own task, before the reply to any later read is
delivered; it must not block (set a trio.Event, send_nowait on a channel)."""


@dataclass(frozen=True, slots=True)
class CreateOp:
    path: str
    data: bytes = b""
    ephemeral: bool = False
    sequential: bool = False


@dataclass(frozen=True, slots=True)
class DeleteOp:
    path: str
    version: int = -1


@dataclass(frozen=True, slots=True)
class SetDataOp:
    path: str
    data: bytes
    version: int = -1


@dataclass(frozen=True, slots=True)
class CheckOp:
    path: str
    version: int
