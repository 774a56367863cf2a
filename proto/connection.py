"""Sans-IO connection state for the broker protocol, in the manner of h11.

``ClientConnection``: ``send_request(body) -> (correlation_id, bytes)``; feed what the
socket reads to ``receive_data``; ``next_event()`` returns a ``ResponseEvent`` or None
(need more data). Several requests may be in flight; responses are matched to requests by
correlation id, so the caller can pipeline freely.

``ServerConnection``: ``receive_data``; ``next_request()`` returns ``(header, request)``
or None; ``send_response`` / ``send_error`` give the bytes to write.

Neither touches a socket. Any protocol violation raises RemoteProtocolError; after that
the connection is unusable and the I/O layer must close the socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from proto.codec import Segment, segments_size
from proto.errors import RemoteProtocolError
from proto.framing import DEFAULT_MAX_FRAME_SIZE, LENGTH_PREFIX, FrameDecoder, encode_frame
from proto.messages import (
    ProduceRequest,
    Request,
    RequestHeader,
    Response,
    decode_request,
    decode_response_body,
    decode_response_header,
    encode_request,
    encode_response,
    encode_response_segments,
)

__all__ = ["ClientConnection", "ResponseEvent", "ServerConnection"]


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """A response matched to its request; ``error_code`` != 0 means request-level error."""

    correlation_id: int
    request: Request
    response: Response | None
    error_code: int = 0


class ClientConnection:
    __slots__ = (
        "_abandoned",
        "_decoder",
        "_next_id",
        "_pending",
        "_poisoned",
        "client_id",
        "max_frame_size",
    )

    def __init__(
        self, client_id: str | None = None, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self.client_id = client_id
        self.max_frame_size = max_frame_size
        self._decoder = FrameDecoder(max_frame_size)
        self._next_id = 0
        self._pending: dict[int, Request] = {}
        self._abandoned: set[int] = set()
        self._poisoned = False

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def expects_response(self, request: Request) -> bool:
        return not (isinstance(request, ProduceRequest) and request.acks == 0)

    def send_request(self, request: Request, api_version: int = 0) -> tuple[int, bytes]:
        """Encode a request. Returns its correlation id and the frame to write."""
        cid = self._next_id
        self._next_id = (self._next_id + 1) & 0x7FFFFFFF
        header = RequestHeader(int(request.API_KEY), api_version, cid, self.client_id)
        frame = encode_frame(encode_request(header, request), self.max_frame_size)
        if self.expects_response(request):
            self._pending[cid] = request
        return cid, frame

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive_data(data)

    def next_event(self) -> ResponseEvent | None:
        if self._poisoned:
            raise RemoteProtocolError("connection already failed")
        try:
            while True:
                frame = self._decoder.next_frame()
                if frame is None:
                    return None
                cid, error_code, body = decode_response_header(frame)
                if cid in self._abandoned:
                    self._abandoned.discard(cid)
                    continue
                break
            request = self._pending.pop(cid, None)
            if request is None:
                raise RemoteProtocolError(f"response for unknown correlation id {cid}")
            if error_code != 0 and body is None:
                return ResponseEvent(cid, request, None, error_code)
            response = decode_response_body(request.RESPONSE, body)
            return ResponseEvent(cid, request, response, error_code)
        except RemoteProtocolError:
            self._poisoned = True
            raise

    def forget(self, correlation_id: int) -> None:
        """Stop expecting a response (the caller gave up on it); a late one is dropped."""
        if self._pending.pop(correlation_id, None) is not None:
            self._abandoned.add(correlation_id)

    def pending_requests(self) -> list[int]:
        return list(self._pending)


class ServerConnection:
    __slots__ = ("_decoder", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._decoder = FrameDecoder(max_frame_size)

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive_data(data)

    def next_request(self) -> tuple[RequestHeader, Request] | None:
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        return decode_request(frame)

    def send_response(self, header: RequestHeader, response: Response) -> bytes:
        return encode_frame(encode_response(header.correlation_id, response), self.max_frame_size)

    def send_response_segments(self, header: RequestHeader, response: Response) -> list[Segment]:
        """The response as chunks to write in order; FileRecords chunks go by sendfile."""
        segments = encode_response_segments(header.correlation_id, response)
        size = segments_size(segments)
        if size > self.max_frame_size:
            raise RemoteProtocolError(f"response of {size} bytes exceeds max frame size")
        return [LENGTH_PREFIX.pack(size), *segments]

    def send_error(self, correlation_id: int, error_code: int) -> bytes:
        return encode_frame(encode_response(correlation_id, None, error_code), self.max_frame_size)
