"""proto.zk: round trips between ClientProtocol and ServerProtocol, and garbage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.errors import RemoteProtocolError
from proto.framing import encode_frame
from proto.zk import (
    NOTIFICATION_XID,
    PING_XID,
    ClientProtocol,
    CloseSessionRequest,
    ConnectRequest,
    ConnectResponse,
    CreateRequest,
    CreateResponse,
    DeleteRequest,
    EmptyResponse,
    ExistsRequest,
    ExistsResponse,
    FourLetterWord,
    GetChildrenRequest,
    GetChildrenResponse,
    GetDataRequest,
    GetDataResponse,
    MultiOp,
    MultiRequest,
    MultiResponse,
    MultiResult,
    OpCode,
    PingRequest,
    Reply,
    RequestEvent,
    ServerProtocol,
    SetDataRequest,
    SetDataResponse,
    SetWatchesRequest,
    Stat,
    SyncRequest,
    SyncResponse,
    WatcherEvent,
)

i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
paths = st.text(max_size=20).map(lambda s: "/" + s)
stats = st.builds(Stat, *[i64] * 10)
requests = st.one_of(
    st.builds(CreateRequest, paths, st.binary(max_size=64), st.integers(0, 3), st.booleans()),
    st.builds(DeleteRequest, paths, i64),
    st.builds(ExistsRequest, paths, st.booleans()),
    st.builds(GetDataRequest, paths, st.booleans()),
    st.builds(SetDataRequest, paths, st.binary(max_size=64), i64),
    st.builds(GetChildrenRequest, paths, st.booleans()),
    st.builds(SyncRequest, paths),
    st.builds(
        MultiRequest,
        st.lists(
            st.builds(
                MultiOp,
                st.sampled_from([1, 2, 5, 13]),
                paths,
                st.binary(max_size=8),
                st.integers(0, 3),
                i64,
            ),
            max_size=4,
        ),
    ),
    st.builds(CloseSessionRequest),
)
REPLY_FOR: dict[type[Any], Any] = {
    CreateRequest: st.builds(CreateResponse, paths, stats),
    DeleteRequest: st.builds(EmptyResponse),
    ExistsRequest: st.builds(ExistsResponse, st.none() | stats),
    GetDataRequest: st.builds(GetDataResponse, st.binary(max_size=64), stats),
    SetDataRequest: st.builds(SetDataResponse, stats),
    GetChildrenRequest: st.builds(
        GetChildrenResponse, st.lists(st.text(max_size=8), max_size=4), stats
    ),
    SyncRequest: st.builds(SyncResponse, paths),
    MultiRequest: st.builds(
        MultiResponse,
        st.lists(
            st.builds(
                MultiResult,
                st.sampled_from([1, 2, 5, 13]),
                st.integers(-130, 0),
                st.none() | paths,
                st.none() | stats,
            ),
            max_size=4,
        ),
    ),
    CloseSessionRequest: st.builds(EmptyResponse),
}


def _handshake() -> tuple[ClientProtocol, ServerProtocol]:
    client, server = ClientProtocol(), ServerProtocol()
    server.receive_data(client.connect(ConnectRequest(0, 5, 6000, 0, b"")))
    assert server.next_event() == ConnectRequest(0, 5, 6000, 0, b"")
    client.receive_data(server.send_connect_response(ConnectResponse(0, 6000, 42, b"pw")))
    assert client.next_event() == ConnectResponse(0, 6000, 42, b"pw")
    return client, server


@given(st.lists(requests, min_size=1, max_size=5), st.data())
def test_pipelined_requests_round_trip(bodies: list[Any], data: st.DataObject) -> None:
    client, server = _handshake()
    sent = [client.send_request(body) for body in bodies]
    # Deliver the requests split at arbitrary points.
    stream = b"".join(frame for _, frame in sent)
    cut = data.draw(st.integers(1, len(stream) - 1))
    server.receive_data(stream[:cut])
    got: list[RequestEvent] = []
    while (ev := server.next_event()) is not None:
        assert isinstance(ev, RequestEvent)
        got.append(ev)
    server.receive_data(stream[cut:])
    while (ev := server.next_event()) is not None:
        assert isinstance(ev, RequestEvent)
        got.append(ev)
    assert [e.body for e in got] == bodies
    assert [e.xid for e in got] == [xid for xid, _ in sent]
    # Replies out of order, with a notification in between.
    for (xid, _), body in reversed(list(zip(sent, bodies, strict=True))):
        reply = data.draw(REPLY_FOR[type(body)])
        client.receive_data(server.send_reply(xid, 99, 0, reply))
        client.receive_data(server.send_notification(98, WatcherEvent(3, 3, "/w")))
        got_reply = client.next_event()
        assert isinstance(got_reply, Reply)
        assert (got_reply.xid, got_reply.body, got_reply.zxid) == (xid, reply, 99)
        note = client.next_event()
        assert isinstance(note, Reply) and note.xid == NOTIFICATION_XID
        assert note.opcode == OpCode.NOTIFICATION and note.body == WatcherEvent(3, 3, "/w")


def test_ping_setwatches_and_errors() -> None:
    client, server = _handshake()
    xid, frame = client.send_request(PingRequest())
    assert xid == PING_XID
    server.receive_data(frame)
    assert server.next_event() == RequestEvent(PING_XID, OpCode.PING, PingRequest())
    client.receive_data(server.send_reply(PING_XID, 1, 0, None))
    assert client.next_event() == Reply(PING_XID, 1, 0, OpCode.PING, None)
    _, frame = client.send_request(SetWatchesRequest(3, ["/a"], [], ["/b"]))
    server.receive_data(frame)
    ev = server.next_event()
    assert isinstance(ev, RequestEvent) and ev.body == SetWatchesRequest(3, ["/a"], [], ["/b"])
    xid, _ = client.send_request(GetDataRequest("/x"))
    client.receive_data(server.send_reply(xid, 1, -101, None))
    assert client.next_event() == Reply(xid, 1, -101, OpCode.GET_DATA, None)
    client.receive_data(server.send_reply(12345, 1, 0, None))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


@pytest.mark.parametrize("word", ["ruok", "srvr", "mntr", "stat"])
def test_four_letter_words(word: str) -> None:
    server = ServerProtocol()
    server.receive_data(word[:2].encode())
    assert server.next_event() is None
    server.receive_data(word[2:].encode() + b"\n")
    assert server.next_event() == FourLetterWord(word)


@given(st.binary(max_size=200))
def test_server_garbage_raises_only_protocol_error(blob: bytes) -> None:
    server = ServerProtocol(max_frame_size=1 << 16)
    try:
        server.receive_data(blob)
        server.receive_data(b"")
        while server.next_event() is not None:
            pass
    except RemoteProtocolError:
        pass


@given(st.lists(st.binary(max_size=40), max_size=4))
def test_framed_garbage_after_connect_raises_only_protocol_error(bodies: list[bytes]) -> None:
    _, server = _handshake()
    client, _ = _handshake()
    for body in bodies:
        try:
            server.receive_data(encode_frame(body))
            while server.next_event() is not None:
                pass
        except RemoteProtocolError:
            pass
        try:
            client.receive_data(encode_frame(body))
            while client.next_event() is not None:
                pass
        except RemoteProtocolError:
            pass


@given(
    st.lists(
        st.one_of(
            i64, st.binary(max_size=8), st.text(max_size=8), st.none(), st.lists(i64, max_size=3)
        ),
        max_size=5,
    )
)
def test_msgpack_shaped_garbage(fields: list[Any]) -> None:
    from proto.codec import packb

    _, server = _handshake()
    for frame in (packb(fields), packb([1, 4, fields]), packb([1, 14, [fields]])):
        try:
            server.receive_data(encode_frame(frame))
            while server.next_event() is not None:
                pass
        except RemoteProtocolError:
            pass
