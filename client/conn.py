"""One TCP connection to one broker: pipelined requests matched by correlation id.

``BrokerConnection`` wraps the sans-IO ``proto.connection.ClientConnection``: a single
reader task feeds it the bytes it reads and resolves the waiting requests; writes happen
under a lock, in the order callers acquire it (trio's Lock is fair), so requests go out
in the order they were issued. When the connection ends, for whatever reason, every
pending request fails with ``ConnectionFailedError`` chained to the cause; none hangs.
"""

from __future__ import annotations

import math
from typing import TypeVar

import trio

from client.logs import get_logger
from proto.connection import ClientConnection
from proto.errors import (
    ConnectionFailedError,
    RemoteProtocolError,
    RequestTimedOutError,
    for_code,
)
from proto.messages import Request, Response

__all__ = ["BrokerConnection"]

log = get_logger("client.conn")

R = TypeVar("R", bound=Response)

_RECV_SIZE = 1 << 18


class _Pending:
    """A request waiting for its response; set once by the reader task or by failure."""

    __slots__ = ("cid", "done", "error", "response")

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.done = trio.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None


class BrokerConnection:
    """A connection to ``host:port``; ``request()`` may be called by many tasks at once."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        request_timeout_ms: float = 30_000,
        max_frame_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.request_timeout_ms = request_timeout_ms
        self._proto = ClientConnection(client_id, max_frame_size)
        self._stream: trio.SocketStream | None = None
        self._write_lock = trio.Lock()
        self._pending: dict[int, _Pending] = {}
        self._failure: ConnectionFailedError | None = None
        self._closed = trio.Event()
        self._log = log.bind(host=host, port=port)

    @property
    def connected(self) -> bool:
        return self._stream is not None and self._failure is None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def connect(self, nursery: trio.Nursery) -> None:
        """Open the TCP stream and start the reader task in ``nursery``."""
        try:
            with trio.fail_after(self.request_timeout_ms / 1000):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            raise ConnectionFailedError(f"cannot connect to {self.host}:{self.port}") from exc
        self._stream = stream
        self._log.debug("connected")
        nursery.start_soon(self._read_loop)

    async def request(self, request: Request, *, timeout_ms: float | None = None) -> Response:
        """Send ``request`` and wait for its response.

        Raises the typed BrokerResponseError for a request-level error code,
        ConnectionFailedError if the connection breaks, RequestTimedOutError after
        ``timeout_ms`` (default request_timeout_ms).
        """
        pending = await self._send(request)
        if pending is None:
            raise ValueError(f"{request!r} gets no response: use send_oneway")
        timeout = self.request_timeout_ms if timeout_ms is None else timeout_ms
        with trio.move_on_after(timeout / 1000 if timeout >= 0 else math.inf):
            await pending.done.wait()
        if not pending.done.is_set():
            if self._pending.pop(pending.cid, None) is not None:
                self._proto.forget(pending.cid)
            exc = RequestTimedOutError(
                f"{type(request).__name__} to {self.host}:{self.port} got no response "
                f"within {timeout} ms"
            )
            # As Kafka's NetworkClient: a request timeout disconnects the node (a frozen
            # broker accepts connections and never answers); the next request reconnects.
            self._fail(exc, "request timed out")
            await self._close_stream()
            raise exc
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        return pending.response

    async def send_oneway(self, request: Request) -> None:
        """Write a request that gets no response (produce with acks=0)."""
        await self._send(request)

    async def _send(self, request: Request) -> _Pending | None:
        if self._failure is not None:
            raise ConnectionFailedError(str(self._failure)) from self._failure.__cause__
        stream = self._stream
        if stream is None:
            raise ConnectionFailedError("not connected")
        async with self._write_lock:
            cid, frame = self._proto.send_request(request)
            pending = None
            if self._proto.expects_response(request):
                pending = self._pending[cid] = _Pending(cid)
            try:
                await stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._fail(exc, "write failed")
                raise ConnectionFailedError(f"write to {self.host}:{self.port} failed") from exc
        return pending

    async def _read_loop(self) -> None:
        stream = self._stream
        assert stream is not None
        try:
            while True:
                data = await stream.receive_some(_RECV_SIZE)
                if not data:
                    raise trio.BrokenResourceError("peer closed the connection")
                self._proto.receive_data(data)
                while (event := self._proto.next_event()) is not None:
                    pending = self._pending.pop(event.correlation_id, None)
                    if pending is None:
                        continue  # abandoned after a timeout
                    if event.response is None:
                        pending.error = for_code(event.error_code)(
                            f"request-level error for {type(event.request).__name__}"
                        )
                    else:
                        pending.response = event.response
                    pending.done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError) as exc:
            self._fail(exc, "read failed")
            await self._close_stream()

    def _fail(self, cause: BaseException, why: str) -> None:
        if self._failure is None:
            self._failure = ConnectionFailedError(
                f"connection to {self.host}:{self.port} {why}: {cause}"
            )
            self._failure.__cause__ = cause
            if isinstance(cause, trio.ClosedResourceError):
                self._log.debug("connection_closed")
            else:
                self._log.info("connection_failed", why=why, error=str(cause))
        pending, self._pending = self._pending, {}
        for p in pending.values():
            err = ConnectionFailedError(str(self._failure))
            err.__cause__ = cause
            p.error = err
            p.done.set()

    async def _close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        self._closed.set()

    async def aclose(self) -> None:
        """Close the connection; pending requests fail with ConnectionFailedError."""
        self._fail(trio.ClosedResourceError("connection closed by the client"), "closed")
        await self._close_stream()
