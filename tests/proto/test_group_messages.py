"""Consumer-group messages: Kafka's api keys, registration, round trips and garbage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import group_messages as g
from proto.codec import from_wire, packb, to_wire, unpackb
from proto.errors import RemoteProtocolError
from proto.messages import (
    REQUEST_TYPES,
    ApiKey,
    Request,
    RequestHeader,
    Response,
    UnsupportedRequest,
    decode_request,
    decode_response_header,
    encode_request,
    encode_response,
)
from tests.proto.strategies import INT64, msgpack_values, request_classes, strategy_for

SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Kafka's api keys (clients/src/main/java/org/apache/kafka/common/protocol/ApiKeys.java).
KAFKA_API_KEYS: dict[type[Request], int] = {
    g.OffsetCommitRequest: 8,
    g.OffsetFetchRequest: 9,
    g.FindCoordinatorRequest: 10,
    g.JoinGroupRequest: 11,
    g.HeartbeatRequest: 12,
    g.LeaveGroupRequest: 13,
    g.SyncGroupRequest: 14,
    g.DescribeGroupsRequest: 15,
    g.ListGroupsRequest: 16,
    g.DeleteGroupsRequest: 42,
    g.OffsetDeleteRequest: 47,
}
GROUP_REQUESTS = sorted(KAFKA_API_KEYS, key=lambda c: c.__name__)
GROUP_RESPONSES = sorted({c.RESPONSE for c in GROUP_REQUESTS}, key=lambda c: c.__name__)


def test_group_requests_have_kafkas_api_keys_and_are_registered() -> None:
    for cls, key in KAFKA_API_KEYS.items():
        assert int(cls.API_KEY) == key, cls.__name__
        assert REQUEST_TYPES[key] is cls
        assert issubclass(cls.RESPONSE, Response)
    # the shared property tests (tests/proto/strategies.py) draw from the registry
    assert set(GROUP_REQUESTS) <= set(request_classes())
    assert len(set(REQUEST_TYPES)) == len(REQUEST_TYPES) == len(set(REQUEST_TYPES.values()))


@SLOW
@given(data=st.data(), cls=st.sampled_from(GROUP_REQUESTS), cid=INT64)
def test_every_group_request_round_trips_through_a_frame(
    data: st.DataObject, cls: type[Request], cid: int
) -> None:
    request = data.draw(strategy_for(cls), label="request")
    header = RequestHeader(int(cls.API_KEY), 0, cid, data.draw(st.none() | st.text(max_size=8)))
    decoded_header, decoded = decode_request(encode_request(header, request))
    assert decoded_header == header
    assert decoded == request and type(decoded) is cls


@SLOW
@given(data=st.data(), cls=st.sampled_from(GROUP_RESPONSES), cid=INT64)
def test_every_group_response_round_trips(
    data: st.DataObject, cls: type[Response], cid: int
) -> None:
    response = data.draw(strategy_for(cls), label="response")
    got_cid, code, body = decode_response_header(encode_response(cid, response))
    assert (got_cid, code) == (cid, 0)
    assert from_wire(cls, body) == response


def test_nullable_lists_keep_none_apart_from_empty() -> None:
    every = g.OffsetFetchRequest("grp", None)
    none_at_all = g.OffsetFetchRequest("grp", [])
    assert from_wire(g.OffsetFetchRequest, unpackb(packb(to_wire(every)))).topics is None
    assert from_wire(g.OffsetFetchRequest, unpackb(packb(to_wire(none_at_all)))).topics == []
    assert g.ListGroupsRequest().states_filter == []
    assert g.ListGroupsRequest().states_filter is not g.ListGroupsRequest().states_filter


def test_a_commit_from_outside_any_group_by_default() -> None:
    commit = g.OffsetCommitRequest(
        "grp", [g.OffsetCommitTopic("t", [g.OffsetCommitPartition(0, 5)])]
    )
    assert (commit.generation_id, commit.member_id, commit.group_instance_id) == (-1, "", None)
    part = commit.topics[0].partitions[0]
    assert (part.committed_leader_epoch, part.committed_metadata) == (-1, None)
    assert to_wire(commit) == ["grp", [["t", [[0, 5, -1, None]]]], -1, "", None]


@SLOW
@given(value=msgpack_values, cls=st.sampled_from(GROUP_REQUESTS), cid=INT64)
def test_random_group_request_bodies_decode_or_raise_remote_protocol_error(
    value: Any, cls: type[Request], cid: int
) -> None:
    try:
        header, request = decode_request(packb([int(cls.API_KEY), 0, cid, None, value]))
    except RemoteProtocolError:
        return
    assert type(request) is cls and header.correlation_id == cid


@SLOW
@given(value=msgpack_values, cls=st.sampled_from(GROUP_RESPONSES))
def test_random_group_response_bodies_decode_or_raise_remote_protocol_error(
    value: Any, cls: type[Response]
) -> None:
    try:
        response = from_wire(cls, value)
    except RemoteProtocolError:
        return
    assert type(response) is cls


@pytest.mark.parametrize(
    ("cls", "body"),
    [
        (g.FindCoordinatorRequest, []),  # too few fields
        (g.FindCoordinatorRequest, ["grp", 0, "extra"]),  # too many
        (g.FindCoordinatorRequest, [7, 0]),  # key is not a string
        (g.OffsetCommitRequest, ["grp", [["t", [[0, "5", -1, None]]]], -1, "", None]),
        (g.OffsetCommitRequest, ["grp", [["t", [[True, 5, -1, None]]]], -1, "", None]),
        (g.OffsetFetchRequest, ["grp", [["t", [0, None]]], False]),  # nil partition
        (g.JoinGroupRequest, ["grp", 1, 2, "", "consumer", [["range", "not bytes"]], None, None]),
        (g.LeaveGroupRequest, ["grp", {"member_id": "m"}]),  # a map, not an array
        (g.SyncGroupRequest, ["grp", 1, "m", [["m"]], None, None, None]),
        (g.ListGroupsRequest, [None]),  # states_filter is not nullable
        (g.DeleteGroupsRequest, "grp"),
        (g.OffsetDeleteRequest, ["grp", [["t", [[0, 1]]]]]),
    ],
)
def test_malformed_group_requests_raise_remote_protocol_error(
    cls: type[Request], body: Any
) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_request(packb([int(cls.API_KEY), 0, 1, None, body]))


def test_group_requests_speak_version_zero_only() -> None:
    request = g.HeartbeatRequest("grp", 3, "m")
    frame = encode_request(RequestHeader(int(ApiKey.HEARTBEAT), 1, 9, None), request)
    with pytest.raises(UnsupportedRequest) as info:
        decode_request(frame)
    assert info.value.header.correlation_id == 9
