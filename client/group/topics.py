"""The topic metadata a group member watches: partition counts for the leader's
assignment, and the topics a subscribed pattern matches.

As in Kafka, the leader remembers the partition count of every topic it assigned; when a
metadata refresh shows a different count (partitions added, topic created or deleted) it
asks for a rebalance. A pattern is matched against all non-internal topics before each
JoinGroup and again every ``metadata_max_age_ms``; a different match means a rebalance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from client.cluster import Cluster
from client.errors import BrokerResponseError, ClientError
from client.group.subscription import SubscriptionState
from client.logs import get_logger

__all__ = ["TopicWatch"]

log = get_logger("client.group.topics")


class TopicWatch:
    def __init__(
        self,
        cluster: Cluster,
        subscription: SubscriptionState,
        *,
        allow_auto_create_topics: bool,
        on_change: Callable[[str], None],
    ) -> None:
        self._cluster = cluster
        self._subscription = subscription
        self._allow_auto_create = allow_auto_create_topics
        self._on_change = on_change  # request a rejoin, with the reason
        self._assigned: dict[str, int] | None = None  # the leader's snapshot
        self._pattern_checked = -math.inf
        cluster.listeners.append(self._metadata_updated)

    async def partition_counts(self, topics: set[str]) -> dict[str, int]:
        """Current partition counts (topics that do not exist are left out); remembered
        as the snapshot a later metadata update is compared with."""
        cluster = self._cluster
        if topics:
            if self._allow_auto_create:
                await cluster.refresh(topics)
            else:  # a Metadata request naming a missing topic may create it: ask for all
                await cluster.fetch_metadata(None)
                cluster.wanted.update(t for t in topics if t in cluster.partitions)
        counts = {t: len(cluster.partitions[t]) for t in topics if t in cluster.partitions}
        self._assigned = {t: counts.get(t, 0) for t in topics}
        return counts

    def forget(self) -> None:
        """Not the leader any more (or not a member): stop comparing."""
        self._assigned = None

    def _metadata_updated(self) -> None:
        assigned = self._assigned
        if assigned is None:
            return
        for topic, count in assigned.items():
            parts = self._cluster.partitions.get(topic)
            now = len(parts) if parts is not None else 0
            if now != count:
                self._assigned = None
                self._on_change(f"partitions of {topic!r} changed from {count} to {now}")
                return

    def pattern_stale(self, max_age_s: float) -> bool:
        return trio.current_time() - self._pattern_checked >= max_age_s

    def pattern_forget(self) -> None:
        self._pattern_checked = -math.inf

    async def match_pattern(self) -> None:
        """Match the pattern against every non-internal topic; a change asks for a rejoin."""
        self._pattern_checked = trio.current_time()
        try:
            md = await self._cluster.fetch_metadata(None)
        except (ClientError, BrokerResponseError) as exc:
            log.info("pattern_metadata_failed", error=str(exc))
            return
        live = [(t.name, t.is_internal) for t in md.topics if t.error_code == 0]
        if self._subscription.match(live):
            topics = sorted(self._subscription.topics)
            log.info("pattern_matched", topics=topics)
            self._cluster.wanted.update(topics)
            self._on_change(f"the pattern now matches {topics}")
