"""Leadership across real broker processes: a SIGTERM'd leader hands its partitions over
before it exits while an acks=all producer keeps going; a killed and restarted leader gets
its partitions back through ``minibroker leaders elect --preferred``; ``topics describe``
with ``--under-replicated`` and ``--unavailable`` shows what is wrong meanwhile."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from client.types import TopicDescription
from tests.integration.cluster import LocalCluster
from tests.integration.test_cli import run_cli

TOPIC = "handover"
DEADLINE_S = 60.0


def wait_until(what: str, check: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll ``check`` (a metadata request) until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.1)


def describe(cluster: LocalCluster, topic: str) -> TopicDescription:
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        [desc] = admin.describe_topics([topic])
        return desc


@pytest.fixture
def cluster3_steady(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three brokers, short sessions (a killed broker is noticed in ~2 s), leadership
    moved back only on request."""
    c = LocalCluster(
        tmp_path,
        brokers=3,
        settings={
            "zookeeper.session.timeout.ms": "2000",
            "auto.leader.rebalance.enable": "false",
        },
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster3_default_sessions(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three brokers with Kafka's 18 s session timeout: what a kill -9 would cost."""
    c = LocalCluster(tmp_path, brokers=3, settings={"auto.leader.rebalance.enable": "false"})
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_sigterm_leader_hands_over_before_exiting(
    cluster3_default_sessions: LocalCluster,
) -> None:
    cluster = cluster3_default_sessions
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 3, 3, {"min.insync.replicas": "2"})])
    desc = describe(cluster, TOPIC)
    old = desc.partitions[0].leader
    led = [p.partition for p in desc.partitions if p.leader == old]

    stopped = threading.Event()
    exit_codes: list[int] = []

    def stop_old() -> None:
        exit_codes.append(cluster.brokers[old].stop(signal.SIGTERM))
        stopped.set()

    acked: list[bytes] = []
    latencies: list[tuple[float, float]] = []  # (sent at, seconds until acknowledged)
    with Producer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=0) as producer:
        for i in range(100):  # warm up: metadata and connections
            producer.send(TOPIC, value=b"w%d" % i, partition=0).get(timeout=30)
            acked.append(b"w%d" % i)
        stopper = threading.Thread(target=stop_old)
        stopper.start()
        after_stop = 0
        i = 0
        while after_stop < 200:
            value = b"v%06d" % i
            sent = time.monotonic()
            # Any error here fails the test: retriable ones are absorbed by the retries.
            producer.send(TOPIC, value=value, partition=i % 3).get(timeout=30)
            latencies.append((sent, time.monotonic() - sent))
            acked.append(value)
            i += 1
            if stopped.is_set():
                after_stop += 1
        stopper.join()
    assert exit_codes == [0]

    # The stopped broker moved everything on its first attempt, then stopped cleanly.
    proc = cluster.brokers[old]
    names = [e.get("event") for e in proc.events()]
    assert "controlled_shutdown_succeeded" in names
    assert names.index("controlled_shutdown_succeeded") < names.index("broker_stopped")
    stopped_at = next(e["timestamp"] for e in proc.events() if e.get("event") == "broker_stopped")
    # Every partition it led was moved by a controller while it was still running.
    moved = {
        e["partition"]: e["timestamp"]
        for p in cluster.brokers.values()
        for e in p.events()
        if e.get("event") == "partition_state_changed"
        and e.get("reason") == "controlled_shutdown"
        and e.get("topic") == TOPIC
    }
    assert sorted(moved) == sorted(led)
    assert all(ts < stopped_at for ts in moved.values())
    after = describe(cluster, TOPIC)
    for p in after.partitions:
        assert p.leader != old and old not in p.isr

    worst = max(seconds for _sent, seconds in latencies)
    print(
        f"controlled shutdown of the leader of {len(led)} partition(s): longest acks=all "
        f"send {worst * 1000:.0f} ms over {len(latencies)} sends"
    )
    assert worst < 5.0  # far below the 18 s session timeout a kill -9 would wait for

    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    tps = [TopicPartition(TOPIC, p) for p in range(3)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: set[bytes] = set()
    empty = 0
    try:
        while not set(acked) <= got and empty < 20:
            batch = consumer.poll(timeout_ms=500)
            empty = 0 if batch else empty + 1
            got.update(r.value for rs in batch.values() for r in rs if r.value is not None)
    finally:
        consumer.close()
    assert set(acked) <= got  # no acknowledged write lost in the handover


def partition_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("\tTopic:")]


