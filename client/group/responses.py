"""What each group response's error code makes the member do: one table per API.

Kafka's ConsumerCoordinator and AbstractCoordinator answer each error in their response
handlers; here the answers are data, so a test can walk every code. The runtime
(``client.group.coordinator``) carries out the ``Action``. Codes not in a table follow
the default: retry after a backoff if the error class is retriable, else give up (for a
membership request that is fatal, for a commit or offset fetch the call fails with the
broker's error).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from proto.errors import (
    NONE,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    IllegalGenerationError,
    MemberIdRequiredError,
    NotCoordinatorError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
    for_code,
)

__all__ = [
    "COMMIT",
    "FIND_COORDINATOR",
    "HEARTBEAT",
    "JOIN_GROUP",
    "OFFSET_FETCH",
    "OFFSET_FETCH_PARTITION",
    "SYNC_GROUP",
    "UNSTABLE_OFFSET_COMMIT",
    "Action",
    "action_for",
]

UNSTABLE_OFFSET_COMMIT = 88  # KIP-447: a transactional commit is pending (never sent here)
REQUEST_TIMED_OUT = 7  # the broker's own timeout (distinct from the client-side one)


class Action(enum.Enum):
    """OK: done. RETRY: send again at once (JoinGroup with the id MEMBER_ID_REQUIRED gave,
    or after the coordinator superseded it). BACKOFF: send again after retry_backoff_ms.
    REDISCOVER: the coordinator moved or is down: FindCoordinator, then send again.
    REJOIN: the group is rebalancing: join again, keeping the generation (a commit fails
    with RebalanceInProgressError). RESET_REJOIN: the coordinator does not know this member
    or generation: its partitions are lost, it joins from scratch (a commit fails with
    CommitFailedError). FATAL: the consumer cannot go on (fenced static member, bad
    configuration); raised from poll(). FAIL: only this call fails, with the broker's
    error. SKIP: nothing to use here (an offset fetch for a partition the broker does not
    know: no committed offset)."""

    OK = "ok"
    RETRY = "retry"
    BACKOFF = "backoff"
    REDISCOVER = "rediscover"
    REJOIN = "rejoin"
    RESET_REJOIN = "reset_rejoin"
    FATAL = "fatal"
    FAIL = "fail"
    SKIP = "skip"


_A = Action
_COORDINATOR_GONE = {
    CoordinatorNotAvailableError.code: _A.REDISCOVER,
    NotCoordinatorError.code: _A.REDISCOVER,
}
_STALE_MEMBER = {
    UnknownMemberIdError.code: _A.RESET_REJOIN,
    IllegalGenerationError.code: _A.RESET_REJOIN,
}
_COMMON = {
    NONE: _A.OK,
    CoordinatorLoadInProgressError.code: _A.BACKOFF,
    FencedInstanceIdError.code: _A.FATAL,
    **_COORDINATOR_GONE,
}

FIND_COORDINATOR: Mapping[int, Action] = {
    NONE: _A.OK,
    CoordinatorNotAvailableError.code: _A.BACKOFF,  # __consumer_offsets not ready yet
    CoordinatorLoadInProgressError.code: _A.BACKOFF,
    NotCoordinatorError.code: _A.BACKOFF,
}

JOIN_GROUP: Mapping[int, Action] = {
    **_COMMON,
    **_STALE_MEMBER,
    MemberIdRequiredError.code: _A.RETRY,
    # Superseded by our own newer JoinGroup, or the group moved on: join again at once.
    RebalanceInProgressError.code: _A.RETRY,
}

SYNC_GROUP: Mapping[int, Action] = {
    **_COMMON,
    **_STALE_MEMBER,
    RebalanceInProgressError.code: _A.REJOIN,
}

HEARTBEAT: Mapping[int, Action] = {
    **_COMMON,
    **_STALE_MEMBER,
    RebalanceInProgressError.code: _A.REJOIN,
}

COMMIT: Mapping[int, Action] = {
    **_COMMON,
    **_STALE_MEMBER,
    RebalanceInProgressError.code: _A.REJOIN,
    REQUEST_TIMED_OUT: _A.REDISCOVER,  # Kafka: the append timed out; try the coordinator again
    UnknownTopicOrPartitionError.code: _A.BACKOFF,
}

OFFSET_FETCH: Mapping[int, Action] = {
    NONE: _A.OK,
    CoordinatorLoadInProgressError.code: _A.BACKOFF,
    **_COORDINATOR_GONE,
}

OFFSET_FETCH_PARTITION: Mapping[int, Action] = {
    NONE: _A.OK,
    UNSTABLE_OFFSET_COMMIT: _A.BACKOFF,
    UnknownTopicOrPartitionError.code: _A.SKIP,
}

# Which tables end in FATAL rather than FAIL for an unlisted, non-retriable code.
_MEMBERSHIP = (FIND_COORDINATOR, JOIN_GROUP, SYNC_GROUP, HEARTBEAT)


def action_for(table: Mapping[int, Action], code: int) -> Action:
    action = table.get(code)
    if action is not None:
        return action
    if for_code(code).retriable:
        return _A.BACKOFF
    return _A.FATAL if any(table is t for t in _MEMBERSHIP) else _A.FAIL
