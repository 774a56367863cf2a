"""What every broker API message shares: the api keys, the request/response bases, the header.

Kept apart from ``proto.messages`` so that message modules (``proto.group_messages``) can
subclass ``Request``/``Response`` while ``proto.messages`` imports them all into its
registry, without an import cycle. Sans-IO: no encoding here, only declarations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["ApiKey", "Request", "RequestHeader", "Response"]


class ApiKey(enum.IntEnum):
    """Kafka's api keys, for the apis minibroker speaks."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    CONTROLLED_SHUTDOWN = 7
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    DESCRIBE_CONFIGS = 32
    DELETE_GROUPS = 42
    ELECT_LEADERS = 43
    OFFSET_DELETE = 47


class Request:
    """Base of request bodies: each names its api key, versions and response type."""

    __slots__ = ()

    API_KEY: ClassVar[ApiKey]
    MIN_VERSION: ClassVar[int] = 0
    MAX_VERSION: ClassVar[int] = 0
    RESPONSE: ClassVar[type[Response]]


class Response:
    """Base of response bodies."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
