"""What a member's clients wait on: the values ``host.py`` keeps per request until the
member has applied the index that answers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proto.zk import ConnectRequest

__all__ = ["Reconnect", "Waiter"]


@dataclass(frozen=True, slots=True)
class Reconnect:
    """A waiter's body: a client resuming a session, until the leader revalidated it."""

    request: ConnectRequest


@dataclass(slots=True)
class Waiter:
    """A client waiting for the member to apply ``index`` (of ``term``, when > 0)."""

    conn_id: int
    xid: int
    body: Any  # the request; a ConnectResponse for a new session; a Reconnect
    term: int = 0
    error_code: int = 0
    abort_index: int = -1
