"""Length-prefixed frames: 4-byte big-endian length, then the body. Sans-IO.

``FrameDecoder`` owns a receive buffer: feed it bytes with ``receive_data`` and take
whole frame bodies with ``next_frame``. It never reads a socket and never imports trio.
A frame larger than ``max_frame_size`` raises ``RemoteProtocolError`` as soon as its
length prefix is seen, before its body is buffered.
"""

from __future__ import annotations

import struct

from proto.errors import RemoteProtocolError

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "LENGTH_PREFIX", "FrameDecoder", "encode_frame"]

DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
LENGTH_PREFIX = struct.Struct(">I")


def encode_frame(body: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    if len(body) > max_frame_size:
        raise RemoteProtocolError(f"frame of {len(body)} bytes exceeds max {max_frame_size}")
    return LENGTH_PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies."""

    __slots__ = ("_buf", "_closed", "_pos", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0
        self._closed = False

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer. ``b""`` means the peer closed its side."""
        if not data:
            self._closed = True
            return
        if self._closed:
            raise RemoteProtocolError("data received after end of stream")
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """The next whole frame body, or None if more data is needed.

        Raises RemoteProtocolError for an oversized length prefix, or when the stream
        ended in the middle of a frame.
        """
        avail = len(self._buf) - self._pos
        if avail < 4:
            if self._closed and avail:
                raise RemoteProtocolError("stream ended inside a frame length prefix")
            return None
        (size,) = LENGTH_PREFIX.unpack_from(self._buf, self._pos)
        if size > self.max_frame_size:
            raise RemoteProtocolError(f"frame of {size} bytes exceeds max {self.max_frame_size}")
        end = self._pos + 4 + size
        if end > len(self._buf):
            if self._closed:
                raise RemoteProtocolError("stream ended inside a frame")
            return None
        body = bytes(self._buf[self._pos + 4 : end])
        self._pos = end
        # Compact once the consumed prefix dominates, so the buffer does not grow forever.
        if self._pos > 1 << 20 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return body
