"""Python client round trips and crash recovery against real broker processes."""

from __future__ import annotations

import collections
from pathlib import Path

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from tests.integration.cluster import LocalCluster

N = 100_000


def consume_all(
    bootstrap: str, topic: str, partitions: int, expected: int
) -> dict[int, list[tuple[int, bytes | None, bytes | None]]]:
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: dict[int, list[tuple[int, bytes | None, bytes | None]]] = collections.defaultdict(list)
    count = 0
    empty_polls = 0
    try:
        while count < expected and empty_polls < 20:
            batch = consumer.poll(timeout_ms=500, max_records=50_000)
            if not batch:
                empty_polls += 1
                continue
            empty_polls = 0
            for tp, records in batch.items():
                for r in records:
                    got[tp.partition].append((r.offset, r.key, r.value))
                    count += 1
    finally:
        consumer.close()
    return got


def test_100k_records_over_several_partitions_and_brokers(cluster3: LocalCluster) -> None:
    bootstrap = cluster3.bootstrap
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic("events", 6, 1)])
        [desc] = admin.describe_topics(["events"])
        assert len({p.leader for p in desc.partitions}) == 3  # spread over every broker
    sent: dict[bytes, list[bytes]] = collections.defaultdict(list)
    with Producer(bootstrap_servers=bootstrap, acks=1) as producer:
        futures = []
        for i in range(N):
            key = b"k%d" % (i % 97)
            value = b"v%07d" % i
            sent[key].append(value)
            futures.append(producer.send("events", value=value, key=key))
        producer.flush()
        metas = [f.get(timeout=30) for f in futures]
    assert len({(m.partition, m.offset) for m in metas}) == N

    got = consume_all(bootstrap, "events", 6, N)
    assert sum(len(v) for v in got.values()) == N
    by_key: dict[bytes, list[bytes]] = collections.defaultdict(list)
    for records in got.values():
        offsets = [o for o, _, _ in records]
        assert offsets == list(range(len(offsets)))  # contiguous, no gaps, no duplicates
        for _o, k, v in records:
            assert k is not None and v is not None
            by_key[k].append(v)
    assert by_key == sent  # every record, and per key in send order


def test_kill_9_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    # A short session so the restarted broker's wait for its stale registration is short.
    cluster = LocalCluster(tmp_path, brokers=1, settings={"zookeeper.session.timeout.ms": "4000"})
    cluster.start()
    try:
        _kill_9_scenario(cluster)
    finally:
        cluster.stop()


def _kill_9_scenario(cluster: LocalCluster) -> None:
    bootstrap = cluster.bootstrap
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic("durable", 2, 1)])
    acked: list[tuple[int, int, bytes]] = []
    with Producer(bootstrap_servers=bootstrap, acks=1, linger_ms=1) as producer:
        futures = [
            (producer.send("durable", value=b"r%06d" % i), b"r%06d" % i) for i in range(20_000)
        ]
        producer.flush()
        for fut, value in futures:
            md = fut.get(timeout=30)
            acked.append((md.partition, md.offset, value))

    cluster.kill_broker(1)  # SIGKILL: no clean-shutdown marker, the page cache keeps the data
    restarted = cluster.start_broker(1)
    events = restarted.events()
    started = [e for e in events if e.get("event") == "log_manager_started"]
    assert started and started[-1]["clean"] is False  # no marker: the unclean path ran
    assert {e["partition"] for e in events if e.get("event") == "log_recovered"} == {0, 1}

    got = consume_all(bootstrap, "durable", 2, len(acked))
    stored = {(p, o): v for p, records in got.items() for o, _k, v in records}
    missing = [(p, o) for p, o, v in acked if stored.get((p, o)) != v]
    assert not missing, f"{len(missing)} acknowledged records lost, first {missing[:5]}"
    # And the log still takes writes at the right offsets after recovery.
    with Producer(bootstrap_servers=bootstrap, acks=1) as producer:
        md = producer.send("durable", value=b"after", partition=0).get(timeout=30)
    assert md.offset == max(o for p, o, _ in acked if p == 0) + 1
