"""The broker's side of controlled shutdown (Kafka's ``KafkaServer.controlledShutdown``).

Before a clean stop closes its coordinator session, a broker asks the controller to move
every leadership it holds: a ``ControlledShutdownRequest`` (broker id, broker epoch = the
czxid of its registration) over a broker connection, or a direct call when it is the
controller itself. The answer lists the replicated partitions it still leads (no other
ISR member could take them yet); it then retries, ``controlled.shutdown.max.retries``
attempts in all, ``controlled.shutdown.retry.backoff.ms`` apart, and shuts down anyway.
A failed attempt (no controller, controller moving, connection refused, timeout) is
retried the same way. Nothing here stops the broker: the caller continues with the
normal shutdown whatever the outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
import trio

from proto import messages as m
from proto.connection import ClientConnection
from proto.errors import (
    BrokerNotAvailableError,
    ConnectionFailedError,
    MinibrokerError,
    NotControllerError,
    RequestTimedOutError,
    for_code,
    raise_for_code,
)

if TYPE_CHECKING:
    from broker.controller import Controller
    from broker.metadata_cache import MetadataCache

log = structlog.get_logger("broker.controlled_shutdown")

RECEIVE_SIZE = 64 * 1024
Key = tuple[str, int]
Attempt = Callable[[], Awaitable[list[Key]]]


async def call_broker(
    host: str, port: int, request: m.Request, timeout_s: float, client_id: str
) -> m.Response:
    """One request on a fresh connection; RequestTimedOutError after ``timeout_s``,
    ConnectionFailedError when the peer is unreachable or closes."""
    with trio.move_on_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ConnectionFailedError(f"{host}:{port}: {exc}") from exc
        async with stream:
            conn = ClientConnection(client_id)
            _cid, frame = conn.send_request(request)
            try:
                await stream.send_all(frame)
                while (event := conn.next_event()) is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        raise ConnectionFailedError(f"{host}:{port} closed the connection")
                    conn.receive_data(data)
            except (OSError, trio.BrokenResourceError) as exc:
                raise ConnectionFailedError(f"{host}:{port}: {exc}") from exc
        if event.response is None:
            raise for_code(event.error_code)(f"{type(request).__name__} refused")
        return event.response
    raise RequestTimedOutError(f"{host}:{port} did not answer within {timeout_s} s")


async def ask_controller(
    broker_id: int,
    broker_epoch: int,
    cache: MetadataCache,
    local: Controller | None,
    timeout_s: float,
) -> list[Key]:
    """One attempt: the partitions the controller says this broker still leads.
    RequestTimedOutError when it takes longer than ``timeout_s`` in all (the coordinator
    or the controller unreachable)."""
    with trio.move_on_after(timeout_s):
        return await _ask_controller(broker_id, broker_epoch, cache, local, timeout_s)
    raise RequestTimedOutError(f"no controlled shutdown answer within {timeout_s} s")


async def _ask_controller(
    broker_id: int,
    broker_epoch: int,
    cache: MetadataCache,
    local: Controller | None,
    timeout_s: float,
) -> list[Key]:
    view = await cache.refresh_now()
    controller_id = view.controller_id
    if controller_id < 0:
        raise NotControllerError("no controller is elected")
    if controller_id == broker_id and local is not None:
        return await local.controlled_shutdown(broker_id, broker_epoch)
    reg = view.brokers.get(controller_id)
    if reg is None:
        raise BrokerNotAvailableError(f"controller {controller_id} is not registered")
    response = await call_broker(
        reg.host,
        reg.port,
        m.ControlledShutdownRequest(broker_id, broker_epoch),
        timeout_s,
        f"broker-{broker_id}-controlled-shutdown",
    )
    assert isinstance(response, m.ControlledShutdownResponse)
    raise_for_code(response.error_code, response.error_message)
    return [(r.topic, r.partition) for r in response.remaining_partitions]


async def shut_down_controlled(
    attempt: Attempt, max_retries: int, backoff_s: float, broker_id: int
) -> bool:
    """Run ``attempt`` until nothing remains, at most ``max_retries`` times (Kafka counts
    attempts, so 0 skips it), ``backoff_s`` apart. True if every leadership moved."""
    blog = log.bind(broker_id=broker_id)
    for n in range(1, max_retries + 1):
        try:
            remaining = await attempt()
        except MinibrokerError as exc:
            blog.warning("controlled_shutdown_attempt_failed", attempt=n, error=str(exc))
        else:
            if not remaining:
                blog.info("controlled_shutdown_succeeded", attempt=n)
                return True
            blog.warning(
                "controlled_shutdown_incomplete",
                attempt=n,
                remaining=[f"{t}-{p}" for t, p in remaining],
            )
        if n < max_retries:
            await trio.sleep(backoff_s)
    blog.warning("controlled_shutdown_gave_up", attempts=max_retries)
    return False
