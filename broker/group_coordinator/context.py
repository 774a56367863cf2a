"""Who sent the request being handled: Kafka's client id and client host for JoinGroup.

The connection layer (``Broker.handle_connection``) sets ``CLIENT_HOST`` once per
connection and ``CLIENT_ID`` per request (it is in the request header, not the body); trio
gives each connection task its own context, so handlers read them without every request
signature growing parameters (as ``broker.listeners.CURRENT_LISTENER``).
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["CLIENT_HOST", "CLIENT_ID", "client_host", "client_id"]

CLIENT_HOST: ContextVar[str] = ContextVar("minibroker_client_host")
CLIENT_ID: ContextVar[str | None] = ContextVar("minibroker_client_id")


def client_host() -> str:
    """Kafka's form, ``/127.0.0.1``; empty outside a connection (in-process tests)."""
    return CLIENT_HOST.get("")


def client_id() -> str:
    return CLIENT_ID.get(None) or ""
