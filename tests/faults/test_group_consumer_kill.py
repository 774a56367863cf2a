"""Kill -9 of one consumer-group member process in the middle of a stream (issue 5).

Three member processes (``tests.faults.group_member``: poll, then a synchronous commit of
exactly what the poll returned) share a 6-partition topic (RF 3, min ISR 2) while an
idempotent acks=all producer writes unique values. One member is killed with SIGKILL: it
sends no LeaveGroup, so the coordinator notices only when its session (3 s) expires. Then:

- its partitions are polled by the others within the liveness bound below;
- every handover starts at the last acknowledged commit (never beyond: nothing skipped;
  never before without cause: only uncommitted records come back);
- the members together polled every acknowledged record; duplicates only where a commit
  did not succeed (the killed member's tail); the queue checker finds nothing else.

Liveness bound: the session expires at most ``SESSION_TIMEOUT_MS`` after the kill (the
last heartbeat precedes it). Then each survivor learns of the rebalance from its next
heartbeat (500 ms), rejoins in its next poll (200 ms), and the join, the sync (the group
record appended acks=all), the offset lookup and a first fetch follow: a few localhost
round trips, under a second on an idle machine, two rounds for cooperative-sticky. The
margin is one more session timeout (3 s), for two shared cores running 3 brokers, 3
coordinators, the producer and the members.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Admin
from tests.checkers.queue import QueueHistory, check
from tests.faults.group_workload import (
    GROUP_SETTINGS,
    SESSION_TIMEOUT_MS,
    MemberLog,
    handovers,
    member_history,
    member_processes,
    missed_by_group,
    reads,
    uncommitted_tail,
    unexplained_duplicates,
    wait_caught_up,
    wait_for,
)
from tests.faults.workload import ProducerWorker, create_topic, fault_cluster, final_read
from tests.integration.cluster import LocalCluster

TOPIC = "group-kill"
GROUP = "kill-9"
PARTITIONS = 6
MEMBERS = 3
TAKEOVER_BOUND_S = 2 * SESSION_TIMEOUT_MS / 1000


@pytest.fixture
def group_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = fault_cluster(tmp_path, proxies=False, **GROUP_SETTINGS)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def read_logs(root: Path) -> list[MemberLog]:
    return [MemberLog.read(n, root / f"member-{n}.jsonl") for n in range(MEMBERS)]


def polled_after(logs: list[MemberLog], partition: int, at: float, skip: int) -> float | None:
    """When a member other than ``skip`` first returned records of ``partition`` after ``at``."""
    times = [
        e["completed"]
        for log in logs
        if log.process != skip
        for e in log.of("poll")
        if str(partition) in e["records"] and e["completed"] > at
    ]
    return min(times, default=None)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_kill_9_of_a_member_hands_its_partitions_over_from_the_committed_offsets(
    group_cluster: LocalCluster, tmp_path: Path, strategy: str
) -> None:
    cluster = group_cluster
    create_topic(cluster, TOPIC, PARTITIONS)
    history = QueueHistory(time.monotonic)
    producer = ProducerWorker(history, cluster.bootstrap, TOPIC, process=100, window=4).start()
    try:
        producer.wait_acked(200)
        with (
            member_processes(cluster, tmp_path, TOPIC, GROUP, MEMBERS, strategy) as procs,
            Admin(bootstrap_servers=cluster.bootstrap) as admin,
        ):

            def shares() -> list[int]:
                return sorted(len(log.owned_at(math.inf)) for log in read_logs(tmp_path))

            wait_for(
                "3 members sharing 6 partitions, each having committed",
                lambda: (
                    shares() == [2, 2, 2] and all(log.of("commit") for log in read_logs(tmp_path))
                ),
                60,
                lambda: f"shares {shares()}\n" + "".join(p.tail(5) for p in procs),
            )
            victim = 0
            commits = len(read_logs(tmp_path)[victim].of("commit"))
            wait_for(
                "the victim committing under load",
                lambda: len(read_logs(tmp_path)[victim].of("commit")) >= commits + 3,
                30,
            )
            # Mid-batch: polled, not yet committed (it "processes" for PROCESSING_MS).
            wait_for(
                "the victim between a poll and its commit",
                lambda: read_logs(tmp_path)[victim].entries[-1]["e"] == "poll",
                30,
            )
            orphans = read_logs(tmp_path)[victim].owned_at(math.inf)
            killed_at = time.monotonic()
            procs[victim].stop(signal.SIGKILL)

            def taken_over() -> bool:
                logs = read_logs(tmp_path)
                return all(polled_after(logs, p, killed_at, victim) for p in orphans)

            wait_for(f"partitions {sorted(orphans)} polled by the survivors", taken_over, 30)
            producer.wait_acked(300)
            producer.stop()
            wait_caught_up(admin, GROUP, PARTITIONS)
    finally:
        producer.stop()
    logs = read_logs(tmp_path)
    final_read(cluster, history, TOPIC, PARTITIONS, process=200)

    takeover = {p: polled_after(logs, p, killed_at, victim) for p in orphans}
    assigned = {
        p: min(
            (
                e["at"]
                for log in logs
                if log.process != victim
                for e in log.of("assigned")
                if p in e["partitions"] and e["at"] > killed_at
            ),
            default=math.inf,
        )
        for p in orphans
    }
    slowest = max(t - killed_at for t in takeover.values() if t is not None)
    assert slowest <= TAKEOVER_BOUND_S, f"took {slowest:.2f} s to poll {takeover}"

    moves = handovers(logs)
    assert all(h.ok for h in moves), "\n".join(str(h) for h in moves if not h.ok)
    from_victim = {h.partition for h in moves if h.source == victim and h.at > killed_at}
    assert from_victim == orphans
    assert not unexplained_duplicates(logs)
    sends = history.history()
    assert not missed_by_group(sends, logs)
    report = check([*sends, *member_history(logs, TOPIC, GROUP)])
    assert report.workload_error_count == 0, report.workload_errors
    assert report.ok, report.summary()  # DUPLICATE too: the producer is idempotent

    # Only uncommitted records are read twice (the victim's tail, and the polls of any
    # commit a rebalance refused), and all of the victim's tail is read again.
    tail = uncommitted_tail(logs[victim])
    again = {where for where, n in reads(logs).items() if n > 1}
    assert again <= set().union(*(uncommitted_tail(log) for log in logs))
    survivors = reads([log for log in logs if log.process != victim])
    assert all(where in survivors for where in tail)
    print(
        f"{strategy}: member {victim} killed owning {sorted(orphans)}; reassigned after "
        + ", ".join(f"p{p} {assigned[p] - killed_at:.2f} s" for p in sorted(orphans))
        + "; first polled by another member after "
        + ", ".join(f"p{p} {t - killed_at:.2f} s" for p, t in sorted(takeover.items()) if t)
        + f"; {len(moves)} starts on a partition checked; {len(again)} records read "
        f"twice (the victim's uncommitted tail: {len(tail)}); {report.stats}"
    )


# --- the checks themselves, on made-up logs (no cluster) ----------------------------------


def poll(at: float, partition: int, first: int, n: int) -> dict[str, object]:
    recs = [[o, f"v{partition}-{o}"] for o in range(first, first + n)]
    return {"e": "poll", "invoked": at - 0.01, "completed": at, "records": {str(partition): recs}}


def commit(at: float, partition: int, offset: int) -> list[dict[str, object]]:
    offsets = {str(partition): offset}
    return [
        {"e": "commit_begin", "at": at - 0.01, "offsets": offsets},
        {"e": "commit", "invoked": at - 0.01, "completed": at, "offsets": offsets},
    ]


def assigned(at: float, *partitions: int) -> dict[str, object]:
    return {"e": "assigned", "at": at, "partitions": list(partitions)}


def victim_log() -> MemberLog:
    """Member 0 read 0-9 of partition 0 and committed 10, then read 10-14 and died."""
    return MemberLog(0, [assigned(1, 0), poll(2, 0, 0, 10), *commit(3, 0, 10), poll(4, 0, 10, 5)])


def test_a_new_owner_must_start_at_the_last_commit() -> None:
    at_commit = MemberLog(1, [assigned(8, 0), poll(9, 0, 10, 5), *commit(10, 0, 15)])
    [_, moved] = handovers([victim_log(), at_commit])
    assert moved.ok and (moved.source, moved.to, moved.committed) == (0, 1, 10)
    assert not unexplained_duplicates([victim_log(), at_commit])
    assert uncommitted_tail(victim_log()) == {(0, o) for o in range(10, 15)}

    beyond = MemberLog(1, [assigned(8, 0), poll(9, 0, 12, 3)])  # 10 and 11 skipped
    [_, skipped] = handovers([victim_log(), beyond])
    assert not skipped.ok
    assert "first offset 12, last acknowledged commit 10" in str(skipped)

    before = MemberLog(1, [assigned(8, 0), poll(9, 0, 5, 10)])  # 5-9 were committed
    [_, early] = handovers([victim_log(), before])
    assert not early.ok
    assert any("re-read by member 1" in d for d in unexplained_duplicates([victim_log(), before]))


def test_a_commit_cut_short_by_the_kill_may_be_where_the_new_owner_starts() -> None:
    cut = victim_log()
    cut.entries.append({"e": "commit_begin", "at": 5, "offsets": {"0": 15}})
    after_cut = MemberLog(1, [assigned(8, 0), poll(9, 0, 15, 1)])
    [_, moved] = handovers([cut, after_cut])
    assert moved.ok and moved.maybe == {15}
    assert not missed_by_group([], [cut, after_cut])


def test_a_log_cut_by_a_kill_keeps_its_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "member.jsonl"
    path.write_text('{"e":"start","at":1}\n{"e":"poll","invoked":2,"comp')
    assert MemberLog.read(0, path).entries == [{"e": "start", "at": 1}]
