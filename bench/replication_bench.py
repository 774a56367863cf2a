"""`make bench-replication`: replicated produce throughput and leader failover.

Three brokers and a 3-node coordinator ensemble as real processes on this machine, 100-byte
records:

- throughput: a topic with replication factor 3 and min.insync.replicas 2, produced with
  acks=all through ``send()`` and through ``send_many`` (the perf tool's loops);
- failover: with the brokers' default settings, a producer writes with acks=all to one
  partition; the partition's leader is killed with SIGKILL; the time from the kill to the
  next acknowledged write is the failover time. Repeated ``--failovers`` times (the killed
  broker is restarted and the ISR is full again before the next round).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from client import Admin, NewTopic, Producer
from client.cli import gc_threshold, perf_produce
from client.errors import ClientError
from proto.errors import MinibrokerError
from tests.integration.cluster import LocalCluster


def describe(bootstrap: str, topic: str) -> Any:
    with Admin(bootstrap_servers=bootstrap) as admin:
        [desc] = admin.describe_topics([topic])
    return desc


def wait_full_isr(bootstrap: str, topic: str, replicas: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        desc = describe(bootstrap, topic)
        if all(len(p.isr) == replicas and p.leader >= 0 for p in desc.partitions):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"ISR of {topic} not full after {timeout} s: {desc}")
        threading.Event().wait(0.2)  # polling a remote state, not waiting for time


def throughput(cluster: LocalCluster, args: argparse.Namespace, console: Console) -> list[Any]:
    topic = "bench-rf3"
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, args.partitions, 3, {"min.insync.replicas": "2"})])
    wait_full_isr(cluster.bootstrap, topic, 3)
    runs = []
    for bulk in (0, args.bulk):
        api = f"send_many({bulk})" if bulk else "send()"
        console.print(f"produce RF 3 acks=all with {api} ...")
        with gc_threshold(tuned=True):
            run = perf_produce(
                cluster.bootstrap,
                topic,
                args.records,
                args.record_size,
                acks="all",
                bulk=bulk,
                show_progress=console.is_terminal,
            )
        run["api"] = api
        runs.append(run)
    return runs


def failover(cluster: LocalCluster, rounds: int, console: Console) -> list[float]:
    topic = "bench-failover"
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 1, 3, {"min.insync.replicas": "2"})])
    times = []
    with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        for n in range(rounds):
            wait_full_isr(cluster.bootstrap, topic, 3)
            for i in range(20):  # warm: connections and metadata
                producer.send(topic, value=b"warm-%d" % i, partition=0).get(timeout=30)
            leader = describe(cluster.bootstrap, topic).partitions[0].leader
            cluster.kill_broker(leader)
            killed = time.monotonic()
            while True:
                try:
                    producer.send(topic, value=b"after", partition=0).get(timeout=60)
                    break
                except (ClientError, MinibrokerError):  # retried by the producer first
                    continue
            times.append(time.monotonic() - killed)
            console.print(f"round {n + 1}: broker {leader} killed, next ack {times[-1]:.3f} s")
            cluster.start_broker(leader)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=3, help="leaders spread over 3 brokers")
    ap.add_argument("--bulk", type=int, default=10_000, help="records per send_many call")
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)
    results: dict[str, Any] = {"records": args.records, "record_size": args.record_size}
    with tempfile.TemporaryDirectory(prefix="minibroker-bench-") as tmp:
        cluster = LocalCluster(Path(tmp), brokers=3, coordinators=3).start()
        try:
            results["produce"] = throughput(cluster, args, console)
            results["failover_s"] = failover(cluster, args.failovers, console)
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    table = Table(title="RF 3, acks=all, min.insync.replicas 2, 3 brokers")
    for col in ("api", "records/s", "MB/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for run in results["produce"]:
        table.add_row(
            run["api"],
            f"{run['records_per_sec']:,.0f}",
            f"{run['mb_per_sec']:.1f}",
            f"{run['latency_ms_p50']:.0f}",
            f"{run['latency_ms_p99']:.0f}",
        )
    Console().print(table)
    fo = results["failover_s"]
    Console().print(
        "failover (SIGKILL of the leader -> next acknowledged acks=all write), default "
        "settings: " + ", ".join(f"{t:.2f} s" for t in fo)
    )


if __name__ == "__main__":
    main()
