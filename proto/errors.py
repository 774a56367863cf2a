"""Every error minibroker can put on the wire or raise, and the one registry of codes.

Hierarchy::

    MinibrokerError
    ├── RemoteProtocolError              malformed or oversized frame, bad message shape
    │   └── CorruptRecordError           (also a BrokerResponseError, code 2)
    ├── ClientError                      raised only by client libraries, never on the wire
    │   ├── ConnectionFailedError        peer closed, refused, or network broke
    │   ├── RequestTimedOutError         no answer within request_timeout_ms
    │   └── NoBrokersAvailableError      no bootstrap server answered
    └── BrokerResponseError              an error code a server sent back
        ├── OffsetOutOfRangeError        (1)  ... one class per Kafka error code
        └── NoNodeError                  (-101) ... and per ZooKeeper error code

Kafka's codes are kept (so a Kafka user recognises them); the coordinator's codes are
ZooKeeper's, which are negative and never collide with Kafka's. ``for_code(code)`` is the
only way to turn a wire code into a class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

__all__ = [
    "NONE",
    "BrokerResponseError",
    "ClientError",
    "ConnectionFailedError",
    "MinibrokerError",
    "NoBrokersAvailableError",
    "RemoteProtocolError",
    "RequestTimedOutError",
    "error_name",
    "for_code",
    "raise_for_code",
]

NONE = 0


class MinibrokerError(Exception):
    """Root of every error raised by minibroker's libraries."""


class RemoteProtocolError(MinibrokerError):
    """The peer sent bytes that are not a valid frame, message or record batch."""


class ClientError(MinibrokerError):
    """Raised by a client library for a failure that has no wire code."""

    retriable: ClassVar[bool] = True


class ConnectionFailedError(ClientError):
    """The connection could not be made, or broke while requests were pending."""


class RequestTimedOutError(ClientError):
    """No response arrived within the request timeout."""


class NoBrokersAvailableError(ClientError):
    """None of the bootstrap servers could be reached."""


class BrokerResponseError(MinibrokerError):
    """A server answered with a non-zero error code.

    ``code`` and ``name`` are the wire code and Kafka's (or ZooKeeper's) name for it;
    ``retriable`` says whether the same request may succeed after a metadata refresh.
    """

    code: ClassVar[int] = -1
    name: ClassVar[str] = "UNKNOWN_SERVER_ERROR"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str | None = None) -> None:
        self.message = message
        super().__init__(f"[{self.name}] {message}" if message else f"[{self.name}]")


_REGISTRY: dict[int, type[BrokerResponseError]] = {}

E = TypeVar("E", bound=type[BrokerResponseError])


def register(code: int, name: str, *, retriable: bool = False) -> Callable[[E], E]:
    """Class decorator: bind a wire code and name to an exception class."""

    def bind(cls: E) -> E:
        if code in _REGISTRY:
            raise ValueError(f"error code {code} registered twice")
        cls.code = code
        cls.name = name
        cls.retriable = retriable
        _REGISTRY[code] = cls
        return cls

    return bind


def for_code(code: int) -> type[BrokerResponseError]:
    """The exception class for a wire code; unknown codes map to UnknownServerError."""
    return _REGISTRY.get(code, UnknownServerError)


def error_name(code: int) -> str:
    return "NONE" if code == NONE else for_code(code).name


def raise_for_code(code: int, message: str | None = None) -> None:
    if code != NONE:
        raise for_code(code)(message)


# --- Kafka's error codes -------------------------------------------------------------


@register(-1, "UNKNOWN_SERVER_ERROR")
class UnknownServerError(BrokerResponseError):
    pass


@register(1, "OFFSET_OUT_OF_RANGE")
class OffsetOutOfRangeError(BrokerResponseError):
    pass


@register(2, "CORRUPT_MESSAGE", retriable=True)
class CorruptRecordError(BrokerResponseError, RemoteProtocolError):
    """A record batch failed its length, magic or CRC check."""


@register(3, "UNKNOWN_TOPIC_OR_PARTITION", retriable=True)
class UnknownTopicOrPartitionError(BrokerResponseError):
    pass


@register(4, "INVALID_FETCH_SIZE")
class InvalidFetchSizeError(BrokerResponseError):
    pass


