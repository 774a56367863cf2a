"""Which local logs a broker keeps, deletes, or leaves alone as strays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.log import LogManager
from broker.log.config import LogConfig
from broker.metadata_cache import ClusterView, PartitionInfo, TopicInfo
from broker.partition_logs import open_partition_log, read_topic_id, reconcile_logs
from proto.batch import BatchBuilder

CONFIG = LogConfig()


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[LogManager]:
    manager = LogManager(tmp_path, CONFIG, now_ms=lambda: 0)
    manager.startup()
    yield manager
    manager.shutdown()


def topic(name: str, topic_id: str, replicas: dict[int, list[int]]) -> TopicInfo:
    parts = {p: PartitionInfo(name, p, r, None) for p, r in replicas.items()}
    return TopicInfo(name, topic_id, parts, {})


def view(*topics: TopicInfo) -> ClusterView:
    return ClusterView("c", {}, {t.name: t for t in topics})


def one_record() -> bytes:
    b = BatchBuilder()
    b.append(b"v")
    return b.build()


def test_a_recreated_topic_does_not_inherit_the_old_data(logs: LogManager) -> None:
    old = open_partition_log(logs, topic("t", "old-id", {0: [1]}), 0, CONFIG)
    old.append(one_record())
    assert read_topic_id(old.dir) == "old-id"
    new = open_partition_log(logs, topic("t", "new-id", {0: [1]}), 0, CONFIG)
    assert new.log_end_offset == 0
    assert read_topic_id(new.dir) == "new-id"


def test_same_incarnation_keeps_its_data(logs: LogManager) -> None:
    t = topic("t", "id-1", {0: [1]})
    open_partition_log(logs, t, 0, CONFIG).append(one_record())
    assert open_partition_log(logs, t, 0, CONFIG).log_end_offset == 1


def test_reconcile_creates_assigned_deletes_deleted_and_keeps_strays(logs: LogManager) -> None:
    mine = topic("mine", "a", {0: [1], 1: [2]})
    gone = topic("gone", "b", {0: [1]})
    stray = topic("stray", "c", {0: [1]})
    open_partition_log(logs, stray, 0, CONFIG)  # on disk, unknown to the first view
    strays: set[tuple[str, int]] = set()
    first = view(mine, gone)
    reconcile_logs(logs, 1, None, first, {"mine": CONFIG, "gone": CONFIG}, strays)
    assert {(x.topic, x.partition) for x in logs.all_logs()} == {
        ("mine", 0),  # assigned to broker 1
        ("gone", 0),
        ("stray", 0),  # unknown: kept, reported
    }
    assert strays == {("stray", 0)}
    second = view(mine)  # "gone" was deleted while we watched
    reconcile_logs(logs, 1, first, second, {"mine": CONFIG}, strays)
    assert {(x.topic, x.partition) for x in logs.all_logs()} == {("mine", 0), ("stray", 0)}
