"""The compose cluster as a user runs it: the image built offline, `docker compose up -d`,
the Python client on the host through the advertised EXTERNAL listeners, and a broker that
crashes coming back under its restart policy and catching up, and a short run of
`minibroker chaos` against it that must end with no anomaly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from tests.docker.conftest import BROKERS, COMPOSE_FILE, SERVICES, ComposeStack, run

TOPIC = "docker-events"
PARTITIONS = 3


def test_compose_file_validates(compose_command: list[str]) -> None:
    s = ComposeStack(compose_command, "minibroker-config-check", {1: 29092, 2: 29093, 3: 29094})
    assert s.check("config", "-q") == ""
    services = s.check("config", "--services").split()
    assert sorted(services) == sorted(SERVICES)
    config = s.check("config")
    for b, port in s.ports.items():  # the host ports follow MINIBROKER_PORT_N
        assert f"EXTERNAL://localhost:{port}" in config
        assert f"INTERNAL://broker-{b}:9092" in config


def test_image_runs_as_a_non_root_user(image: str) -> None:
    user = run(["docker", "image", "inspect", "--format", "{{.Config.User}}", image])
    assert user.returncode == 0 and user.stdout.strip() == "minibroker:minibroker", user
    uid = run(["docker", "run", "--rm", "--entrypoint", "id", image, "-u"])
    assert uid.returncode == 0 and uid.stdout.strip() not in ("", "0"), uid
    entry = run(["docker", "run", "--rm", image, "--help"])
    assert entry.returncode == 0 and "usage: minibroker" in entry.stdout, entry


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[bytes]:
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records if r.value is not None)
    finally:
        consumer.close()
    return got


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
        futures = [producer.send(topic, value=v, key=v) for v in values]
        producer.flush()
        for f in futures:
            f.get(timeout=60)


def _isr_full(admin: Admin, topic: str) -> bool:
    [desc] = admin.describe_topics([topic])
    return all(sorted(p.isr) == list(BROKERS) for p in desc.partitions)


def test_host_client_produces_and_consumes_through_the_external_listeners(
    stack: ComposeStack,
) -> None:
    with Admin(bootstrap_servers=stack.bootstrap) as admin:
        cluster = admin.describe_cluster()
        # Clients on the host are told the EXTERNAL addresses, never broker-N:9092.
        assert [(b.node_id, b.host, b.port) for b in cluster.brokers] == [
            (b, "localhost", stack.ports[b]) for b in BROKERS
        ]
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])
        [desc] = admin.describe_topics([TOPIC])
        assert all(sorted(p.replicas) == list(BROKERS) for p in desc.partitions)
    values = [b"first-%04d" % i for i in range(500)]
    _produce(stack.bootstrap, TOPIC, values)
    got = _consume_all(stack.bootstrap, TOPIC, len(values))
    assert sorted(got) == sorted(values), stack.logs()

    # What docs/docker.md tells users to watch, from the host.
    described = subprocess.run(
        [sys.executable, "-m", "broker.cli", "topics", "describe", TOPIC,
         "--bootstrap-server", stack.bootstrap],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert described.returncode == 0, described.stderr
    assert f"PartitionCount: {PARTITIONS}" in described.stdout
    assert "ReplicationFactor: 3" in described.stdout


def test_a_crashed_broker_restarts_under_its_policy_and_catches_up(stack: ComposeStack) -> None:
    """SIGKILL to the broker process inside its container (a crash: no clean shutdown).
    `docker kill` would not do: Docker counts it as a manual stop, which no restart
    policy overrides. docker-init (init: true) is PID 1, so the kill reaches the broker
    and the container ends with 137; `restart: unless-stopped` starts it again."""
    victim, topic = "broker-2", "crash-and-catch-up"
    with Admin(bootstrap_servers=stack.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, PARTITIONS, 3)])
    written = [b"before-%04d" % i for i in range(300)]
    _produce(stack.bootstrap, topic, written)

    before = stack.restart_count(victim)
    kill = run(
        ["docker", "exec", stack.container(victim), "python", "-c",
         "import os, signal; os.kill(-1, signal.SIGKILL)"],
    )  # fmt: skip
    # 137: the container stopped (its broker died) before the exec'd process could exit,
    # which kills that process too; the restart count below shows the crash either way.
    assert kill.returncode in (0, 137), kill.stderr

    # Written while the broker is down or coming back: acks=all with min.insync.replicas=2
    # succeeds on the other two; the restarted broker must fetch all of it.
    during = [b"during-%04d" % i for i in range(300)]
    _produce(stack.bootstrap, topic, during)

    deadline = time.monotonic() + 120
    while stack.restart_count(victim) == before:
        assert time.monotonic() < deadline, f"{victim} was not restarted\n{stack.logs()}"
        time.sleep(0.5)
    assert stack.restart_count(victim) == before + 1
    stack.wait_healthy((victim,))

    with Admin(bootstrap_servers=stack.bootstrap) as admin:
        deadline = time.monotonic() + 120
        while not _isr_full(admin, topic):
            assert time.monotonic() < deadline, (
                f"ISR not full again: {admin.describe_topics([topic])}\n{stack.logs()}"
            )
            time.sleep(0.5)

    got = _consume_all(stack.bootstrap, topic, len(written) + len(during))
    assert sorted(got) == sorted(written + during)


CHAOS_DURATION_S = 90


def test_a_short_chaos_run_on_the_compose_cluster_finds_no_anomaly(
    stack: ComposeStack, tmp_path: Path
) -> None:
    """`minibroker chaos --target compose` as the README runs it: idempotent acks=all
    producers and a consumer group while every fault kind hits the containers (kill,
    pause, network partition, restart, coordinator leader kill), then the final read and
    the check. Exit 0 means the checker found no anomaly of any kind."""
    out = tmp_path / "chaos"
    argv = [
        sys.executable, "-m", "broker.cli", "chaos", "--target", "compose",
        "--compose-file", str(COMPOSE_FILE), "--compose-project", stack.project,
        "--bootstrap-servers", stack.bootstrap, "--duration", str(CHAOS_DURATION_S),
        "--seed", "20", "--faults", "kill,pause,partition,restart,coordinator-kill",
        "--consumers", "2", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=CHAOS_DURATION_S + 600, check=False
    )
    print(done.stdout[-6000:])
    assert done.returncode == 0, f"chaos run failed:\n{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
    run_record = json.loads((out / "history.json").read_text())
    assert run_record["verdict"] == "valid"
    assert run_record["faults"], "no fault was injected"
    kinds = {e["type"] for e in run_record["history"]}
    assert {"send", "poll", "commit", "final-read"} <= kinds, kinds
    assert (out / "report.html").stat().st_size > 0
