"""The leader-fault scenario shared by the pause and partition tests.

``leader_fault`` runs one fault against a partition's leader under acks=all load with a
recorded history and checks everything the fault tests promise: a new leader in a higher
epoch from the ISR, the old one following again, a clean history (only DUPLICATE
tolerated) and byte-identical replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.zk_layout import PartitionState
from tests.checkers.queue import QueueHistory, QueueReport
from tests.faults.known_bugs import fail_on_known_bugs, wait_isr_full
from tests.faults.workload import (
    REPLICAS,
    PollerWorker,
    ProducerWorker,
    assert_replicas_identical,
    check_history,
    final_read,
)
from tests.integration.cluster import LocalCluster


@dataclass(frozen=True)
class LeaderFaultOutcome:
    leader: int
    moved: PartitionState  # the state once another broker led
    back: PartitionState  # the state once the ISR was full again
    unavailable_s: float  # the longest time without an acknowledgement after the fault
    report: QueueReport
    stale: ProducerWorker


def leader_fault(
    cluster: LocalCluster,
    topic: str,
    inject: Callable[[int], None],
    heal: Callable[[int], None],
) -> LeaderFaultOutcome:
    """The shared scenario of the leader faults, under acks=all load with a history:
    ``inject(leader)``; wait until another broker leads and commits; ``heal(leader)``;
    wait until the old leader follows and the ISR is full; final read and check (only
    DUPLICATE tolerated); stop the cluster; the replicas must be byte-identical.

    Besides the main producer (3 s request timeout: it fails over quickly) a ``stale``
    one waits 30 s per request, so its requests sit with the old leader through the fault
    and reach it late, when it is back and still believes it leads."""
    leader = cluster.wait_isr_full(topic, 0, REPLICAS).leader
    before = cluster.partition_state(topic, 0)
    assert before is not None
    history = QueueHistory(time.monotonic)
    bootstrap = cluster.bootstrap
    producer = ProducerWorker(history, bootstrap, topic, process=0).start()
    stale = ProducerWorker(
        history, bootstrap, topic, process=1, config={"request_timeout_ms": 30_000}
    ).start()
    poller = PollerWorker(history, bootstrap, topic, 1, process=2).start()
    try:
        producer.wait_acked(300)
        stale.wait_acked(50)
        lines_before = len(cluster.brokers[leader].lines)
        fault_at = time.monotonic()
        inject(leader)
        moved = cluster.wait_partition_state(
            topic, 0, lambda s: s.leader not in (leader, -1), what="a new leader"
        )
        assert moved.leader_epoch > before.leader_epoch
        assert leader not in moved.isr
        producer.wait_acked(300)  # the new leader commits with the two others
        unavailable = producer.longest_gap(fault_at, time.monotonic())
        heal(leader)
        cluster.brokers[leader].wait_for_event("became_follower", after=lines_before)
        back = wait_isr_full(cluster, topic)
        producer.wait_acked(200)
    finally:
        producer.stop()
        stale.stop()
        poller.stop()
    final_read(cluster, history, topic, 1, process=3)
    fail_on_known_bugs(cluster)
    report = check_history(history)
    assert back.leader_epoch >= moved.leader_epoch
    assert report.stats.acked >= 800
    print(
        f"leader {leader} -> {moved.leader} (epoch {moved.leader_epoch}): writes unavailable "
        f"{unavailable:.2f} s; {report.stats}; stale producer {stale.acked} acked, "
        f"{stale.unknown} unknown; poller read {poller.polled}, "
        f"{len(poller.out_of_range)} out of range"
    )
    cluster.stop()
    assert assert_replicas_identical(cluster, topic, 1) > 0
    return LeaderFaultOutcome(leader, moved, back, unavailable, report, stale)
