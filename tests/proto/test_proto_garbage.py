"""Malformed input: decoding must raise RemoteProtocolError and nothing else.

``pytest.raises(RemoteProtocolError)`` lets any other exception type through, so a
KeyError or TypeError escaping the decoder fails these tests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.codec import from_wire, packb, to_wire, unpackb
from proto.connection import ClientConnection, ResponseEvent, ServerConnection
from proto.errors import RemoteProtocolError, UnsupportedVersionError
from proto.framing import encode_frame
from proto.messages import (
    REQUEST_TYPES,
    ApiVersionsRequest,
    Request,
    RequestHeader,
    UnsupportedRequest,
    decode_request,
    decode_response_header,
)
from tests.proto.strategies import (
    INT64,
    all_requests,
    chunked,
    msgpack_values,
    request_classes,
    split_points,
    strategy_for,
)

SLOW = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def server_decodes(wire: bytes) -> list[tuple[RequestHeader, Request]]:
    """Feed ``wire`` to a fresh server; RemoteProtocolError is the only failure allowed."""
    server = ServerConnection()
    server.receive_data(wire)
    out = []
    try:
        while (item := server.next_request()) is not None:
            out.append(item)
    except RemoteProtocolError:
        return out
    return out


def request_frame(*fields: Any) -> bytes:
    return encode_frame(packb(list(fields)))


# --- arbitrary bytes and arbitrary msgpack ----------------------------------------------


@SLOW
@given(garbage=st.binary(max_size=200), data=st.data())
def test_arbitrary_bytes_to_server(garbage: bytes, data: st.DataObject) -> None:
    server = ServerConnection()
    try:
        for chunk in chunked(garbage, data.draw(split_points(len(garbage)))):
            server.receive_data(chunk)
            while server.next_request() is not None:
                pass
        server.receive_data(b"")
        while server.next_request() is not None:
            pass
    except RemoteProtocolError:
        return


@SLOW
@given(garbage=st.binary(max_size=200))
def test_arbitrary_framed_bytes_to_server(garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_request(garbage + b"\xc1")  # 0xc1 is never valid msgpack
    server_decodes(encode_frame(garbage))


@SLOW
@given(garbage=st.binary(max_size=200), request=all_requests)
def test_arbitrary_bytes_to_client(garbage: bytes, request: Request) -> None:
    client = ClientConnection()
    client.send_request(request)
    client.receive_data(encode_frame(garbage))
    try:
        event = client.next_event()
    except RemoteProtocolError:
        return
    assert event is None or isinstance(event, ResponseEvent)


@SLOW
@given(value=msgpack_values)
def test_random_msgpack_request_frames(value: Any) -> None:
    for header, request in server_decodes(encode_frame(packb(value))):
        assert type(request) is REQUEST_TYPES[header.api_key]


@SLOW
@given(value=msgpack_values, cls=st.sampled_from(request_classes()), cid=INT64)
def test_random_msgpack_request_bodies(value: Any, cls: type[Request], cid: int) -> None:
    frame = packb([int(cls.API_KEY), 0, cid, None, value])
    try:
        header, request = decode_request(frame)
    except RemoteProtocolError:
        return
    assert type(request) is cls
    assert header.correlation_id == cid


@SLOW
@given(value=msgpack_values, request=all_requests)
def test_random_msgpack_response_bodies(value: Any, request: Request) -> None:
    client = ClientConnection()
    cid, _ = client.send_request(request)
    if not client.expects_response(request):
        return
    client.receive_data(encode_frame(packb([cid, 0, value])))
    try:
        event = client.next_event()
    except RemoteProtocolError:
        return
    assert event is not None
    assert type(event.response) is type(request).RESPONSE


@SLOW
@given(value=msgpack_values)
def test_random_msgpack_response_frames(value: Any) -> None:
    client = ClientConnection()
    client.send_request(ApiVersionsRequest())
    client.receive_data(encode_frame(packb(value)))
    try:
        client.next_event()
    except RemoteProtocolError:
        return


# --- wrong arity ------------------------------------------------------------------------


@given(fields=st.lists(msgpack_values, max_size=8).filter(lambda f: len(f) != 5))
def test_request_frame_with_wrong_arity(fields: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_request(packb(fields))


@given(fields=st.lists(msgpack_values, max_size=6).filter(lambda f: len(f) != 3))
def test_response_frame_with_wrong_arity(fields: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_response_header(packb(fields))


@given(request=all_requests, extra=msgpack_values, data=st.data())
def test_request_body_with_wrong_arity(request: Request, extra: Any, data: st.DataObject) -> None:
    wire = to_wire(request)
    drop = data.draw(st.booleans(), label="drop a field")
    if wire and drop:
        del wire[data.draw(st.integers(0, len(wire) - 1))]
    else:
        wire.insert(data.draw(st.integers(0, len(wire))), extra)
    with pytest.raises(RemoteProtocolError):
        decode_request(packb([int(request.API_KEY), 0, 1, None, wire]))


# --- wrong field types ------------------------------------------------------------------


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position inside a nested list/dict structure (a dict key is ('key', k))."""
    yield prefix
    if isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, ("key", k))
            yield from paths(v, (*prefix, k))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        out = list(value)
        out[head] = replaced(value[head], rest, new)
        return out
    assert isinstance(value, dict)
    if isinstance(head, tuple):  # replace a key
        out_map = {k: v for k, v in value.items() if k != head[1]}
        out_map[new] = value[head[1]]
        return out_map
    return {**value, head: replaced(value[head], rest, new)}


