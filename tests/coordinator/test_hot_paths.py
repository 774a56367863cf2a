"""The hand-written fast paths (peer frames, txns, zk bodies) match the generic codec, and
the client's reaper times requests out without a cancel scope per request."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from coordinator.client import CoordinatorClient, SessionState
from coordinator.client_conn import _Connection
from coordinator.txn import CreateTxn, DeleteTxn, MultiTxn, SetDataTxn, Txn, decode_txn
from proto.codec import packb, to_wire
from proto.errors import ConnectionLossError, RemoteProtocolError
from proto.framing import encode_frame
from proto.zk import (
    ClientProtocol,
    CreateRequest,
    CreateResponse,
    GetDataRequest,
    GetDataResponse,
    SetDataRequest,
    SetDataResponse,
    Stat,
    encode_reply,
    encode_request,
)
from proto.zk_peer import (
    _TAGS,
    AppendEntries,
    AppendResponse,
    Entry,
    PeerMessage,
    decode_peer_message,
    encode_peer_frame,
)

ints = st.integers(min_value=0, max_value=(1 << 63) - 1)


def generic_peer_frame(msg: PeerMessage) -> bytes:
    return encode_frame(
        packb([_TAGS[type(msg.body)], msg.src, msg.dst, to_wire(msg.body)]), 1 << 20
    )


@given(
    term=ints,
    prev=ints,
    commit=ints,
    entries=st.lists(st.tuples(ints, ints, st.binary(max_size=20)), max_size=5),
    success=st.booleans(),
)
def test_append_frames_are_the_generic_encoding(
    term: int, prev: int, commit: int, entries: list[tuple[int, int, bytes]], success: bool
) -> None:
    append = AppendEntries(term, prev, term, [Entry(*e) for e in entries], commit, prev)
    response = AppendResponse(term, success, prev, commit)
    for msg in (PeerMessage(1, 2, append), PeerMessage(2, 1, response)):
        frame = encode_peer_frame(msg, 1 << 20)
        assert frame == generic_peer_frame(msg)
        assert decode_peer_message(frame[4:]) == msg


@pytest.mark.parametrize(
    "body",
    [
        [1, 2, 3, [[1, 2]], 4, 0],  # short entry
        [1, 2, 3, [[1, 2, "x"]], 4, 0],  # str data
        [1, 2, 3, "x", 4, 0],
        [1, True, 3, [], 4, 0],  # bool is not an int
        [1, 2, 3, [], 4],
        "x",
    ],
)
def test_malformed_append_raises_protocol_error(body: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_peer_message(packb([3, 1, 2, body]))


@pytest.mark.parametrize("body", [[1, 1, 2, 0], [1, True, "2", 0], [1, True, 2], None])
def test_malformed_append_response_raises_protocol_error(body: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_peer_message(packb([4, 2, 1, body]))


@pytest.mark.parametrize(
    "op",
    [
        SetDataTxn("/a", b"x", 3),
        CreateTxn("/b", b"", 7),
        DeleteTxn("/c"),
        MultiTxn((CreateTxn("/d", b"1", 0), SetDataTxn("/a", b"", 4))),
    ],
)
def test_txns_round_trip(op: Any) -> None:
    from coordinator.txn import encode_txn

    txn = Txn(5 << 32 | 9, 1_700_000_000_000, 42, op)
    assert decode_txn(encode_txn(txn)) == txn


def test_malformed_fast_txn_raises_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_txn(packb([1, 2, 3, 5, ["/a", "not bytes", 1]]))


def test_hot_zk_bodies_are_the_generic_encoding() -> None:
    stat = Stat(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    requests = [GetDataRequest("/a", True), SetDataRequest("/a", b"x"), CreateRequest("/", b"", 1)]
    for req in requests:
        assert encode_request(3, req) == packb([3, *_opcode_and_wire(req)])
    for rep in (GetDataResponse(b"d", stat), SetDataResponse(stat), CreateResponse("/p", stat)):
        assert encode_reply(3, 9, 0, rep) == packb([3, 9, 0, to_wire(rep)])


def _opcode_and_wire(body: Any) -> list[Any]:
    from proto.zk import OPCODE_OF

    return [OPCODE_OF[type(body)], to_wire(body)]


async def test_a_request_without_a_reply_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = CoordinatorClient(
        [("127.0.0.1", 1)], session_timeout_ms=60_000, connect_timeout_ms=1000,
        request_timeout_ms=1000,
    )  # fmt: skip
    ours, theirs = trio.testing.memory_stream_pair()
    conn = _Connection(cast(trio.SocketStream, ours), ClientProtocol(), 100.0, 50.0)
    client._conn = conn
    client.state = SessionState.CONNECTED
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._serve_connection, conn)
        start = trio.current_time()
        with pytest.raises(ConnectionLossError, match="no reply within 1000 ms"):
            await client.get("/a")
        assert trio.current_time() - start == pytest.approx(1.0)
        assert conn.pending == {}
        # A later request gets its own full timeout.
        await trio.sleep(0.5)
        start = trio.current_time()
        with pytest.raises(ConnectionLossError):
            await client.set("/a", b"")
        assert trio.current_time() - start == pytest.approx(1.0)
        nursery.cancel_scope.cancel()
    await theirs.aclose()
