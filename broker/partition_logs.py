"""Which local logs a broker keeps: the partitions assigned to it, of the topic incarnation
the coordinator knows.

Each partition directory holds ``partition.metadata`` with the topic id (Kafka's KIP-516),
so a topic deleted while this broker was down and then created again under the same name
is recognised: the old directory belongs to a different topic id and is deleted instead of
being served as the new topic's data. A directory whose topic the coordinator does not know
at all is *not* deleted on sight (the coordinator's data may have been lost; deleting
would lose acknowledged records): it is reported as stray and left for an operator. Only a
topic seen deleted while this broker watched is deleted here.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from broker.log import Log, LogManager
from broker.log.config import LogConfig
from broker.metadata_cache import ClusterView, TopicInfo

log = structlog.get_logger("broker.partitions")

METADATA_FILE = "partition.metadata"


def read_topic_id(partition_dir: Path) -> str | None:
    try:
        text = (partition_dir / METADATA_FILE).read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "topic_id":
            return value.strip()
    return None


def write_topic_id(partition_dir: Path, topic_id: str) -> None:
    tmp = partition_dir / (METADATA_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(f"version: 0\ntopic_id: {topic_id}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, partition_dir / METADATA_FILE)


def open_partition_log(
    logs: LogManager, topic: TopicInfo, partition: int, config: LogConfig
) -> Log:
    """The local log of ``topic``'s ``partition``, created (or replaced, when the directory
    holds an older incarnation of the topic) as needed."""
    existing = logs.get_log(topic.name, partition)
    if existing is not None:
        found = read_topic_id(existing.dir)
        if found is None:
            write_topic_id(existing.dir, topic.topic_id)
        elif found != topic.topic_id:
            log.warning(
                "log_of_older_topic_deleted",
                topic=topic.name,
                partition=partition,
                old_topic_id=found,
                topic_id=topic.topic_id,
            )
            logs.delete_log(topic.name, partition)
            existing = None
        elif existing.config != config:
            existing.update_config(config)
    if existing is None:
        existing = logs.get_or_create_log(topic.name, partition, config)
        write_topic_id(existing.dir, topic.topic_id)
    return existing


def reconcile_logs(
    logs: LogManager,
    broker_id: int,
    previous: ClusterView | None,
    view: ClusterView,
    config_of: dict[str, LogConfig],
    stray_reported: set[tuple[str, int]],
) -> None:
    """Open the logs of partitions assigned to ``broker_id``; delete those of topics (or
    partitions) that ``previous`` had and ``view`` no longer has; report strays once."""
    for topic in view.topics.values():
        for p, info in topic.partitions.items():
            if broker_id in info.replicas:
                open_partition_log(logs, topic, p, config_of[topic.name])
    for plog in logs.all_logs():
        key = (plog.topic, plog.partition)
        now = view.topics.get(plog.topic)
        if now is not None and plog.partition in now.partitions:
            continue
        before = previous.topics.get(plog.topic) if previous is not None else None
        if before is not None and plog.partition in before.partitions:
            log.info("log_deleted", topic=plog.topic, partition=plog.partition)
            logs.delete_log(plog.topic, plog.partition)
        elif key not in stray_reported:
            stray_reported.add(key)
            log.warning(
                "stray_log_kept", topic=plog.topic, partition=plog.partition, dir=str(plog.dir)
            )
