"""Kill -9 of the broker hosting a group's coordinator while the group consumes and
commits (issue 5).

The coordinator of a group is the leader of its ``__consumer_offsets`` partition (RF 3
here). Killed, that broker takes its group state along; the partition's new leader (an ISR
member, elected once the dead broker's 2 s session expires) loads the group and its
offsets from the log. Three members (threads of this process, the at-least-once loop of
``tests.faults.group_member``) consume a 6-partition topic under an acks=all producer. The
test checks that:

- the group finds the new coordinator: a lookup names another broker, every member
  commits again, and no member is thrown out (the new coordinator rebuilds the group
  Stable, sessions starting at load time);
- committed offsets are intact: a quiet group on the same ``__consumer_offsets``
  partition reads back exactly what it committed before the kill; the active group's
  offsets only moved forward, each to a value some member committed, and no commit
  acknowledged before the kill went missing;
- consumption continues: every acknowledged record is polled by the group, each handover
  starts at the last acknowledged commit, and the queue checker finds no anomaly.

(A member slower than ``max_poll_interval_ms`` getting ``CommitFailedError`` is covered
against real brokers by
``tests/integration/test_consumer_groups.py::test_a_member_that_stops_polling_is_removed_and_cannot_commit``.)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from broker.group.offsets_records import partition_for
from client import Admin, OffsetAndMetadata, TopicPartition
from tests.checkers.queue import QueueHistory, check
from tests.faults.group_member import MemberThread
from tests.faults.group_workload import (
    GROUP_SETTINGS,
    HEARTBEAT_INTERVAL_MS,
    SESSION_TIMEOUT_MS,
    MemberLog,
    handovers,
    member_history,
    missed_by_group,
    unexplained_duplicates,
    wait_caught_up,
    wait_for,
)
from tests.faults.workload import ProducerWorker, create_topic, fault_cluster, final_read
from tests.integration.cluster import LocalCluster

TOPIC = "group-coordinator"
GROUP = "coordinator-kill"
PARTITIONS = 6
OFFSETS_PARTITIONS = int(GROUP_SETTINGS["offsets.topic.num.partitions"])


@pytest.fixture
def group_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = fault_cluster(tmp_path, proxies=False, **GROUP_SETTINGS)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def log(member: MemberThread) -> MemberLog:
    return MemberLog(member.process, member.snapshot())


def neighbour_group(group: str) -> str:
    """A group id coordinated on the same ``__consumer_offsets`` partition as ``group``."""
    target = partition_for(group, OFFSETS_PARTITIONS)
    return next(
        name
        for name in (f"quiet-{n}" for n in itertools.count())
        if partition_for(name, OFFSETS_PARTITIONS) == target
    )


def test_kill_9_of_the_coordinator_broker_keeps_the_groups_offsets(
    group_cluster: LocalCluster,
) -> None:
    cluster = group_cluster
    create_topic(cluster, TOPIC, PARTITIONS)
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    quiet_group = neighbour_group(GROUP)
    quiet = {tp: OffsetAndMetadata(1_000 + tp.partition, f"quiet {tp.partition}") for tp in tps}
    history = QueueHistory(time.monotonic)
    config = {
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
        "processing_ms": 20,
    }
    members = [MemberThread(n, cluster.bootstrap, TOPIC, GROUP, config) for n in range(3)]
    producer = ProducerWorker(history, cluster.bootstrap, TOPIC, process=100, window=4)
    with ExitStack() as stack:
        stack.callback(producer.stop)
        producer.start().wait_acked(200)
        for m in members:
            stack.callback(m.stop)
            m.start()
        admin = stack.enter_context(Admin(bootstrap_servers=cluster.bootstrap))

        def stable() -> bool:
            [desc] = admin.describe_consumer_groups([GROUP])
            shared = sum(len(m.assignment) for m in desc.members) == PARTITIONS
            done = {p for m in members for e in log(m).of("commit") for p in e["offsets"]}
            committed = len(done) == PARTITIONS
            return desc.state == "Stable" and len(desc.members) == 3 and shared and committed

        wait_for("3 members stable, every partition committed", stable, 60)
        [desc] = admin.describe_consumer_groups([GROUP])
        coordinator = desc.coordinator.node_id
        admin.alter_consumer_group_offsets(quiet_group, quiet)
        [quiet_desc] = admin.describe_consumer_groups([quiet_group])
        assert quiet_desc.coordinator.node_id == coordinator
        assert admin.list_consumer_group_offsets(quiet_group) == quiet
        before = admin.list_consumer_group_offsets(GROUP)

        killed_at = time.monotonic()
        cluster.kill_broker(coordinator)
        quiet_after = admin.list_consumer_group_offsets(quiet_group)  # retried until found
        after = admin.list_consumer_group_offsets(GROUP)
        found_after = time.monotonic() - killed_at
        [desc_after] = admin.describe_consumer_groups([GROUP])

        def committed_again() -> bool:
            return all(
                any(e["completed"] > killed_at for e in log(m).of("commit")) for m in members
            )

        wait_for("every member committing to the new coordinator", committed_again, 30)
        producer.wait_acked(300)
        cluster.start_broker(coordinator)  # the final read waits for full ISRs
        producer.stop()
        wait_caught_up(admin, GROUP, PARTITIONS)
    logs = [log(m) for m in members]
    final_read(cluster, history, TOPIC, PARTITIONS, process=200)

    assert desc_after.coordinator.node_id != coordinator
    assert quiet_after == quiet
    commits = [
        (e["completed"], int(p), o)
        for log in logs
        for e in log.of("commit")
        for p, o in e["offsets"].items()
    ]
    uncertain = [
        (int(p), o)
        for log in logs
        for e in log.uncertain_commits()
        for p, o in e["offsets"].items()
    ]
    for tp in tps:
        acked_before = max((o for t, p, o in commits if p == tp.partition and t < killed_at))
        committed = {o for _, p, o in commits if p == tp.partition}
        committed |= {o for p, o in uncertain if p == tp.partition}
        got = after.get(tp)
        seen = f"{tp}: before the kill {before.get(tp)}, acknowledged {acked_before}; after {got}"
        assert got is not None and got.offset >= acked_before, f"commit lost: {seen}"
        assert got.offset >= before[tp].offset, seen
        assert got.offset in committed, f"never committed: {seen}"

    kicked = [(log.process, e) for log in logs for e in log.of("lost")]
    assert not kicked, f"members thrown out by the new coordinator: {kicked}"
    moves = handovers(logs)
    assert all(h.ok for h in moves), "\n".join(str(h) for h in moves if not h.ok)
    assert not unexplained_duplicates(logs)
    sends = history.history()
    assert not missed_by_group(sends, logs)
    report = check([*sends, *member_history(logs, TOPIC, GROUP)])
    assert report.workload_error_count == 0, report.workload_errors
    assert report.ok, report.summary()

    times = sorted(t for t, _, _ in commits if t > killed_at)
    no_commit = max(b - a for a, b in itertools.pairwise([killed_at, *times]))
    failed = [(log.process, e["error"]) for log in logs for e in log.of("commit_failed")]
    print(
        f"coordinator broker {coordinator} killed -> {desc_after.coordinator.node_id}; "
        f"offsets fetched from it after {found_after:.2f} s; no commit acknowledged for "
        f"{no_commit:.2f} s; {len(failed)} commits failed meanwhile {failed[:3]}; "
        f"{len(moves)} starts on a partition checked; {report.stats}"
    )