def normalise(value: Any) -> Any:
    """What msgpack gives back: tuples become lists."""
    return unpackb(packb(value))


@SLOW
@given(request=all_requests, new=msgpack_values, data=st.data())
def test_request_with_any_field_replaced(request: Request, new: Any, data: st.DataObject) -> None:
    """Replacing any part of a body either fails cleanly or decodes to exactly that body."""
    wire = to_wire(request)
    path = data.draw(st.sampled_from(list(paths(wire))))
    if path and isinstance(path[-1], tuple) and isinstance(new, (list, dict)):
        new = repr(new)  # a map key must be hashable; msgpack would refuse to pack it
    mutated = normalise(replaced(wire, path, new))
    try:
        _, decoded = decode_request(packb([int(request.API_KEY), 0, 1, None, mutated]))
    except RemoteProtocolError:
        return
    assert type(decoded) is type(request)
    assert normalise(to_wire(decoded)) == mutated


def _float_paths(request: Request) -> Iterator[tuple[Any, ...]]:
    """Positions holding a declared field (not a list element or map entry)."""

    def walk(obj: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for i, f in enumerate(dataclasses.fields(obj)):
                yield (*prefix, i)
                yield from walk(getattr(obj, f.name), (*prefix, i))
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                yield from walk(v, (*prefix, i))

    return walk(request, ())


@SLOW
@given(request=all_requests, data=st.data())
def test_any_declared_field_with_a_float_is_rejected(request: Request, data: st.DataObject) -> None:
    """No field is declared float, so a float anywhere a field sits must be refused."""
    candidates = list(_float_paths(request))
    if not candidates:
        return
    path = data.draw(st.sampled_from(candidates))
    mutated = replaced(to_wire(request), path, data.draw(st.floats() | st.just(math.pi)))
    with pytest.raises(RemoteProtocolError):
        decode_request(packb([int(request.API_KEY), 0, 1, None, mutated]))


@pytest.mark.parametrize("cls", request_classes(), ids=lambda c: c.__name__)
def test_from_wire_rejects_non_arrays(cls: type[Request]) -> None:
    values: list[Any] = [None, 1, "x", b"x", {}, 1.5, True]
    for value in values:
        with pytest.raises(RemoteProtocolError):
            from_wire(cls, value)


@pytest.mark.parametrize(
    "header",
    [
        [1.0, 0, 1, None],
        [0, "0", 1, None],
        [0, 0, None, None],
        [True, 0, 1, None],
        [0, 0, 1, 5],
        [0, 0, 1, b"client"],
    ],
)
def test_request_header_with_wrong_types(header: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_request(packb([*header, []]))


@pytest.mark.parametrize(
    "frame", [[1.0, 0, []], [1, "0", []], [None, 0, None], [1, False, None], "abc", {}]
)
def test_response_header_with_wrong_types(frame: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_response_header(packb(frame))


def test_msgpack_ext_types_are_rejected() -> None:
    ext = msgpack.ExtType(5, b"xx")
    with pytest.raises(RemoteProtocolError):
        decode_request(packb([0, 0, ext, None, []]))
    stamp = msgpack.Timestamp(1, 0)
    with pytest.raises(RemoteProtocolError):
        decode_request(packb([int(ApiVersionsRequest.API_KEY), 0, 1, stamp, []]))
    with pytest.raises(RemoteProtocolError):
        unpackb(b"\xd4\xff\x00")  # a timestamp extension of the wrong length


# --- unknown api keys and unsupported versions ------------------------------------------


@given(
    api_key=INT64.filter(lambda k: k not in REQUEST_TYPES),
    version=INT64,
    cid=INT64,
    client_id=st.none() | st.text(),
    body=msgpack_values,
)
def test_unknown_api_key_is_unsupported_request(
    api_key: int, version: int, cid: int, client_id: str | None, body: Any
) -> None:
    with pytest.raises(UnsupportedRequest) as info:
        decode_request(packb([api_key, version, cid, client_id, body]))
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.header == RequestHeader(api_key, version, cid, client_id)
    assert info.value.code == UnsupportedVersionError.code


@given(
    cls=st.sampled_from(request_classes()),
    version=INT64,
    cid=INT64,
    data=st.data(),
)
def test_unsupported_api_version_is_unsupported_request(
    cls: type[Request], version: int, cid: int, data: st.DataObject
) -> None:
    request = data.draw(strategy_for(cls))
    frame = packb([int(cls.API_KEY), version, cid, "c", to_wire(request)])
    if cls.MIN_VERSION <= version <= cls.MAX_VERSION:
        assert decode_request(frame) == (
            RequestHeader(int(cls.API_KEY), version, cid, "c"),
            request,
        )
        return
    with pytest.raises(UnsupportedRequest) as info:
        decode_request(frame)
    assert info.value.header == RequestHeader(int(cls.API_KEY), version, cid, "c")


def test_unsupported_request_through_server_connection_keeps_the_header() -> None:
    server = ServerConnection()
    server.receive_data(request_frame(999, 0, 42, "cli", []))
    with pytest.raises(UnsupportedRequest) as info:
        server.next_request()
    assert info.value.header.correlation_id == 42
    assert info.value.header.client_id == "cli"
