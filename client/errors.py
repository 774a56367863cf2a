"""The errors a client user can catch: all of ``proto.errors``, plus three client-only ones.

Import from here (``from client.errors import NotLeaderForPartitionError``). Hierarchy::

    MinibrokerError
    ├── ConfigurationError (also ValueError)  a bad constructor argument
    ├── IllegalStateError                    the client is closed / used the wrong way
    ├── ClientError
    │   ├── ConnectionFailedError            refused, reset, or closed with requests pending
    │   ├── RequestTimedOutError             no response within request_timeout_ms
    │   ├── NoBrokersAvailableError          no bootstrap server answered
    │   ├── TimeoutExpiredError              a local wait (future.get, flush) ran out
    │   └── CommitFailedError                the group rebalanced without this member
    └── BrokerResponseError                  one subclass per wire code (see proto.errors)

``BrokerResponseError.retriable`` and ``ClientError.retriable`` say whether the producer
retries on its own (after a metadata refresh) before failing a send.
"""

from __future__ import annotations

from typing import ClassVar

from proto.errors import (
    BadArgumentsError,
    BadVersionError,
    BrokerNotAvailableError,
    BrokerRequestTimedOutError,
    BrokerResponseError,
    ClientError,
    ConnectionFailedError,
    ConnectionLossError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    CorruptRecordError,
    DuplicateSequenceNumberError,
    FencedInstanceIdError,
    FencedLeaderEpochError,
    GroupMaxSizeReachedError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidConfigurationError,
    InvalidFetchSizeError,
    InvalidGroupIdError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    InvalidRequiredAcksError,
    InvalidSessionTimeoutError,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaStorageError,
    LeaderNotAvailableError,
    MemberIdRequiredError,
    MessageSizeTooLargeError,
    MinibrokerError,
    NetworkExceptionError,
    NoBrokersAvailableError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NoQuorumError,
    NotControllerError,
    NotCoordinatorError,
    NotEmptyError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    NotReadOnlyError,
    OffsetOutOfRangeError,
    OperationTimeoutError,
    OutOfOrderSequenceNumberError,
    RebalanceInProgressError,
    RecordListTooLargeError,
    RemoteProtocolError,
    RequestTimedOutError,
    RuntimeInconsistencyError,
    SessionExpiredError,
    SessionMovedError,
    TopicAlreadyExistsError,
    UnknownLeaderEpochError,
    UnknownMemberIdError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
    error_name,
    for_code,
    raise_for_code,
)

__all__ = [
    "BadArgumentsError",
    "BadVersionError",
    "BrokerNotAvailableError",
    "BrokerRequestTimedOutError",
    "BrokerResponseError",
    "ClientError",
    "CommitFailedError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConnectionLossError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "CorruptRecordError",
    "DuplicateSequenceNumberError",
    "FencedInstanceIdError",
    "FencedLeaderEpochError",
    "GroupMaxSizeReachedError",
    "IllegalGenerationError",
    "IllegalStateError",
    "InconsistentGroupProtocolError",
    "InvalidConfigurationError",
    "InvalidFetchSizeError",
    "InvalidGroupIdError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidReplicationFactorError",
    "InvalidRequestError",
    "InvalidRequiredAcksError",
    "InvalidSessionTimeoutError",
    "InvalidTimestampError",
    "InvalidTopicError",
    "KafkaStorageError",
    "LeaderNotAvailableError",
    "MemberIdRequiredError",
    "MessageSizeTooLargeError",
    "MinibrokerError",
    "NetworkExceptionError",
    "NoBrokersAvailableError",
    "NoChildrenForEphemeralsError",
    "NoNodeError",
    "NoQuorumError",
    "NodeExistsError",
    "NotControllerError",
    "NotCoordinatorError",
    "NotEmptyError",
    "NotEnoughReplicasAfterAppendError",
    "NotEnoughReplicasError",
    "NotLeaderForPartitionError",
    "NotReadOnlyError",
    "OffsetOutOfRangeError",
    "OperationTimeoutError",
    "OutOfOrderSequenceNumberError",
    "RebalanceInProgressError",
    "RecordListTooLargeError",
    "RemoteProtocolError",
    "RequestTimedOutError",
    "RuntimeInconsistencyError",
    "SessionExpiredError",
    "SessionMovedError",
    "TimeoutExpiredError",
    "TopicAlreadyExistsError",
    "UnknownLeaderEpochError",
    "UnknownMemberIdError",
    "UnknownServerError",
    "UnknownTopicOrPartitionError",
    "UnsupportedVersionError",
    "error_name",
    "for_code",
    "raise_for_code",
]


class ConfigurationError(MinibrokerError, ValueError):
    """A client was constructed with an invalid setting (bad acks, negative linger...)."""


class IllegalStateError(MinibrokerError):
    """The client was used after close(), or in a way its state does not allow."""


class TimeoutExpiredError(ClientError):
    """A local wait ran out: ``future.get(timeout)``, ``flush(timeout)``, buffer memory."""

    retriable: ClassVar[bool] = False


class CommitFailedError(ClientError):
    """An offset commit the group refused because this member is no longer part of it
    (Kafka's CommitFailedException): the group rebalanced and gave its partitions to
    others, most often because the time between two poll() calls exceeded
    max_poll_interval_ms. Not retriable: the records since the last commit will be read
    again by the partitions' new owners; poll() rejoins the group."""

    retriable: ClassVar[bool] = False
