"""The partition leader killed (SIGKILL) in the middle of an acks=all stream: the controller
elects an ISR member once the dead broker's session expires, the producer carries on, and
the history checks clean: no lost write, no inconsistent offset, and no duplicate either,
because acks=all makes the producer idempotent (a retried send the old leader had written
is answered by the new leader with its original offset)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from client.errors import ClientError
from proto.errors import MinibrokerError
from tests.checkers.queue import AnomalyKind, QueueHistory, check
from tests.integration.cluster import LocalCluster

TOPIC = "failover"
N = 600


@pytest.fixture
def cluster3_short_sessions(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, brokers=3, settings={"zookeeper.session.timeout.ms": "2000"})
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_leader_kill_loses_no_acknowledged_write(cluster3_short_sessions: LocalCluster) -> None:
    cluster = cluster3_short_sessions
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 1, 3, {"min.insync.replicas": "2"})])
        [desc] = admin.describe_topics([TOPIC])
        leader = desc.partitions[0].leader
    history = QueueHistory(time.monotonic)
    killed_at: float | None = None
    failover_s: float | None = None
    with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        assert producer.config.enable_idempotence
        for i in range(N):
            if i == N // 2:
                cluster.kill_broker(leader)
                killed_at = time.monotonic()
            value = b"v%06d" % i
            handle = history.send(0, TOPIC, None, value)
            try:
                md = producer.send(TOPIC, value=value).get(timeout=60)
            except (ClientError, MinibrokerError):  # the outcome is unknown: recorded so
                history.send_unknown(handle)
                continue
            history.send_ok(handle, partition=md.partition, offset=md.offset)
            if killed_at is not None and failover_s is None:
                failover_s = time.monotonic() - killed_at
    assert failover_s is not None
    print(f"failover (kill -9 of the leader -> next acknowledged write): {failover_s:.3f} s")

    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    invoked = history.clock()
    got: list[object] = []
    empty_polls = 0
    try:
        while len(got) < N and empty_polls < 10:
            batch = consumer.poll(timeout_ms=500, max_records=50_000)
            empty_polls = 0 if batch else empty_polls + 1
            got += [r for records in batch.values() for r in records]
    finally:
        consumer.close()
    history.final_read(1, invoked, {(TOPIC, 0): got})
    report = check(history.history())
    assert report.workload_error_count == 0, report.workload_errors
    bad = {k: n for k, n in report.counts.items() if n}
    assert not bad, report.examples
    assert report.counts[AnomalyKind.DUPLICATE] == 0
    assert len(got) >= N // 2
