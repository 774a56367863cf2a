"""A follower killed (SIGKILL) in the middle of an acks=all stream: it leaves the ISR (the
controller drops it once its coordinator session ends, about a disconnect grace after the
kill, or the leader does after ``replica.lag.time.max.ms``, whichever is first) and the
leader keeps committing with min.insync.replicas 2; every acknowledged record is readable
and the surviving replicas hold identical logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from tests.integration.cluster import LocalCluster
from tests.integration.test_replication import log_batches

TOPIC = "faulty"
N = 4_000


@pytest.fixture
def cluster3_fast_lag(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, brokers=3, settings={"replica.lag.time.max.ms": "1500"}).start()
    try:
        yield c
    finally:
        c.stop()


def test_acked_records_survive_a_follower_crash(cluster3_fast_lag: LocalCluster) -> None:
    cluster = cluster3_fast_lag
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 1, 3, {"min.insync.replicas": "2"})])
        [desc] = admin.describe_topics([TOPIC])
        leader = desc.partitions[0].leader
    victim = next(b for b in (1, 2, 3) if b != leader)
    survivor = next(b for b in (1, 2, 3) if b not in (leader, victim))
    acked: list[bytes] = []
    with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        for half in (0, 1):
            futures = [
                (value, producer.send(TOPIC, value=value))
                for value in (b"v%06d" % i for i in range(half * N // 2, (half + 1) * N // 2))
            ]
            producer.flush()
            acked += [value for value, f in futures if f.get(timeout=60) is not None]
            if half == 0:
                cluster.kill_broker(victim)
    assert len(acked) == N

    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got: list[bytes] = []
    empty_polls = 0
    try:
        while len(got) < N and empty_polls < 20:
            batch = consumer.poll(timeout_ms=500, max_records=50_000)
            empty_polls = 0 if batch else empty_polls + 1
            got += [r.value for records in batch.values() for r in records if r.value]
    finally:
        consumer.close()
    assert got == acked

    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        [desc] = admin.describe_topics([TOPIC])
    assert desc.partitions[0].leader == leader
    assert sorted(desc.partitions[0].isr) == sorted([leader, survivor])

    cluster.stop()
    leader_log = log_batches(cluster.root / f"broker-{leader}", TOPIC, 0)
    assert log_batches(cluster.root / f"broker-{survivor}", TOPIC, 0) == leader_log
