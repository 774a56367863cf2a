"""Creating the internal topic ``__consumer_offsets`` the first time a group needs it.

Kafka creates it on the first FindCoordinator for a group: ``offsets.topic.num.partitions``
partitions, replication factor ``min(offsets.topic.replication.factor, live brokers)``
(Kafka refuses until enough brokers are up; here, as the issue asks, a smaller cluster gets
a smaller factor), ``cleanup.policy=compact`` (the latest record per key is the state) and
``segment.bytes`` from ``offsets.topic.segment.bytes`` (small segments so the cleaner,
which never touches the active segment, gets to work). The topic is written by
broker/topic_admin.py like any other; the client retries meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from broker.config import BrokerConfig
from broker.group.offsets_records import OFFSETS_TOPIC
from broker.topic_admin import TopicAdmin
from proto import messages as m
from proto.errors import NONE, TopicAlreadyExistsError, error_name

__all__ = ["OffsetsTopicCreator", "offsets_topic_configs"]

log = structlog.get_logger("broker.group_coordinator")


def offsets_topic_configs(config: BrokerConfig) -> dict[str, str]:
    return {
        "cleanup.policy": "compact",
        "segment.bytes": str(config.offsets_topic_segment_bytes),
    }


class OffsetsTopicCreator:
    """One creation at a time on this broker; another broker's concurrent creation shows
    up as TOPIC_ALREADY_EXISTS, which is success."""

    def __init__(self, config: BrokerConfig, topic_admin: Callable[[], TopicAdmin]) -> None:
        self._config = config
        self._topic_admin = topic_admin
        self._lock = trio.Lock()

    async def ensure(self) -> None:
        async with self._lock:
            admin = self._topic_admin()
            view = admin.cache.view
            if OFFSETS_TOPIC in view.topics:
                return
            rf = min(self._config.offsets_topic_replication_factor, len(view.brokers))
            if rf < 1:
                log.warning("offsets_topic_not_created", reason="no live brokers in view")
                return
            topic = m.CreatableTopic(
                OFFSETS_TOPIC,
                self._config.offsets_topic_num_partitions,
                rf,
                offsets_topic_configs(self._config),
            )
            timeout_ms = self._config.offsets_commit_timeout_ms
            resp = await admin.create_topics(m.CreateTopicsRequest([topic], timeout_ms))
            code = resp.topics[0].error_code
            if code in (NONE, TopicAlreadyExistsError.code):
                if code == NONE:
                    log.info(
                        "offsets_topic_created",
                        partitions=self._config.offsets_topic_num_partitions,
                        replication_factor=rf,
                    )
                return
            log.warning(
                "offsets_topic_not_created",
                error=error_name(code),
                message=resp.topics[0].error_message,
            )
