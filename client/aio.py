"""The async (trio) clients: ``from client.aio import AsyncProducer, AsyncConsumer, AsyncAdmin``."""

from client.admin import AsyncAdmin
from client.consumer import AsyncConsumer
from client.producer import AsyncProducer

__all__ = ["AsyncAdmin", "AsyncConsumer", "AsyncProducer"]
