"""Length-prefixed frames: FrameDecoder over random splits, limits and early end of stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.connection import ClientConnection, ServerConnection
from proto.errors import RemoteProtocolError
from proto.framing import DEFAULT_MAX_FRAME_SIZE, LENGTH_PREFIX, FrameDecoder, encode_frame
from proto.messages import MetadataRequest
from tests.proto.strategies import chunked, split_points

bodies = st.lists(st.binary(max_size=300), max_size=10)


def drain(decoder: FrameDecoder) -> list[bytes]:
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


@given(frames=bodies, data=st.data())
def test_decoder_returns_frames_whatever_the_split(
    frames: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for chunk in chunked(wire, data.draw(split_points(len(wire)))):
        decoder.receive_data(chunk)
        got.extend(drain(decoder))
    assert got == frames
    assert decoder.buffered == 0
    decoder.receive_data(b"")  # a clean end of stream between frames
    assert decoder.next_frame() is None


@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(0, 200_000), min_size=5, max_size=25), data=st.data())
def test_decoder_compacts_its_buffer_over_megabytes(sizes: list[int], data: st.DataObject) -> None:
    frames = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for chunk in chunked(wire, data.draw(split_points(len(wire)))):
        decoder.receive_data(chunk)
        got.extend(drain(decoder))
    assert got == frames
    assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    frames = [b"", b"a", b"hello" * 50, b""]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(wire)):
        decoder.receive_data(wire[i : i + 1])
        got.extend(drain(decoder))
    assert got == frames


@given(max_size=st.integers(1, 10_000), excess=st.integers(1, 2**32 - 1 - 10_000))
def test_oversized_length_prefix_raises_before_body(max_size: int, excess: int) -> None:
    decoder = FrameDecoder(max_frame_size=max_size)
    prefix = LENGTH_PREFIX.pack(max_size + excess)
    decoder.receive_data(prefix[:3])
    assert decoder.next_frame() is None
    decoder.receive_data(prefix[3:])  # no body byte has arrived yet
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


@given(max_size=st.integers(1, 2000), body=st.binary(max_size=2000))
def test_max_frame_size_is_configurable(max_size: int, body: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=max_size)
    framed = LENGTH_PREFIX.pack(len(body)) + body
    decoder.receive_data(framed)
    if len(body) <= max_size:
        assert encode_frame(body, max_size) == framed
        assert decoder.next_frame() == body
    else:
        with pytest.raises(RemoteProtocolError):
            encode_frame(body, max_size)
        with pytest.raises(RemoteProtocolError):
            decoder.next_frame()


def test_default_max_frame_size() -> None:
    decoder = FrameDecoder()
    assert decoder.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    decoder.receive_data(LENGTH_PREFIX.pack(DEFAULT_MAX_FRAME_SIZE + 1))
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


@pytest.mark.parametrize("bad", [0, -1])
def test_max_frame_size_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_size=bad)


@given(frames=bodies.filter(lambda fs: any(fs)), data=st.data())
def test_stream_ending_mid_frame_raises(frames: list[bytes], data: st.DataObject) -> None:
    wire = b"".join(encode_frame(f) for f in frames)
    boundaries = {0}
    for f in frames:
        boundaries.add(max(boundaries) + 4 + len(f))
    cut = data.draw(st.integers(1, len(wire) - 1).filter(lambda c: c not in boundaries))
    decoder = FrameDecoder()
    decoder.receive_data(wire[:cut])
    complete = drain(decoder)
    assert complete == frames[: len(complete)]
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_stream_ending_inside_length_prefix_raises() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00\x00")
    assert decoder.next_frame() is None
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_data_after_end_of_stream_raises() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(b"x")


def test_connections_enforce_their_max_frame_size() -> None:
    small = ClientConnection(max_frame_size=64)
    with pytest.raises(RemoteProtocolError):
        small.send_request(MetadataRequest(["t" * 100]))
    assert small.in_flight == 0

    _, frame = ClientConnection().send_request(MetadataRequest(["t" * 100]))
    server = ServerConnection(max_frame_size=64)
    server.receive_data(frame[:4])  # the length prefix alone is enough to refuse
    with pytest.raises(RemoteProtocolError):
        server.next_request()

    client = ClientConnection(max_frame_size=64)
    client.send_request(MetadataRequest(None))
    client.receive_data(LENGTH_PREFIX.pack(65))
    with pytest.raises(RemoteProtocolError):
        client.next_event()
