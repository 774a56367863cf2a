"""Two named listeners per broker, real processes: each listener answers Metadata with the
addresses of its own listener (Kafka's rule), brokers replicate over the inter-broker one,
and clients that only know the other one produce and consume."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from client.conn import BrokerConnection
from coordinator.client import open_coordinator
from proto.messages import MetadataRequest, MetadataResponse
from tests.integration.cluster import LocalCluster, Proc, free_port

BROKERS = (1, 2)


class TwoListenerCluster:
    """A coordinator and two brokers with INTERNAL (advertised as 127.0.0.1, used between
    brokers) and EXTERNAL (advertised as localhost) listeners on their own ports."""

    def __init__(self, root: Path) -> None:
        self.base = LocalCluster(root, brokers=0)
        self.internal = {b: free_port() for b in BROKERS}
        self.external = {b: free_port() for b in BROKERS}
        self.brokers: dict[int, Proc] = {}

    def start(self) -> TwoListenerCluster:
        self.base.start_coordinators()
        for b in BROKERS:
            i, e = self.internal[b], self.external[b]
            settings = {
                "listeners": f"INTERNAL://127.0.0.1:{i},EXTERNAL://127.0.0.1:{e}",
                "advertised.listeners": f"INTERNAL://127.0.0.1:{i},EXTERNAL://localhost:{e}",
                "inter.broker.listener.name": "INTERNAL",
                "replica.fetch.wait.max.ms": "100",
            }
            argv = [
                *self.base._cmd("broker", "--id", str(b)),
                *("--coordinator", self.base.coordinator_address),
                *("--data-dir", str(self.base.root / f"broker-{b}")),
            ]
            for k, v in settings.items():
                argv += ["--set", f"{k}={v}"]
            proc = Proc(f"broker-{b}", argv, self.base.root / f"broker-{b}.log")
            self.brokers[b] = proc
            started = proc.wait_for_event("broker_started")
            assert started["listeners"] == {
                "INTERNAL": f"127.0.0.1:{i}",
                "EXTERNAL": f"127.0.0.1:{e}",
            }
        return self

    def stop(self) -> None:
        for proc in self.brokers.values():
            proc.stop()
        self.base.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.brokers.values())


@pytest.fixture
def two_listeners(tmp_path: Path) -> Iterator[TwoListenerCluster]:
    c = TwoListenerCluster(tmp_path).start()
    try:
        yield c
    finally:
        c.stop()


async def _metadata(port: int) -> MetadataResponse:
    async with trio.open_nursery() as nursery:
        conn = BrokerConnection("127.0.0.1", port, request_timeout_ms=10_000)
        await conn.connect(nursery)
        try:
            response = await conn.request(MetadataRequest(None))
        finally:
            await conn.aclose()
    assert isinstance(response, MetadataResponse)
    return response


async def _both_registered(c: TwoListenerCluster, port: int) -> MetadataResponse:
    """Metadata once the broker's view holds both registrations (the second broker may
    have registered a moment after the first one loaded its view)."""
    with trio.fail_after(30):
        while True:
            md = await _metadata(port)
            if len(md.brokers) == len(BROKERS):
                return md
            await trio.sleep(0.05)


async def test_each_listener_answers_with_its_own_addresses(
    two_listeners: TwoListenerCluster,
) -> None:
    c = two_listeners
    for asked in BROKERS:
        internal = await _both_registered(c, c.internal[asked])
        assert [(b.node_id, b.host, b.port) for b in internal.brokers] == [
            (b, "127.0.0.1", c.internal[b]) for b in BROKERS
        ]
        external = await _both_registered(c, c.external[asked])
        assert [(b.node_id, b.host, b.port) for b in external.brokers] == [
            (b, "localhost", c.external[b]) for b in BROKERS
        ]

    # The registration holds every endpoint; host/port are the inter-broker listener's.
    async with open_coordinator(c.base.coordinator_address) as zk:
        data, _stat = await zk.get("/brokers/ids/2")
    reg = json.loads(data)
    assert reg["endpoints"] == [
        f"INTERNAL://127.0.0.1:{c.internal[2]}",
        f"EXTERNAL://localhost:{c.external[2]}",
    ]
    assert (reg["host"], reg["port"]) == ("127.0.0.1", c.internal[2])


def test_clients_on_the_external_listener_produce_and_consume(
    two_listeners: TwoListenerCluster,
) -> None:
    """acks=all with RF 2 completes only if the follower fetches from the leader over the
    INTERNAL listener; the client only ever sees EXTERNAL (localhost) addresses."""
    c = two_listeners
    bootstrap = ",".join(f"localhost:{c.external[b]}" for b in BROKERS)
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic("t", 2, 2)])
        cluster = admin.describe_cluster()
        assert {(b.host, b.port) for b in cluster.brokers} == {
            ("localhost", c.external[b]) for b in BROKERS
        }
    with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
        futures = [producer.send("t", value=b"v%d" % i, key=b"k%d" % i) for i in range(200)]
        producer.flush()
        metas = [f.get(timeout=30) for f in futures]
    assert len({(md.partition, md.offset) for md in metas}) == 200

    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    tps = [TopicPartition("t", p) for p in range(2)]
    consumer.assign(tps)
    got: set[bytes] = set()
    try:
        for _ in range(50):
            for records in consumer.poll(timeout_ms=500).values():
                got.update(r.value for r in records if r.value is not None)
            if len(got) == 200:
                break
    finally:
        consumer.close()
    assert got == {b"v%d" % i for i in range(200)}, c.logs()


def _health(*argv: str, module: str = "broker.health") -> subprocess.CompletedProcess[str]:
    """``python -m broker.health`` (what the containers run) or ``minibroker health``."""
    cmd = [sys.executable, "-m", module, *(["health"] if module == "broker.cli" else []), *argv]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_health_commands(two_listeners: TwoListenerCluster) -> None:
    """What the compose file's health checks run, against real processes."""
    c = two_listeners
    ok = _health("broker", "--id", "2", "--bootstrap-server", f"127.0.0.1:{c.internal[2]}")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"broker 2 registered as 127.0.0.1:{c.internal[2]}"
    cli = _health("broker", "--id", "1", "--bootstrap-server", f"127.0.0.1:{c.internal[1]}",
                  module="broker.cli")  # fmt: skip
    assert cli.returncode == 0 and cli.stdout.startswith("broker 1 registered"), cli.stderr
    ext = _health("broker", "--id", "2", "--bootstrap-server", f"127.0.0.1:{c.external[2]}")
    assert ext.returncode == 0 and f"localhost:{c.external[2]}" in ext.stdout, ext.stderr
    other = _health("broker", "--id", "7", "--bootstrap-server", f"127.0.0.1:{c.internal[1]}")
    assert other.returncode == 1 and "broker 7" in other.stderr and "not registered" in other.stderr

    c.brokers[2].stop()
    gone = _health(
        "broker", "--id", "2", "--bootstrap-server", f"127.0.0.1:{c.internal[2]}",
        "--timeout-ms", "2000",
    )  # fmt: skip
    assert gone.returncode == 1 and "does not answer Metadata" in gone.stderr

    coord = _health("coordinator", "--server", c.base.coordinator_address)
    assert coord.returncode == 0 and "standalone" in coord.stdout, coord.stderr
    down = _health("coordinator", "--server", f"127.0.0.1:{free_port()}", "--timeout-ms", "2000")
    assert down.returncode == 1 and "cannot ask coordinator" in down.stderr
