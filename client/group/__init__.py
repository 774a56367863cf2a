"""The consumer side of consumer groups (Kafka's ConsumerCoordinator), for AsyncConsumer.

Sans-IO: ``membership`` (the member's state, generation and rebalance decisions),
``responses`` (what each error code makes it do), ``timers`` (heartbeat, session and
poll clocks), ``subscription`` (topics, pattern or manual assignment). The trio runtime:
``discovery`` (FindCoordinator and the coordinator's connections), ``offsets`` (commit
and committed-offset lookup) and ``coordinator`` (join, sync, heartbeats, leave).
``listener`` holds ConsumerRebalanceListener.

Only the sans-IO parts and the listener are imported here, so that ``client.config`` can
use ``membership`` without importing the runtime.
"""

from client.group.listener import ConsumerRebalanceListener

__all__ = ["ConsumerRebalanceListener"]
