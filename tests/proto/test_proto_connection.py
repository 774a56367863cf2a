"""Round trips through the sans-IO connections: client bytes -> server -> client.

Two Connections over a fake link, as h11's tests do: every request and response type,
pipelined, answered out of order, with the byte streams cut at random points.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.codec import FileRecords
from proto.connection import ClientConnection, ResponseEvent, ServerConnection
from proto.errors import RemoteProtocolError, UnsupportedVersionError
from proto.framing import LENGTH_PREFIX
from proto.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    FetchPartitionResponse,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
    Request,
    RequestHeader,
    Response,
    UnsupportedRequest,
)
from tests.proto.strategies import (
    INT64,
    all_requests,
    chunked,
    request_classes,
    response_classes,
    split_points,
    strategy_for,
)

SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drain_requests(server: ServerConnection) -> list[tuple[RequestHeader, Request]]:
    out = []
    while (item := server.next_request()) is not None:
        out.append(item)
    return out


def drain_events(client: ClientConnection) -> list[ResponseEvent]:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


def test_every_message_type_is_registered() -> None:
    """The strategies cover every Request/Response subclass, so nothing goes untested."""

    # slots=True makes a second class; only the one bound in the module is the real one.
    def public(classes: list[type[Any]]) -> set[type[Any]]:
        return {c for c in classes if getattr(sys.modules[c.__module__], c.__name__, None) is c}

    assert public(Request.__subclasses__()) == set(request_classes())
    assert public(Response.__subclasses__()) == set(response_classes())


@pytest.mark.parametrize("cls", request_classes(), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), client_id=st.none() | st.text(max_size=20))
def test_each_request_and_response_type_round_trips(
    cls: type[Request], data: st.DataObject, client_id: str | None
) -> None:
    request = data.draw(strategy_for(cls), label="request")
    client, server = ClientConnection(client_id=client_id), ServerConnection()
    cid, frame = client.send_request(request)
    server.receive_data(frame)
    [(header, decoded)] = drain_requests(server)
    assert header == RequestHeader(int(cls.API_KEY), 0, cid, client_id)
    assert decoded == request
    assert type(decoded) is cls

    response = data.draw(strategy_for(cls.RESPONSE), label="response")
    if not client.expects_response(request):
        assert client.in_flight == 0
        return
    client.receive_data(server.send_response(header, response))
    [event] = drain_events(client)
    assert event == ResponseEvent(cid, request, response, 0)
    assert type(event.response) is cls.RESPONSE
    assert client.in_flight == 0


@SLOW
@given(data=st.data(), requests=st.lists(all_requests, min_size=1, max_size=8))
def test_pipelined_requests_answered_out_of_order_over_split_streams(
    data: st.DataObject, requests: list[Request]
) -> None:
    client, server = ClientConnection(client_id="pipeline"), ServerConnection()
    sent: list[tuple[int, Request]] = []
    wire = b""
    for request in requests:
        cid, frame = client.send_request(request)
        sent.append((cid, request))
        wire += frame

    received: list[tuple[RequestHeader, Request]] = []
    for chunk in chunked(wire, data.draw(split_points(len(wire)), label="request cuts")):
        server.receive_data(chunk)
        received.extend(drain_requests(server))
    assert [(h.correlation_id, r) for h, r in received] == sent
    assert all(h.api_key == int(type(r).API_KEY) for h, r in received)
    assert len({cid for cid, _ in sent}) == len(sent)

    headers = {h.correlation_id: h for h, r in received if client.expects_response(r)}
    assert sorted(client.pending_requests()) == sorted(headers)
    responses = {
        cid: data.draw(strategy_for(type(r).RESPONSE), label=f"response {cid}")
        for cid, r in sent
        if cid in headers
    }
    order = data.draw(st.permutations(sorted(responses)), label="answer order")
    back = b"".join(server.send_response(headers[cid], responses[cid]) for cid in order)

    events: list[ResponseEvent] = []
    for chunk in chunked(back, data.draw(split_points(len(back)), label="response cuts")):
        client.receive_data(chunk)
        events.extend(drain_events(client))
    requests_by_id = dict(sent)
    assert [e.correlation_id for e in events] == list(order)
    for event in events:
        assert event.request == requests_by_id[event.correlation_id]
        assert event.response == responses[event.correlation_id]
        assert event.error_code == 0
    assert client.in_flight == 0


@SLOW
@given(data=st.data(), requests=st.lists(all_requests, min_size=1, max_size=8))
def test_pipelined_mix_of_answers_errors_and_forgotten_requests(
    data: st.DataObject, requests: list[Request]
) -> None:
    client, server = ClientConnection(), ServerConnection()
    wire = b""
    expected: dict[int, Request] = {}
    for request in requests:
        cid, frame = client.send_request(request)
        wire += frame
        if client.expects_response(request):
            expected[cid] = request
    server.receive_data(wire)
    headers = {h.correlation_id: h for h, _ in drain_requests(server)}

    actions = {
        cid: data.draw(st.sampled_from(["answer", "error", "forget"]), label=f"action {cid}")
        for cid in expected
    }
    codes = {cid: data.draw(INT64.filter(bool), label=f"code {cid}") for cid in expected}
    for cid, action in actions.items():
        if action == "forget":
            client.forget(cid)
    responses: dict[int, Response] = {}
    back = b""
    for cid in data.draw(st.permutations(sorted(expected)), label="answer order"):
        if actions[cid] == "error":
            back += server.send_error(cid, codes[cid])
        else:
            responses[cid] = data.draw(strategy_for(type(expected[cid]).RESPONSE))
            back += server.send_response(headers[cid], responses[cid])

    events: list[ResponseEvent] = []
    for chunk in chunked(back, data.draw(split_points(len(back)), label="cuts")):
        client.receive_data(chunk)
        events.extend(drain_events(client))
    assert {e.correlation_id for e in events} == {c for c, a in actions.items() if a != "forget"}
    for event in events:
        assert event.request == expected[event.correlation_id]
        if actions[event.correlation_id] == "error":
            assert event.response is None
            assert event.error_code == codes[event.correlation_id]
        else:
            assert event.response == responses[event.correlation_id]
            assert event.error_code == 0
    assert client.in_flight == 0
    assert client.pending_requests() == []


# --- send_response_segments: FileRecords leaves stand for bytes of a file --------------

FD = 7


def _resolve(value: Any, blob: bytes) -> Any:
    """``value`` with every FileRecords replaced by the bytes it stands for."""
    if isinstance(value, FileRecords):
        assert value.fd == FD
        return blob[value.position : value.position + value.size]
    if isinstance(value, list):
        return [_resolve(v, blob) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _resolve(getattr(value, f.name), blob) for f in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changes)
    return value


def _count_file_records(value: Any) -> int:
    if isinstance(value, FileRecords):
        return 1
    if isinstance(value, list):
        return sum(_count_file_records(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_count_file_records(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


@st.composite
def fetch_responses_with_files(draw: st.DrawFn) -> tuple[bytes, FetchResponse]:
    # Slices large enough that msgpack would pick bin8, bin16 and bin32 for plain bytes.
    blob = draw(st.binary(min_size=1, max_size=300).map(lambda b: b * (1 + len(b) % 300)))
    slices = st.integers(0, len(blob)).flatmap(
        lambda pos: st.builds(
            FileRecords, st.just(FD), st.just(pos), st.integers(0, len(blob) - pos)
        )
    )
    return blob, draw(strategy_for(FetchResponse, file_records=slices))


def _join_segments(segments: list[bytes | FileRecords], blob: bytes) -> bytes:
    return b"".join(_resolve(s, blob) for s in segments)


@SLOW
@given(case=fetch_responses_with_files(), data=st.data())
def test_segments_with_file_records_decode_like_plain_bytes(
    case: tuple[bytes, FetchResponse], data: st.DataObject
) -> None:
    blob, response = case
    plain = _resolve(response, blob)
    client, server = ClientConnection(), ServerConnection()
    request = data.draw(strategy_for(FetchRequest))
    cid, frame = client.send_request(request)
    server.receive_data(frame)
    [(header, _)] = drain_requests(server)

    segments = server.send_response_segments(header, response)
    assert sum(isinstance(s, FileRecords) for s in segments) == _count_file_records(response)
    wire = _join_segments(segments, blob)
    (size,) = LENGTH_PREFIX.unpack_from(wire)
    assert size == len(wire) - LENGTH_PREFIX.size
    for chunk in chunked(wire, data.draw(split_points(len(wire)))):
        client.receive_data(chunk)
    [event] = drain_events(client)
    assert event == ResponseEvent(cid, request, plain, 0)

    # The same client decodes the plain encoding to the very same value.
    _cid2, frame2 = client.send_request(request)
    server.receive_data(frame2)
    [(header2, _)] = drain_requests(server)
    client.receive_data(server.send_response(header2, plain))
    [event2] = drain_events(client)
    assert event2.response == event.response


def test_segments_pass_file_records_through_untouched() -> None:
    client, server = ClientConnection(), ServerConnection()
    request = FetchRequest(max_wait_ms=0, min_bytes=0, max_bytes=0, topics=[])
    cid, frame = client.send_request(request)
    server.receive_data(frame)
    [(header, _)] = drain_requests(server)
    records = FileRecords(fd=FD, position=3, size=70_000)
    partition = FetchPartitionResponse(0, 0, 10, 10, 0, records)
    response = FetchResponse(0, [FetchTopicResponse("t", [partition])])
    segments = server.send_response_segments(header, response)
    assert any(s is records for s in segments)
    blob = bytes(range(256)) * 300
    client.receive_data(_join_segments(segments, blob))
    [event] = drain_events(client)
    assert event.correlation_id == cid
    assert isinstance(event.response, FetchResponse)
    assert event.response.topics[0].partitions[0].records == blob[3 : 3 + 70_000]


def test_segments_from_a_real_file(tmp_path: Path) -> None:
    """What the I/O layer does: write the bytes chunks, sendfile the FileRecords slices."""
    blob = bytes(range(256)) * 40
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(blob)
    client, server = ClientConnection(), ServerConnection()
    cid, frame = client.send_request(FetchRequest(0, 1, 1 << 20, []))
    server.receive_data(frame)
    [(header, _)] = drain_requests(server)
    with path.open("rb") as f:
        slices = [FileRecords(f.fileno(), 100, 5000), FileRecords(f.fileno(), 0, 0)]
        partitions = [FetchPartitionResponse(i, 0, 9, 9, 0, s) for i, s in enumerate(slices)]
        response = FetchResponse(0, [FetchTopicResponse("t", partitions)], 3)
        wire = b"".join(
            os.pread(s.fd, s.size, s.position) if isinstance(s, FileRecords) else s
            for s in server.send_response_segments(header, response)
        )
    client.receive_data(wire)
    [event] = drain_events(client)
    assert event.correlation_id == cid
    assert isinstance(event.response, FetchResponse)
    got = [p.records for p in event.response.topics[0].partitions]
    assert got == [blob[100:5100], b""]
    assert event.response.throttle_time_ms == 3


@pytest.mark.parametrize("cls", response_classes(), ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_segments_without_file_records_equal_plain_response(
    cls: type[Response], data: st.DataObject
) -> None:
    response = data.draw(strategy_for(cls))
    header = RequestHeader(0, 0, data.draw(st.integers(0, 2**31 - 1)), None)
    server = ServerConnection()
    segments = server.send_response_segments(header, response)
    assert all(isinstance(s, bytes) for s in segments)
    assert _join_segments(segments, b"") == server.send_response(header, response)


def test_segments_respect_max_frame_size() -> None:
    records = FileRecords(fd=FD, position=0, size=2000)
    response = FetchResponse(
        0, [FetchTopicResponse("t", [FetchPartitionResponse(0, 0, 0, 0, 0, records)])]
    )
    header = RequestHeader(int(FetchRequest.API_KEY), 0, 1, None)
    with pytest.raises(RemoteProtocolError):
        ServerConnection(max_frame_size=1000).send_response_segments(header, response)


# --- request-level errors, forgotten ids, unknown ids -------------------------------------


@given(code=INT64.filter(bool), request=all_requests)
def test_send_error_reaches_client_as_event_with_code(code: int, request: Request) -> None:
    client, server = ClientConnection(), ServerConnection()
    cid, _frame = client.send_request(request)
    if not client.expects_response(request):
        return
    client.receive_data(server.send_error(cid, code))
    assert drain_events(client) == [ResponseEvent(cid, request, None, code)]
    assert client.in_flight == 0


def test_unsupported_version_error_code_reaches_client() -> None:
    client, server = ClientConnection(), ServerConnection()
    cid, frame = client.send_request(MetadataRequest(["a"]), api_version=7)
    server.receive_data(frame)
    with pytest.raises(UnsupportedRequest) as info:
        server.next_request()
    assert isinstance(info.value, RemoteProtocolError)
    header = info.value.header
    client.receive_data(server.send_error(header.correlation_id, info.value.code))
    [event] = drain_events(client)
    assert event.error_code == UnsupportedVersionError.code
    assert event.correlation_id == cid


def test_forgotten_response_is_dropped_silently() -> None:
    client, server = ClientConnection(), ServerConnection()
    cid1, f1 = client.send_request(ApiVersionsRequest())
    cid2, f2 = client.send_request(MetadataRequest(None))
    server.receive_data(f1 + f2)
    (h1, _), (h2, _) = drain_requests(server)
    client.forget(cid1)
    assert client.pending_requests() == [cid2]
    client.forget(cid1)  # twice is harmless
    client.forget(12345)  # never sent: harmless
    empty_metadata = MetadataResponse([], None, 1, [])
    client.receive_data(server.send_response(h1, ApiVersionsResponse(0, [])))
    assert client.next_event() is None
    client.receive_data(server.send_response(h2, empty_metadata))
    [event] = drain_events(client)
    assert event.correlation_id == cid2
    assert event.response == empty_metadata
    # A second late answer for the forgotten id is no longer expected: it is an error.
    client.receive_data(server.send_response(h1, ApiVersionsResponse(0, [])))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


@given(cid=st.integers(0, 2**31 - 1) | INT64)
def test_response_for_unknown_correlation_id_raises(cid: int) -> None:
    client, server = ClientConnection(), ServerConnection()
    sent, _ = client.send_request(ApiVersionsRequest())
    if cid == sent:
        cid += 1
    client.receive_data(server.send_error(cid, -1))
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    # The connection is now unusable, even for the real answer.
    client.receive_data(server.send_error(sent, -1))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_produce_with_acks_zero_expects_no_response() -> None:
    client, server = ClientConnection(), ServerConnection()
    _cid, frame = client.send_request(ProduceRequest(acks=0, timeout_ms=100, topics=[]))
    assert client.in_flight == 0
    server.receive_data(frame)
    [(header, request)] = drain_requests(server)
    assert request == ProduceRequest(0, 100, [])
    client.receive_data(server.send_response(header, ProduceRequest.RESPONSE([])))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_response_with_wrong_shape_for_the_request_raises() -> None:
    client, server = ClientConnection(), ServerConnection()
    cid, _frame = client.send_request(ApiVersionsRequest())
    header = RequestHeader(int(ApiVersionsRequest.API_KEY), 0, cid, None)
    # A Metadata response where an ApiVersions one is awaited.
    client.receive_data(server.send_response(header, MetadataRequest.RESPONSE([], "c", 1, [])))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_correlation_ids_count_up_per_connection() -> None:
    client = ClientConnection()
    ids = [client.send_request(ApiVersionsRequest())[0] for _ in range(5)]
    assert ids == [0, 1, 2, 3, 4]
    assert client.pending_requests() == ids
