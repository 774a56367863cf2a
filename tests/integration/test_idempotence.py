"""The idempotent producer across real processes: the partition leader is killed (SIGKILL)
while acks=all requests are in flight; the producer retries them on the new leader, which
knows the batches it copied from the old one, so every record is written exactly once and
in the order it was sent. The second test makes the interesting case certain: the killed
leader had written the batch and a follower had copied it, only the answer never came."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from client.types import RecordMetadata
from tests.integration.cluster import LocalCluster

TOPIC = "exactly-once"
N = 20_000


@pytest.fixture
def cluster3_short_sessions(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, brokers=3, settings={"zookeeper.session.timeout.ms": "2000"})
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_retries_across_a_leader_kill_write_each_record_once(
    cluster3_short_sessions: LocalCluster,
) -> None:
    cluster = cluster3_short_sessions
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 1, 3, {"min.insync.replicas": "2"})])
        [desc] = admin.describe_topics([TOPIC])
        leader = desc.partitions[0].leader
    sent = [b"v%06d" % i for i in range(N)]
    # Small batches: many requests, each several batches, in flight when the leader dies.
    with Producer(
        bootstrap_servers=cluster.bootstrap, acks="all", batch_size=2048, linger_ms=1
    ) as producer:
        assert producer.config.enable_idempotence  # the default with acks=all
        futures = [producer.send(TOPIC, value=v) for v in sent]
        # Killed as soon as a batch early in the stream is acknowledged: the next request
        # is on its way, maybe appended and copied to the followers, never answered.
        futures[N // 10].get(timeout=60)
        cluster.kill_broker(leader)
        producer.flush()
        metas: list[RecordMetadata] = [f.get(timeout=120) for f in futures]

    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got: list[tuple[int, bytes | None]] = []
    empty_polls = 0
    try:
        while len(got) < N and empty_polls < 20:
            batch = consumer.poll(timeout_ms=500, max_records=50_000)
            empty_polls = 0 if batch else empty_polls + 1
            got += [(r.offset, r.value) for records in batch.values() for r in records]
        extra = consumer.poll(timeout_ms=500)  # anything beyond N would be a duplicate
        got += [(r.offset, r.value) for records in extra.values() for r in records]
    finally:
        consumer.close()
    assert [v for _, v in got] == sent  # every record once, in send order
    # Each acknowledgement names the offset the record really has, retried or not.
    assert [md.offset for md in metas] == [offset for offset, _ in got]
    duplicates = sum(len(p.events("produce_duplicate")) for p in cluster.brokers.values())
    print(f"retried batches the new leader answered as duplicates: {duplicates}")


def log_size(cluster: LocalCluster, broker_id: int) -> int:
    return (cluster.root / f"broker-{broker_id}" / f"{TOPIC}-0" / f"{0:020d}.log").stat().st_size


def test_a_batch_the_dead_leader_wrote_is_answered_not_written_again(
    cluster3_short_sessions: LocalCluster,
) -> None:
    cluster = cluster3_short_sessions
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 1, 3)])
        [desc] = admin.describe_topics([TOPIC])
        leader = desc.partitions[0].leader
        f1, f2 = [b for b in desc.partitions[0].replicas if b != leader]
    # Bootstrapped from f1 only: the client asks its first broker for metadata, and a
    # frozen broker accepts a connection but never answers (request_timeout_ms each time).
    f1_address = cluster.bootstrap.split(",")[f1 - 1]
    with Producer(bootstrap_servers=f1_address, acks="all", linger_ms=0) as producer:
        assert producer.send(TOPIC, b"before").get(timeout=60).offset == 0
        size = log_size(cluster, f1)
        # f2 frozen (still in the ISR): the leader cannot commit, so "retried" is written
        # by the leader and copied by f1 but never acknowledged.
        frozen = cluster.brokers[f2].popen.pid
        os.kill(frozen, signal.SIGSTOP)
        try:
            retried = producer.send(TOPIC, b"retried")
            deadline = time.monotonic() + 30
            while log_size(cluster, f1) == size:  # f1 copied the batch
                assert time.monotonic() < deadline, "f1 never copied the batch"
                time.sleep(0.005)
            assert not retried.is_done
            cluster.kill_broker(leader)
            # Both sessions expire; f1 is elected and answers the retry from the producer
            # state it rebuilt while copying: the original offset, nothing appended.
            md = retried.get(timeout=60)
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert md.offset == 1
        assert producer.send(TOPIC, b"after").get(timeout=60).offset == 2
    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got: list[bytes | None] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            got += [r.value for records in batch.values() for r in records]
        got += [r.value for records in consumer.poll(timeout_ms=500).values() for r in records]
    finally:
        consumer.close()
    assert got == [b"before", b"retried", b"after"]
    assert len(cluster.brokers[f1].events("produce_duplicate")) >= 1
