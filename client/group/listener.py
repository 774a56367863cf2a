"""The rebalance listener (Kafka's ConsumerRebalanceListener) and how its callbacks run.

Callbacks run inside ``poll()`` (and ``unsubscribe()``/``close()``), never concurrently
with the application's own processing, as in Kafka: on_partitions_revoked before a
partition goes (its positions are committed first when auto commit is on, so the callback
can commit anything else it tracks), on_partitions_assigned after the rebalance with the
partitions added (before their positions are looked up, so a seek there wins), and
on_partitions_lost when the member was kicked out: the partitions may already belong to
another member, and a commit would fail.

For ``AsyncConsumer`` a callback may be a plain function or a coroutine function. The
blocking ``Consumer`` runs each callback in a worker thread (``trio.to_thread``), so a
callback can call the consumer's blocking methods (``commit()``, ``position()``): they
re-enter the consumer's trio loop, which stays free meanwhile.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from client.errors import ConfigurationError
from client.logs import get_logger
from client.types import TopicPartition

__all__ = [
    "CallbackRunner",
    "ConsumerRebalanceListener",
    "check_listener",
    "invoke_listener",
    "run_in_thread",
    "run_inline",
]

log = get_logger("client.group.listener")

CallbackRunner = Callable[..., Awaitable[Any]]
_CALLBACKS = ("on_partitions_revoked", "on_partitions_assigned", "on_partitions_lost")


class ConsumerRebalanceListener:
    """Subclass and override what you need; every method gets a set of TopicPartition."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> Any:
        """Called before the partitions are taken away (commit your progress here)."""

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> Any:
        """Called after a rebalance with the partitions newly added (maybe none under the
        cooperative protocol)."""

    def on_partitions_lost(self, lost: set[TopicPartition]) -> Any:
        """Called when the member was kicked out of the group: the partitions already
        belong to someone else. Kafka's default: the same as a revocation."""
        return self.on_partitions_revoked(lost)


def check_listener(listener: object, *, blocking: bool) -> None:
    """A listener needs at least one of the callbacks; a blocking consumer cannot run
    coroutine callbacks (it has no event loop of the caller's to run them in)."""
    found = [getattr(listener, name, None) for name in _CALLBACKS]
    if not any(callable(fn) for fn in found):
        raise ConfigurationError(f"listener {listener!r} has none of {', '.join(_CALLBACKS)}")
    if blocking and any(inspect.iscoroutinefunction(fn) for fn in found):
        raise ConfigurationError(
            "the blocking Consumer runs listener callbacks in a thread: they must be "
            "plain functions (use AsyncConsumer for async callbacks)"
        )


async def run_inline(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def run_in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def invoke_listener(
    listener: object | None,
    name: str,
    partitions: set[TopicPartition],
    runner: CallbackRunner,
) -> Exception | None:
    """Run one callback; an exception it raises is returned (the rebalance completes
    anyway and poll() raises the first such error afterwards, as Kafka does)."""
    if listener is None:
        return None
    fn = getattr(listener, name, None)
    if fn is None and name == "on_partitions_lost":
        fn = getattr(listener, "on_partitions_revoked", None)
    if fn is None:
        return None
    try:
        await runner(fn, set(partitions))
    except Exception as exc:
        log.error("rebalance_listener_failed", callback=name, error=repr(exc))
        return exc
    return None