@register(5, "LEADER_NOT_AVAILABLE", retriable=True)
class LeaderNotAvailableError(BrokerResponseError):
    pass


@register(6, "NOT_LEADER_OR_FOLLOWER", retriable=True)
class NotLeaderForPartitionError(BrokerResponseError):
    pass


@register(7, "REQUEST_TIMED_OUT", retriable=True)
class BrokerRequestTimedOutError(BrokerResponseError):
    pass


@register(8, "BROKER_NOT_AVAILABLE")
class BrokerNotAvailableError(BrokerResponseError):
    pass


@register(10, "MESSAGE_TOO_LARGE")
class MessageSizeTooLargeError(BrokerResponseError):
    pass


@register(12, "OFFSET_METADATA_TOO_LARGE")
class OffsetMetadataTooLargeError(BrokerResponseError):
    """A commit's metadata string is longer than the broker's offset.metadata.max.bytes."""


@register(13, "NETWORK_EXCEPTION", retriable=True)
class NetworkExceptionError(BrokerResponseError):
    pass


@register(14, "COORDINATOR_LOAD_IN_PROGRESS", retriable=True)
class CoordinatorLoadInProgressError(BrokerResponseError):
    pass


@register(15, "COORDINATOR_NOT_AVAILABLE", retriable=True)
class CoordinatorNotAvailableError(BrokerResponseError):
    pass


@register(16, "NOT_COORDINATOR", retriable=True)
class NotCoordinatorError(BrokerResponseError):
    pass


@register(17, "INVALID_TOPIC_EXCEPTION")
class InvalidTopicError(BrokerResponseError):
    pass


@register(18, "RECORD_LIST_TOO_LARGE")
class RecordListTooLargeError(BrokerResponseError):
    pass


@register(19, "NOT_ENOUGH_REPLICAS", retriable=True)
class NotEnoughReplicasError(BrokerResponseError):
    pass


