"""Broker API messages: typed requests and responses, and their frame encoding. Sans-IO.

Frame bodies (msgpack arrays):

* request:  ``[api_key, api_version, correlation_id, client_id, body]``
* response: ``[correlation_id, error_code, body]`` where a non-zero ``error_code`` with a
  nil body is a request-level failure (unknown api, unsupported version, invalid body).

Responses do not repeat the api key: the sender of a request knows which response type it
awaits for each correlation id (see ``proto.connection``). Field names and meanings follow
Kafka's protocol so that Kafka's documentation applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proto import group_messages as g

# Re-exported: the bases live in proto.api so that proto.group_messages can use them too.
from proto.api import ApiKey as ApiKey
from proto.api import Request as Request
from proto.api import RequestHeader as RequestHeader
from proto.api import Response as Response
from proto.codec import FileRecords, Segment, encode_segments, from_wire, packb, to_wire, unpackb
from proto.errors import RemoteProtocolError, UnsupportedVersionError

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
CONSUMER_REPLICA_ID = -1


# --- ApiVersions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiVersionRange:
    api_key: int
    min_version: int
    max_version: int


@dataclass(frozen=True, slots=True)
class ApiVersionsResponse(Response):
    error_code: int
    api_keys: list[ApiVersionRange]


@dataclass(frozen=True, slots=True)
class ApiVersionsRequest(Request):
    API_KEY = ApiKey.API_VERSIONS
    RESPONSE = ApiVersionsResponse


# --- Metadata ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    error_code: int
    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline_replicas: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    error_code: int
    name: str
    is_internal: bool
    partitions: list[PartitionMetadata]


@dataclass(frozen=True, slots=True)
class MetadataResponse(Response):
    brokers: list[BrokerMetadata]
    cluster_id: str | None
    controller_id: int
    topics: list[TopicMetadata]


@dataclass(frozen=True, slots=True)
class MetadataRequest(Request):
    API_KEY = ApiKey.METADATA
    RESPONSE = MetadataResponse
    topics: list[str] | None = None  # None: every topic


# --- Produce ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProducePartitionData:
    partition: int
    records: bytes  # one or more record batches


@dataclass(frozen=True, slots=True)
class ProduceTopicData:
    name: str
    partitions: list[ProducePartitionData]


@dataclass(frozen=True, slots=True)
class ProducePartitionResponse:
    partition: int
    error_code: int
    base_offset: int
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ProduceTopicResponse:
    name: str
    partitions: list[ProducePartitionResponse]


@dataclass(frozen=True, slots=True)
class ProduceResponse(Response):
    topics: list[ProduceTopicResponse]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class ProduceRequest(Request):
    """``acks`` 0 gets no response at all, as in Kafka."""

    API_KEY = ApiKey.PRODUCE
    RESPONSE = ProduceResponse
    acks: int
    timeout_ms: int
    topics: list[ProduceTopicData]
    transactional_id: str | None = None


# --- Fetch ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchPartition:
    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    log_start_offset: int = -1


@dataclass(frozen=True, slots=True)
class FetchTopic:
    name: str
    partitions: list[FetchPartition]


@dataclass(frozen=True, slots=True)
class FetchPartitionResponse:
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: bytes | FileRecords  # FileRecords only on the sending side (sendfile)
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class FetchTopicResponse:
    name: str
    partitions: list[FetchPartitionResponse]


@dataclass(frozen=True, slots=True)
class FetchResponse(Response):
    error_code: int
    topics: list[FetchTopicResponse]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class FetchRequest(Request):
    API_KEY = ApiKey.FETCH
    RESPONSE = FetchResponse
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    topics: list[FetchTopic]
    replica_id: int = CONSUMER_REPLICA_ID
    isolation_level: int = 0


# --- ListOffsets ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListOffsetsPartition:
    partition: int
    timestamp: int  # LATEST_TIMESTAMP, EARLIEST_TIMESTAMP, or ms since epoch


@dataclass(frozen=True, slots=True)
class ListOffsetsTopic:
    name: str
    partitions: list[ListOffsetsPartition]


@dataclass(frozen=True, slots=True)
class ListOffsetsPartitionResponse:
    partition: int
    error_code: int
    timestamp: int
    offset: int  # -1 when no record has a timestamp >= the one asked for


@dataclass(frozen=True, slots=True)
class ListOffsetsTopicResponse:
    name: str
    partitions: list[ListOffsetsPartitionResponse]


@dataclass(frozen=True, slots=True)
class ListOffsetsResponse(Response):
    topics: list[ListOffsetsTopicResponse]


@dataclass(frozen=True, slots=True)
class ListOffsetsRequest(Request):
    API_KEY = ApiKey.LIST_OFFSETS
    RESPONSE = ListOffsetsResponse
    topics: list[ListOffsetsTopic]
    replica_id: int = CONSUMER_REPLICA_ID
    isolation_level: int = 0


# --- CreateTopics / DeleteTopics / DescribeConfigs -------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatableTopic:
    name: str
    num_partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)
    # Explicit partition -> replica list; empty means "let the broker assign".
    assignments: dict[int, list[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreatableTopicResult:
    name: str
    error_code: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class CreateTopicsResponse(Response):
    topics: list[CreatableTopicResult]


@dataclass(frozen=True, slots=True)
class CreateTopicsRequest(Request):
    API_KEY = ApiKey.CREATE_TOPICS
    RESPONSE = CreateTopicsResponse
    topics: list[CreatableTopic]
    timeout_ms: int = 30_000
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class DeletableTopicResult:
    name: str
    error_code: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteTopicsResponse(Response):
    topics: list[DeletableTopicResult]


@dataclass(frozen=True, slots=True)
class DeleteTopicsRequest(Request):
    API_KEY = ApiKey.DELETE_TOPICS
    RESPONSE = DeleteTopicsResponse
    topic_names: list[str]
    timeout_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class DescribeConfigsResult:
    name: str
    error_code: int
    configs: dict[str, str]  # effective values: broker defaults overlaid by topic overrides
    overrides: list[str]  # which of them the topic set itself
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class DescribeConfigsResponse(Response):
    results: list[DescribeConfigsResult]


@dataclass(frozen=True, slots=True)
class DescribeConfigsRequest(Request):
    API_KEY = ApiKey.DESCRIBE_CONFIGS
    RESPONSE = DescribeConfigsResponse
    topics: list[str]


# --- OffsetForLeaderEpoch ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetForLeaderPartition:
    partition: int
    current_leader_epoch: int  # -1: not checked
    leader_epoch: int  # the epoch whose end offset is asked for


@dataclass(frozen=True, slots=True)
class OffsetForLeaderTopic:
    name: str
    partitions: list[OffsetForLeaderPartition]


@dataclass(frozen=True, slots=True)
class EpochEndOffsetResult:
    """The largest epoch <= the one asked for and where it ends; -1/-1 when undefined."""

    error_code: int
    partition: int
    leader_epoch: int
    end_offset: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class OffsetForLeaderTopicResult:
    name: str
    partitions: list[EpochEndOffsetResult]


@dataclass(frozen=True, slots=True)
class OffsetForLeaderEpochResponse(Response):
    topics: list[OffsetForLeaderTopicResult]
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class OffsetForLeaderEpochRequest(Request):
    """A follower asks where its latest epoch ends on the leader (KIP-101, KIP-279)."""

    API_KEY = ApiKey.OFFSET_FOR_LEADER_EPOCH
    RESPONSE = OffsetForLeaderEpochResponse
    topics: list[OffsetForLeaderTopic]
    replica_id: int = CONSUMER_REPLICA_ID


# --- ControlledShutdown / ElectLeaders (the controller's requests) ----------------------


@dataclass(frozen=True, slots=True)
class TopicPartitionRef:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class ControlledShutdownResponse(Response):
    """``remaining_partitions``: replicated partitions the broker still leads (it retries)."""

    error_code: int
    remaining_partitions: list[TopicPartitionRef]
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ControlledShutdownRequest(Request):
    """A broker about to stop asks the controller to move its leaderships away.
    ``broker_epoch`` is the czxid of its ``/brokers/ids/<id>`` registration (-1: unchecked)."""

    API_KEY = ApiKey.CONTROLLED_SHUTDOWN
    RESPONSE = ControlledShutdownResponse
    broker_id: int
    broker_epoch: int = -1


PREFERRED_ELECTION = 0  # Kafka's ElectionType.PREFERRED
UNCLEAN_ELECTION = 1  # Kafka's ElectionType.UNCLEAN (not served: INVALID_REQUEST)


@dataclass(frozen=True, slots=True)
class ElectLeadersTopic:
    topic: str
    partitions: list[int]


@dataclass(frozen=True, slots=True)
class PartitionElectionResult:
    partition: int
    error_code: int  # 0, ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ...
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicaElectionResult:
    topic: str
    partitions: list[PartitionElectionResult]


@dataclass(frozen=True, slots=True)
class ElectLeadersResponse(Response):
    """A non-zero top-level ``error_code`` (NOT_CONTROLLER, INVALID_REQUEST) applies to
    the whole request and leaves ``results`` empty."""

    error_code: int
    results: list[ReplicaElectionResult]
    throttle_time_ms: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ElectLeadersRequest(Request):
    """Elect leaders of ``topic_partitions`` (None: every partition); the controller answers."""

    API_KEY = ApiKey.ELECT_LEADERS
    RESPONSE = ElectLeadersResponse
    election_type: int = PREFERRED_ELECTION
    topic_partitions: list[ElectLeadersTopic] | None = None
    timeout_ms: int = 30_000


# --- InitProducerId ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitProducerIdResponse(Response):
    error_code: int
    producer_id: int  # -1 with an error
    producer_epoch: int
    throttle_time_ms: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class InitProducerIdRequest(Request):
    """An idempotent producer asks any broker for a producer id and epoch (Kafka api 22).
    Without a transactional id every call gets a new id with epoch 0, as in Kafka."""

    API_KEY = ApiKey.INIT_PRODUCER_ID
    RESPONSE = InitProducerIdResponse
    transactional_id: str | None = None
    transaction_timeout_ms: int = 60_000
    producer_id: int = -1
    producer_epoch: int = -1


# --- registry and frame bodies ----------------------------------------------------------

REQUEST_TYPES: dict[int, type[Request]] = {
    cls.API_KEY: cls
    for cls in (
        ApiVersionsRequest,
        MetadataRequest,
        ProduceRequest,
        FetchRequest,
        ListOffsetsRequest,
        CreateTopicsRequest,
        DeleteTopicsRequest,
        OffsetForLeaderEpochRequest,
        DescribeConfigsRequest,
        InitProducerIdRequest,
        ControlledShutdownRequest,
        ElectLeadersRequest,
        # consumer groups (proto.group_messages)
        g.FindCoordinatorRequest,
        g.OffsetCommitRequest,
        g.OffsetFetchRequest,
        g.JoinGroupRequest,
        g.HeartbeatRequest,
        g.LeaveGroupRequest,
        g.SyncGroupRequest,
        g.DescribeGroupsRequest,
        g.ListGroupsRequest,
        g.DeleteGroupsRequest,
        g.OffsetDeleteRequest,
    )
}


class UnsupportedRequest(RemoteProtocolError):
    """A well-formed frame for an api key or version this side does not speak.

    Carries the header so the server can still answer with UNSUPPORTED_VERSION before
    closing the connection.
    """

    def __init__(self, header: RequestHeader, message: str) -> None:
        super().__init__(message)
        self.header = header
        self.code = UnsupportedVersionError.code


def encode_request(header: RequestHeader, body: Request) -> bytes:
    return packb(
        [header.api_key, header.api_version, header.correlation_id, header.client_id, to_wire(body)]
    )


def decode_request_header(frame: bytes) -> tuple[RequestHeader, Any]:
    data = unpackb(frame)
    if type(data) is not list or len(data) != 5:
        raise RemoteProtocolError("request frame must be a 5-element array")
    api_key, api_version, correlation_id, client_id, body = data
    if not (type(api_key) is int and type(api_version) is int and type(correlation_id) is int):
        raise RemoteProtocolError("request header fields must be integers")
    if client_id is not None and type(client_id) is not str:
        raise RemoteProtocolError("client_id must be a string or nil")
    return RequestHeader(api_key, api_version, correlation_id, client_id), body


def decode_request(frame: bytes) -> tuple[RequestHeader, Request]:
    """Decode a request frame body.

    Raises UnsupportedRequest (a RemoteProtocolError carrying the header) for an unknown
    api key or version, RemoteProtocolError for anything malformed.
    """
    header, body = decode_request_header(frame)
    cls = REQUEST_TYPES.get(header.api_key)
    if cls is None:
        raise UnsupportedRequest(header, f"unknown api key {header.api_key}")
    if not cls.MIN_VERSION <= header.api_version <= cls.MAX_VERSION:
        raise UnsupportedRequest(
            header, f"{cls.__name__} version {header.api_version} is not supported"
        )
    return header, from_wire(cls, body)


def encode_response(correlation_id: int, body: Response | None, error_code: int = 0) -> bytes:
    return packb([correlation_id, error_code, None if body is None else to_wire(body)])


def encode_response_segments(correlation_id: int, body: Response) -> list[Segment]:
    """Like encode_response, but FileRecords leaves become file slices to sendfile."""
    return encode_segments([correlation_id, 0, to_wire(body)])


def decode_response_header(frame: bytes) -> tuple[int, int, Any]:
    data = unpackb(frame)
    if type(data) is not list or len(data) != 3:
        raise RemoteProtocolError("response frame must be a 3-element array")
    correlation_id, error_code, body = data
    if type(correlation_id) is not int or type(error_code) is not int:
        raise RemoteProtocolError("response header fields must be integers")
    return correlation_id, error_code, body


def decode_response_body(cls: type[Response], body: Any) -> Response:
    return from_wire(cls, body)
