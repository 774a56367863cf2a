"""`make bench-groups`: consumer-group performance on a real 3-broker cluster.

Three brokers and a 3-node coordinator ensemble as real processes on this machine (as
bench/replication_bench.py starts them), the brokers' default settings except
``group.initial.rebalance.delay.ms`` (500 ms instead of 3 s: it only delays a group's
first assignment, which the consume measurement includes), 100-byte records, clients with
their default settings unless said otherwise:

1. rebalance time, 10 members over 100 partitions (RF 3), eager (range) vs
   cooperative-sticky, an 11th member joining and one member leaving, while a producer
   writes ``--rate`` records/s (bench/groups_rebalance.py);
2. commit throughput: sync ``commit()`` (acknowledged when replicated, RF 3) from one
   consumer, 1 and 10 partitions per commit, and ``commit_async()`` back to back;
3. consume throughput: a 3-member group against one consumer reading the same 6-partition
   topic of ``--records`` records, from subscribe to the last record.

Each measurement runs ``--rounds`` times; tables show min / median / max. ``--json PATH``
writes every number (per member, per round) to PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.groups_members import MemberProc
from bench.groups_rebalance import rebalance_bench
from bench.groups_report import cell, commit_table, consume_table, rebalance_tables
from client import Admin, Consumer, NewTopic, OffsetAndMetadata, Producer, TopicPartition
from tests.integration.cluster import LocalCluster

SETTINGS = {"group.initial.rebalance.delay.ms": "500"}
TIMEOUT_S = 120.0


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic(name, partitions, 3)])
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        with Admin(bootstrap_servers=bootstrap) as admin:
            [desc] = admin.describe_topics([name])
        if all(p.leader >= 0 and len(p.isr) == 3 for p in desc.partitions):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: partitions without a full ISR: {desc}")
        time.sleep(0.2)  # polling the cluster's state, with a deadline


def warm_coordinator(bootstrap: str, tp: TopicPartition) -> None:
    """The first group operation creates __consumer_offsets (50 partitions, RF 3): done
    here, so that no measurement includes it."""
    with Consumer(bootstrap_servers=bootstrap, group_id="bench-warm") as consumer:
        consumer.committed(tp)


# --- commit throughput -----------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    vs = sorted(values)
    return vs[min(len(vs) - 1, int(q * len(vs)))]


def _wait_assigned(consumer: Consumer, partitions: int) -> list[TopicPartition]:
    deadline = time.monotonic() + TIMEOUT_S
    while len(consumer.assignment()) < partitions:
        consumer.poll(timeout_ms=100)
        if time.monotonic() > deadline:
            raise TimeoutError(f"assigned {consumer.assignment()} of {partitions} partitions")
    return sorted(consumer.assignment())


class CommitTally:
    """The callback of every commit_async: counts them, keeps their errors."""

    def __init__(self) -> None:
        self.done = 0
        self.errors: list[Exception] = []

    def __call__(self, offsets: object, error: Exception | None) -> None:
        self.done += 1
        if error is not None:
            self.errors.append(error)


def commit_bench(bootstrap: str, topic: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    offset = 0
    with Consumer(
        bootstrap_servers=bootstrap, group_id="commit-bench", enable_auto_commit=False
    ) as consumer:
        consumer.subscribe([topic])
        tps = _wait_assigned(consumer, 10)
        for _ in range(20):  # warm: coordinator connection
            offset += 1
            consumer.commit({tps[0]: offset})
        for n in range(args.rounds):
            for width in (1, 10):
                latencies = []
                start = time.perf_counter()
                for _ in range(args.commits):
                    offset += 1
                    sent = time.perf_counter()
                    consumer.commit({tp: OffsetAndMetadata(offset) for tp in tps[:width]})
                    latencies.append(time.perf_counter() - sent)
                elapsed = time.perf_counter() - start
                runs.append(
                    {
                        "api": "commit()",
                        "partitions": width,
                        "round": n + 1,
                        "commits": args.commits,
                        "commits_per_sec": round(args.commits / elapsed, 1),
                        "latency_ms_p50": round(_pct(latencies, 0.5) * 1000, 2),
                        "latency_ms_p99": round(_pct(latencies, 0.99) * 1000, 2),
                    }
                )
            tally = CommitTally()
            start = time.perf_counter()
            for _ in range(args.commits):
                offset += 1
                consumer.commit_async({tps[0]: offset}, callback=tally)
            offset += 1
            consumer.commit({tps[0]: offset})  # after every queued one (commits keep order)
            elapsed = time.perf_counter() - start
            if tally.errors or tally.done != args.commits:
                raise RuntimeError(f"commit_async: {tally.done} callbacks, {tally.errors[:3]}")
            if consumer.committed(tps[0]) != OffsetAndMetadata(offset):
                raise RuntimeError(f"committed {consumer.committed(tps[0])}, expected {offset}")
            runs.append(
                {
                    "api": "commit_async()",
                    "partitions": 1,
                    "round": n + 1,
                    "commits": args.commits + 1,
                    "commits_per_sec": round((args.commits + 1) / elapsed, 1),
                }
            )
    return runs


# --- consume throughput ----------------------------------------------------------------


def preproduce(
    bootstrap: str, topic: str, records: int, size: int, partitions: int
) -> dict[int, int]:
    ends = {}
    with Producer(bootstrap_servers=bootstrap) as producer:
        for p in range(partitions):
            n = records // partitions + (1 if p < records % partitions else 0)
            producer.send_many(topic, [b"x" * size] * n, partition=p)
            ends[p] = n
        producer.flush()
    with Consumer(bootstrap_servers=bootstrap) as consumer:
        logged = consumer.end_offsets([TopicPartition(topic, p) for p in ends])
    if {tp.partition: offset for tp, offset in logged.items()} != ends:
        raise RuntimeError(f"{topic}: end offsets {logged}, expected {ends}")
    return ends


def consume_once(
    bootstrap: str, topic: str, ends: dict[int, int], members: int, group: str, workdir: Path
) -> dict[str, Any]:
    options = {"bootstrap": bootstrap, "topic": topic, "group": group, "ends": json.dumps(ends)}
    procs = [
        MemberProc.start(i, "drain", workdir / f"{group}-{i}.jsonl", options, stdin=True)
        for i in range(members)
    ]
    try:
        for m in procs:
            assert m.popen.stdout is not None
            if m.popen.stdout.readline().strip() != b"ready":
                m.check_alive()
                raise RuntimeError(f"member {m.index} did not start")
        for m in procs:
            assert m.popen.stdin is not None
            m.popen.stdin.write(b"go\n")
            m.popen.stdin.flush()
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for m in procs:
                m.refresh()
                m.check_alive()
            done = {e["partition"] for m in procs for e in m.entries if e["e"] == "done"}
            if len(done) == len(ends):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group}: partitions {sorted(done)} done, not all")
            time.sleep(0.02)  # polling the members' logs, with a deadline
    finally:
        for m in procs:
            m.terminate()
        for m in procs:
            m.wait()
    go = min(e["at"] for m in procs for e in m.entries if e["e"] == "go")
    last = max(e["at"] for m in procs for e in m.entries if e["e"] == "done")
    assigned = min(
        e["at"] for m in procs for e in m.entries if e["e"] == "assigned" and e["partitions"]
    )
    total = sum(ends.values())
    read = sum(e["records"] for m in procs for e in m.entries if e["e"] == "closed")
    closed = [e for m in procs for e in m.entries if e["e"] == "closed"]
    return {
        "members": members,
        "records": total,
        "records_read": read,
        "elapsed_s": round(last - go, 3),
        "records_per_sec": round(total / (last - go), 1),
        "assigned_s": round(assigned - go, 3),
        "records_per_sec_after_assigned": round(total / (last - assigned), 1),
        "assignments": [len([e for e in m.entries if e["e"] == "assigned"]) for m in procs],
        "member_cpu_s": [e["cpu_s"] for e in closed],
    }


def consume_bench(
    bootstrap: str, topic: str, args: argparse.Namespace, workdir: Path, console: Console
) -> dict[str, Any]:
    console.print(f"producing {args.records:,} records to {topic} ...")
    began = time.monotonic()
    ends = preproduce(bootstrap, topic, args.records, args.record_size, 6)
    produced_s = time.monotonic() - began
    runs = []
    for n in range(args.rounds):
        for members in (1, 3):
            r = consume_once(bootstrap, topic, ends, members, f"consume-{members}-{n}", workdir)
            r["round"] = n + 1
            console.print(
                f"consume round {n + 1}, {members} member(s): {r['records_per_sec']:,.0f} records/s"
            )
            runs.append(r)
    return {"partitions": 6, "ends": ends, "produce_s": round(produced_s, 3), "runs": runs}


# --- main ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000, help="consume: records produced")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement")
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--rate", type=int, default=2000, help="rebalance: records/s produced")
    ap.add_argument("--baseline", type=float, default=3.0, help="rebalance: settled s before")
    ap.add_argument(
        "--heartbeat-interval-ms", type=int, default=None, help="rebalance: members' (3000)"
    )
    ap.add_argument("--seed", type=int, default=1, help="rebalance: when scenarios start")
    ap.add_argument("--commits", type=int, default=300, help="commits per commit run")
    ap.add_argument("--only", choices=["rebalance", "commit", "consume"], action="append")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data and member logs here")
    args = ap.parse_args()
    for name in ("rounds", "record_size", "rate", "commits"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.records < 6:
        ap.error("--records must be at least 6 (one per partition)")
    if args.baseline <= 0:
        ap.error("--baseline must be positive")
    parts = args.only or ["rebalance", "commit", "consume"]
    console = Console(stderr=True)
    results: dict[str, Any] = {
        "record_size": args.record_size,
        "rounds": args.rounds,
        "broker_settings": SETTINGS,
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="minibroker-bench-") as tmp:
        workdir = Path(tmp) if args.workdir is None else args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cluster = LocalCluster(workdir, brokers=3, coordinators=3, settings=SETTINGS).start()
        try:
            bootstrap = cluster.bootstrap
            topics = {
                "rebalance": ("flow", 100),
                "commit": ("commits", 10),
                "consume": ("drain", 6),
            }
            for part in parts:
                create_topic(bootstrap, *topics[part])
            warm_coordinator(bootstrap, TopicPartition(topics[parts[0]][0], 0))
            if "rebalance" in parts:
                results["rebalance"] = rebalance_bench(
                    bootstrap, "flow", 100, args, workdir, console
                )
            if "commit" in parts:
                console.print("commits ...")
                results["commit"] = commit_bench(bootstrap, "commits", args)
            if "consume" in parts:
                results["consume"] = consume_bench(bootstrap, "drain", args, workdir, console)
        finally:
            cluster.stop()
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    results["loadavg_after"] = os.getloadavg()
    terminal = Console()
    out = terminal if terminal.is_terminal else Console(width=140)
    if "rebalance" in results:
        for table in rebalance_tables(results["rebalance"]):
            out.print(table)
        for st in results["rebalance"]["strategies"]:
            out.print(
                f"{st['strategy']}: CPU s per member process {cell(st['member_cpu_s'])}, "
                f"max RSS MiB {cell(st['member_max_rss_mib'], '{:.0f}')}"
            )
    if "commit" in results:
        out.print(commit_table(results["commit"]))
    if "consume" in results:
        out.print(consume_table(results["consume"]))
    out.print(
        f"{results['elapsed_s']} s; load average before {results['loadavg_before'][0]:.2f}, "
        f"after {results['loadavg_after'][0]:.2f} ({results['cpus']} CPUs)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