def test_cli_moves_leadership_back_to_the_restarted_preferred_replica(
    cluster3_steady: LocalCluster,
) -> None:
    cluster = cluster3_steady
    run_cli(cluster, "topics", "create", "t", "--partitions", "3", "--replication-factor", "3")
    run_cli(cluster, "topics", "create", "solo", "--partitions", "3", "--replication-factor", "1")
    desc = describe(cluster, "t")
    preferred = {p.partition: p.replicas[0] for p in desc.partitions}
    assert all(p.leader == preferred[p.partition] for p in desc.partitions)
    out = run_cli(cluster, "topics", "describe", "t").stdout
    assert out.splitlines()[0] == "Topic: t\tPartitionCount: 3\tReplicationFactor: 3\tConfigs: "
    p0 = desc.partitions[0]
    assert partition_lines(out)[0] == (
        f"\tTopic: t\tPartition: 0\tLeader: {p0.leader}\t"
        f"Replicas: {','.join(map(str, p0.replicas))}\tIsr: {','.join(map(str, p0.isr))}"
    )
    assert run_cli(cluster, "topics", "describe", "--under-replicated").stdout == ""
    assert run_cli(cluster, "topics", "describe", "--unavailable").stdout == ""

    victim = preferred[0]
    mine = sorted(p for p, b in preferred.items() if b == victim)
    cluster.kill_broker(victim)
    wait_until(
        "leadership to leave the killed broker",
        lambda: all(p.leader != victim for p in describe(cluster, "t").partitions),
    )
    under = partition_lines(run_cli(cluster, "topics", "describe", "--under-replicated").stdout)
    assert {line.split("\t")[2] for line in under if "Topic: t\t" in line} == {
        f"Partition: {p}" for p in range(3)
    }
    unavailable = partition_lines(run_cli(cluster, "topics", "describe", "--unavailable").stdout)
    solo = describe(cluster, "solo")
    offline = [p.partition for p in solo.partitions if p.replicas == [victim]]
    assert offline, "one RF 1 partition lives on each broker"
    assert unavailable == [
        f"\tTopic: solo\tPartition: {p}\tLeader: none\tReplicas: {victim}\tIsr: {victim}"
        for p in offline
    ]

    cluster.start_broker(victim)
    wait_until(
        "the restarted broker to rejoin every ISR",
        lambda: all(len(p.isr) == 3 for p in describe(cluster, "t").partitions),
    )
    assert run_cli(cluster, "topics", "describe", "--under-replicated").stdout == ""
    assert all(p.leader != victim for p in describe(cluster, "t").partitions)

    one = run_cli(cluster, "leaders", "elect", "--preferred", "--topic", "t", "--partition", "0")
    assert one.stdout == "Successfully completed leader election (PREFERRED) for partitions t-0\n"
    rest = run_cli(cluster, "leaders", "elect", "--preferred", "--topic", "t").stdout.splitlines()
    moved = [f"t-{p}" for p in mine if p != 0]
    noop = [f"t-{p}" for p in range(3) if f"t-{p}" not in moved]
    expected = []
    if moved:
        expected.append(
            f"Successfully completed leader election (PREFERRED) for partitions {', '.join(moved)}"
        )
    expected.append(f"Valid replica already elected for partitions {', '.join(noop)}")
    assert rest == expected
    after = describe(cluster, "t")
    assert all(p.leader == preferred[p.partition] for p in after.partitions)

    missing = run_cli(cluster, "leaders", "elect", "--preferred", "--topic", "nope", check=False)
    assert missing.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in missing.stderr
    bad = run_cli(cluster, "leaders", "elect", "--preferred", "--partition", "0", check=False)
    assert bad.returncode == 1 and "--partition needs --topic" in bad.stderr


def test_cli_reports_partitions_that_cannot_be_elected(cluster3_steady: LocalCluster) -> None:
    cluster = cluster3_steady
    run_cli(cluster, "topics", "create", "t", "--partitions", "1", "--replication-factor", "2")
    preferred = describe(cluster, "t").partitions[0].replicas[0]
    cluster.kill_broker(preferred)
    wait_until(
        "leadership to leave the killed preferred replica",
        lambda: describe(cluster, "t").partitions[0].leader not in (-1, preferred),
    )
    out = run_cli(cluster, "leaders", "elect", "--preferred", check=False)
    assert out.returncode == 1
    assert out.stdout.startswith(
        "Error completing leader election (PREFERRED) for partition: t-0: "
        "[PREFERRED_LEADER_NOT_AVAILABLE]"
    )
    assert "1 replica(s) could not be elected" in out.stderr
