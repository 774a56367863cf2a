"""Replication across real broker processes: RF 3, acks=all, then the logs compared."""

from __future__ import annotations

import os
from pathlib import Path

from broker.log import LogManager
from broker.log.config import LogConfig
from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from proto.batch import iter_batches
from tests.integration.cluster import LocalCluster

N = 20_000
TOPIC = "replicated"
PARTITIONS = 3


def log_batches(data_dir: Path, topic: str, partition: int) -> list[bytes]:
    """Every batch of one partition in a stopped broker's data dir, as raw bytes."""
    logs = LogManager(data_dir, LogConfig())
    logs.startup()
    try:
        plog = logs.get_log(topic, partition)
        assert plog is not None, f"{data_dir} has no {topic}-{partition}"
        out: list[bytes] = []
        offset = plog.log_start_offset
        while offset < plog.log_end_offset:
            result = plog.read(offset, 1 << 20)
            assert result.records is not None
            fr = result.records
            raw = os.pread(fr.fd, fr.size, fr.position)
            for pos, header in iter_batches(raw):
                out.append(raw[pos : pos + header.size])
                offset = header.next_offset
        return out
    finally:
        logs.shutdown()


def test_acks_all_round_trip_and_identical_replicas(cluster3: LocalCluster) -> None:
    bootstrap = cluster3.bootstrap
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])
        [desc] = admin.describe_topics([TOPIC])
        assert all(sorted(p.isr) == [1, 2, 3] for p in desc.partitions)
    with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
        futures = [producer.send(TOPIC, value=b"v%06d" % i, key=b"k%d" % i) for i in range(N)]
        producer.flush()
        metas = [f.get(timeout=60) for f in futures]
    assert len({(md.partition, md.offset) for md in metas}) == N

    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: set[bytes] = set()
    empty_polls = 0
    try:
        while len(got) < N and empty_polls < 20:
            batch = consumer.poll(timeout_ms=500, max_records=50_000)
            empty_polls = 0 if batch else empty_polls + 1
            for records in batch.values():
                got.update(r.value for r in records if r.value is not None)
    finally:
        consumer.close()
    assert got == {b"v%06d" % i for i in range(N)}

    cluster3.stop()  # clean shutdowns: every log closed and checkpointed
    for p in range(PARTITIONS):
        per_broker = [log_batches(cluster3.root / f"broker-{b}", TOPIC, p) for b in (1, 2, 3)]
        assert sum(len(batch) for batch in per_broker[0]) > 0
        assert per_broker[0] == per_broker[1] == per_broker[2], f"partition {p} diverged"
