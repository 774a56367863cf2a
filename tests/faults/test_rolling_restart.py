"""Brokers restarted one by one under acks=all load, and min.insync.replicas with two down.

A rolling restart is the fault every operator injects on purpose: each broker is stopped
cleanly (SIGTERM) and started again, and the next one only once the ISR is full again.
With RF 3 and min.insync.replicas 2 no acknowledged write may be lost and producers must
keep committing throughout.
"""

from __future__ import annotations

import time

import pytest

from client import Consumer, Producer, TopicPartition
from client.errors import NotEnoughReplicasError
from tests.checkers.queue import QueueHistory
from tests.faults.known_bugs import fail_on_known_bugs, wait_isr_full
from tests.faults.workload import (
    PRODUCER_CONFIG,
    PollerWorker,
    ProducerWorker,
    assert_replicas_identical,
    check_history,
    create_topic,
    final_read,
)
from tests.integration.cluster import LocalCluster

TOPIC = "rolling"


def test_rolling_restart_under_acks_all_load(ensemble_cluster: LocalCluster) -> None:
    cluster = ensemble_cluster
    create_topic(cluster, TOPIC)
    history = QueueHistory(time.monotonic)
    producer = ProducerWorker(history, cluster.bootstrap, TOPIC, process=0).start()
    poller = PollerWorker(history, cluster.bootstrap, TOPIC, 1, process=1).start()
    gaps: dict[int, float] = {}
    try:
        producer.wait_acked(300)
        for broker_id in sorted(cluster.brokers):
            started = time.monotonic()
            assert cluster.stop_broker(broker_id) == 0  # a clean shutdown
            cluster.start_broker(broker_id)
            wait_isr_full(cluster, TOPIC)
            producer.wait_acked(300)
            gaps[broker_id] = producer.longest_gap(started, time.monotonic())
    finally:
        producer.stop()
        poller.stop()
    final_read(cluster, history, TOPIC, 1, process=2)
    fail_on_known_bugs(cluster)
    report = check_history(history)
    print(
        "rolling restart, longest time without an acknowledgement per restarted broker: "
        + ", ".join(f"{b}: {gap:.2f} s" for b, gap in gaps.items())
        + f"; {report.stats}"
    )
    assert report.stats.acked >= 1200
    cluster.stop()
    assert assert_replicas_identical(cluster, TOPIC, 1) > 0


def test_acks_all_with_two_replicas_down_is_refused_and_writes_nothing(
    ensemble_cluster: LocalCluster,
) -> None:
    cluster = ensemble_cluster
    [leader] = create_topic(cluster, TOPIC)
    tp = TopicPartition(TOPIC, 0)
    config = {**PRODUCER_CONFIG, "retries": 0}  # see the broker's answer, not a retry's
    with Producer(bootstrap_servers=cluster.bootstrap, **config) as producer:
        for i in range(100):
            producer.send(TOPIC, value=b"ok-%03d" % i)
        producer.flush()
        followers = [b for b in cluster.brokers if b != leader]
        for b in followers:
            cluster.kill_broker(b)
        cluster.wait_partition_state(TOPIC, 0, lambda s: s.isr == [leader], what="ISR [leader]")
        with Consumer(bootstrap_servers=cluster.bootstrap) as consumer:
            assert consumer.end_offsets([tp]) == {tp: 100}
            refused = producer.send(TOPIC, value=b"refused")
            with pytest.raises(NotEnoughReplicasError):
                refused.get(timeout=30)
            # The ISR is the leader alone, so the end offset is its log end: unmoved.
            assert consumer.end_offsets([tp]) == {tp: 100}
    # Nothing was written: the next append takes the offset the refused one would have.
    with Producer(bootstrap_servers=cluster.bootstrap, acks=1) as acks1:
        assert acks1.send(TOPIC, value=b"next").get(timeout=30).offset == 100