@register(20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", retriable=True)
class NotEnoughReplicasAfterAppendError(BrokerResponseError):
    pass


@register(21, "INVALID_REQUIRED_ACKS")
class InvalidRequiredAcksError(BrokerResponseError):
    pass


@register(22, "ILLEGAL_GENERATION")
class IllegalGenerationError(BrokerResponseError):
    pass


@register(23, "INCONSISTENT_GROUP_PROTOCOL")
class InconsistentGroupProtocolError(BrokerResponseError):
    """The member's protocol type differs from the group's, or it shares no protocol."""


@register(24, "INVALID_GROUP_ID")
class InvalidGroupIdError(BrokerResponseError):
    pass


@register(25, "UNKNOWN_MEMBER_ID")
class UnknownMemberIdError(BrokerResponseError):
    pass


@register(26, "INVALID_SESSION_TIMEOUT")
class InvalidSessionTimeoutError(BrokerResponseError):
    """session_timeout_ms is outside group.min/max.session.timeout.ms."""


@register(27, "REBALANCE_IN_PROGRESS")
class RebalanceInProgressError(BrokerResponseError):
    pass


@register(28, "INVALID_COMMIT_OFFSET_SIZE")
class InvalidCommitOffsetSizeError(BrokerResponseError):
    """The commit's records are too large for the offsets topic."""


@register(32, "INVALID_TIMESTAMP")
class InvalidTimestampError(BrokerResponseError):
    pass


@register(35, "UNSUPPORTED_VERSION")
class UnsupportedVersionError(BrokerResponseError):
    """The server does not know this api key or api version."""


@register(36, "TOPIC_ALREADY_EXISTS")
class TopicAlreadyExistsError(BrokerResponseError):
    pass


@register(37, "INVALID_PARTITIONS")
class InvalidPartitionsError(BrokerResponseError):
    pass


@register(38, "INVALID_REPLICATION_FACTOR")
class InvalidReplicationFactorError(BrokerResponseError):
    pass


@register(40, "INVALID_CONFIG")
class InvalidConfigurationError(BrokerResponseError):
    pass


@register(41, "NOT_CONTROLLER", retriable=True)
class NotControllerError(BrokerResponseError):
    pass


@register(42, "INVALID_REQUEST")
class InvalidRequestError(BrokerResponseError):
    pass


@register(45, "OUT_OF_ORDER_SEQUENCE_NUMBER")
class OutOfOrderSequenceNumberError(BrokerResponseError):
    pass


@register(46, "DUPLICATE_SEQUENCE_NUMBER")
class DuplicateSequenceNumberError(BrokerResponseError):
    pass


@register(47, "INVALID_PRODUCER_EPOCH")
class InvalidProducerEpochError(BrokerResponseError):
    """A produce from an idempotent producer whose epoch is older than the one the
    partition has seen (Kafka 2.7+'s answer to a fenced producer's batch)."""


@register(56, "KAFKA_STORAGE_ERROR", retriable=True)
class KafkaStorageError(BrokerResponseError):
    """The log directory failed (full disk, I/O error)."""


@register(73, "TOPIC_DELETION_DISABLED")
class TopicDeletionDisabledError(BrokerResponseError):
    pass


@register(74, "FENCED_LEADER_EPOCH", retriable=True)
class FencedLeaderEpochError(BrokerResponseError):
    pass


@register(75, "UNKNOWN_LEADER_EPOCH", retriable=True)
class UnknownLeaderEpochError(BrokerResponseError):
    pass


@register(68, "NON_EMPTY_GROUP")
class NonEmptyGroupError(BrokerResponseError):
    """A group with members cannot be deleted."""


@register(69, "GROUP_ID_NOT_FOUND")
class GroupIdNotFoundError(BrokerResponseError):
    pass


@register(77, "STALE_BROKER_EPOCH")
class StaleBrokerEpochError(BrokerResponseError):
    """A broker request carried the epoch of an older registration of that broker id."""


@register(79, "MEMBER_ID_REQUIRED")
class MemberIdRequiredError(BrokerResponseError):
    """KIP-394: join again with the member id this response carries."""


@register(80, "PREFERRED_LEADER_NOT_AVAILABLE", retriable=True)
class PreferredLeaderNotAvailableError(BrokerResponseError):
    """The preferred replica is not live or not in the ISR: it cannot lead now."""


@register(81, "GROUP_MAX_SIZE_REACHED")
class GroupMaxSizeReachedError(BrokerResponseError):
    pass


@register(82, "FENCED_INSTANCE_ID")
class FencedInstanceIdError(BrokerResponseError):
    """KIP-345: another member joined with this group.instance.id; this one must stop."""


@register(84, "ELECTION_NOT_NEEDED")
class ElectionNotNeededError(BrokerResponseError):
    """The preferred replica already leads the partition."""


@register(86, "GROUP_SUBSCRIBED_TO_TOPIC")
class GroupSubscribedToTopicError(BrokerResponseError):
    """OffsetDelete: a member of the active group still subscribes to the topic."""


@register(87, "INVALID_RECORD")
class InvalidRecordError(BrokerResponseError):
    pass


# --- ZooKeeper's error codes (the coordinator) ----------------------------------------


@register(-2, "RUNTIME_INCONSISTENCY")
class RuntimeInconsistencyError(BrokerResponseError):
    pass


@register(-4, "CONNECTION_LOSS", retriable=True)
class ConnectionLossError(BrokerResponseError):
    pass


@register(-7, "OPERATION_TIMEOUT", retriable=True)
class OperationTimeoutError(BrokerResponseError):
    pass


@register(-8, "BAD_ARGUMENTS")
class BadArgumentsError(BrokerResponseError):
    pass


@register(-101, "NO_NODE")
class NoNodeError(BrokerResponseError):
    pass


@register(-103, "BAD_VERSION")
class BadVersionError(BrokerResponseError):
    pass


@register(-108, "NO_CHILDREN_FOR_EPHEMERALS")
class NoChildrenForEphemeralsError(BrokerResponseError):
    pass


@register(-110, "NODE_EXISTS")
class NodeExistsError(BrokerResponseError):
    pass


@register(-111, "NOT_EMPTY")
class NotEmptyError(BrokerResponseError):
    pass


@register(-112, "SESSION_EXPIRED")
class SessionExpiredError(BrokerResponseError):
    pass


@register(-118, "SESSION_MOVED", retriable=True)
class SessionMovedError(BrokerResponseError):
    pass


@register(-121, "NOT_READ_ONLY")
class NotReadOnlyError(BrokerResponseError):
    pass


@register(-122, "NEW_CONFIG_NO_QUORUM", retriable=True)
class NoQuorumError(BrokerResponseError):
    pass
