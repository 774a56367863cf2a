"""The group coordinator runtime: serves the consumer-group APIs from this broker.

The coordinator of group G is the leader of partition ``partition_for(G, N)`` of
``__consumer_offsets``. ``coordinator.GroupCoordinator`` is the request entry points;
``runtime`` owns the loaded partitions, held requests, appends and timers; ``partition``
one loaded partition (groups and offsets cache, and reading its log); ``appender``
acks=all appends as leader; ``offsets`` and ``admin`` the offset and admin requests;
``retention`` offset expiry; ``topic`` creating the internal topic. The membership logic
itself is sans-IO in ``broker.group``; this package is where trio, the log and the
replica manager meet it. See docs/consumer-groups.md.
"""

from broker.group_coordinator.coordinator import GroupCoordinator

__all__ = ["GroupCoordinator"]
