"""`make bench`: one broker, one client process, 100-byte records, acks=1.

Starts a coordinator and one broker as real processes in a temporary directory, then runs
the perf tools' produce and consume loops (the same code as ``minibroker perf``) and reports
records/s, MB/s, latency percentiles and the broker's resident memory before and after, to
show that the log lives in the page cache and not in the broker's heap.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from client import Admin, NewTopic
from client.cli import gc_threshold, perf_consume, perf_produce
from tests.integration.cluster import LocalCluster


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="produce rounds per API (memory check)")
    ap.add_argument("--bulk", type=int, default=10_000, help="records per send_many call")
    ap.add_argument("--compression", default=None, choices=["zstd"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)
    results: dict[str, Any] = {"records": args.records, "record_size": args.record_size}
    with tempfile.TemporaryDirectory(prefix="minibroker-bench-") as tmp:
        cluster = LocalCluster(Path(tmp), brokers=1).start()
        try:
            pid = cluster.brokers[1].popen.pid
            with Admin(bootstrap_servers=cluster.bootstrap) as admin:
                admin.create_topics([NewTopic("bench", args.partitions, 1)])
            results["broker_rss_mib_start"] = round(rss_mib(pid), 1)
            produce_runs = []
            rounds = [(api, i) for api in (0, args.bulk) for i in range(args.rounds)]
            for n, (bulk, i) in enumerate(rounds, start=1):
                api = f"send_many({bulk})" if bulk else "send()"
                console.print(f"produce with {api}, round {i + 1}/{args.rounds} ...")
                with gc_threshold(tuned=True):
                    run = perf_produce(
                        cluster.bootstrap,
                        "bench",
                        args.records,
                        args.record_size,
                        acks=1,
                        compression=args.compression,
                        bulk=bulk,
                        show_progress=console.is_terminal,
                    )
                produce_runs.append(run)
                results[f"broker_rss_mib_after_round_{n}"] = round(rss_mib(pid), 1)
            results["produce"] = produce_runs
            console.print("consume ...")
            total = args.records * len(rounds)
            with gc_threshold(tuned=True):
                results["consume"] = perf_consume(
                    cluster.bootstrap, "bench", total, show_progress=console.is_terminal
                )
            console.print("consume again with CPython's default GC threshold ...")
            results["consume_default_gc"] = perf_consume(
                cluster.bootstrap, "bench", total, show_progress=console.is_terminal
            )
            results["broker_rss_mib_after_consume"] = round(rss_mib(pid), 1)
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    table = Table(title=f"minibroker bench: 1 broker, {args.record_size}-byte records, acks=1")
    table.add_column("run")
    table.add_column("records/s", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("max ms", justify="right")
    for i, r in enumerate(results["produce"], start=1):
        table.add_row(
            f"produce #{i} {r['api']} ({r['records']:,})",
            f"{r['records_per_sec']:,.0f}",
            f"{r['mb_per_sec']:.1f}",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_p99']:.1f}",
            f"{r['latency_ms_max']:.1f}",
        )
    for label, key in (("consume", "consume"), ("consume, default GC", "consume_default_gc")):
        c = results[key]
        table.add_row(
            f"{label} ({c['records']:,})",
            f"{c['records_per_sec']:,.0f}",
            f"{c['mb_per_sec']:.1f}",
            "",
            "",
            "",
        )
    Console().print(table)
    mem = {k: v for k, v in results.items() if k.startswith("broker_rss")}
    Console().print("broker RSS (MiB): " + ", ".join(f"{k[15:]}={v}" for k, v in mem.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
