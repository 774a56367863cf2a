"""`make bench-zk`: minibroker's coordinator against Apache ZooKeeper 3.8, side by side.

Starts each system as a 3-node ensemble of real processes on 127.0.0.1 (free ports, temp
data dirs, fsync on), one system at a time so they never share the 2 cores, and drives both
with the same workload: create, set and get N znodes of 100 bytes with 32 requests in
flight (minibroker: 32 trio tasks sharing one pipelined session; ZooKeeper: kazoo's
``*_async`` calls with 32 outstanding), then kill -9 the leader while the client writes.
Reports ops/s, p50/p99 and CPU per phase, the time to a new leader (``mntr``) and to the
next acknowledged write, as a rich table or ``--json``.

minibroker's ensemble needs ``--peers``/``--peer-listen`` on ``minibroker coordinator``;
without them (read from its ``--help``) both systems run standalone and the output says so.
Every process and temp dir is removed on exit, Ctrl-C or failure; members also get SIGKILL
if this process dies (PR_SET_PDEATHSIG). The bench never touches the system's own config.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import structlog
import trio
from rich.console import Console
from rich.table import Table

from bench.zk_compare.cluster import (
    minibroker_ensemble,
    minibroker_has_ensemble,
    zookeeper_ensemble,
    zookeeper_missing,
)
from bench.zk_compare.results import GOALS, PHASES, CpuMeter, SystemResult
from bench.zk_compare.workloads import run_minibroker, run_zookeeper

# --- profiling, output, main ----------------------------------------------------------


@contextlib.contextmanager
def py_spy(out_dir: Path | None, targets: dict[str, int]) -> Iterator[None]:
    """``py-spy record -f raw`` on each target pid while the block runs."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    record = [str(Path(sys.executable).with_name("py-spy")), "record", "-f", "raw", "-r", "100"]
    record.append("--nonblocking")  # do not pause the target: sampling costs enough already
    spies = [
        subprocess.Popen(
            [*record, "--pid", str(pid), "-o", str(out_dir / f"{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in targets.items()
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in spies:
            try:
                spy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def run_system(system: str, nodes: int, args: argparse.Namespace, console: Console) -> SystemResult:
    result = SystemResult(system, "ensemble" if nodes > 1 else "standalone")
    if system == "zookeeper" and (missing := zookeeper_missing()):
        result.note = missing
        return result
    with tempfile.TemporaryDirectory(prefix=f"zk-compare-{system}-") as tmp:
        if system == "minibroker":
            cluster = minibroker_ensemble(Path(tmp), nodes)
        else:
            cluster = zookeeper_ensemble(Path(tmp), nodes, args.zk_heap_mb)
        try:
            console.print(f"[bold]{system}[/]: starting {nodes} node(s) ...")
            started = time.perf_counter()
            cluster.start()
            leader = cluster.wait_leader(timeout_s=60)
            console.print(f"  member {leader} leads after {time.perf_counter() - started:.1f} s")
            meter = CpuMeter([p.pid for p in cluster.procs.values()])
            targets = {f"member{m}": p.pid for m, p in cluster.procs.items()}
            targets["client"] = os.getpid()
            with py_spy(args.profile if system == "minibroker" else None, targets):
                if system == "minibroker":
                    out = trio.run(run_minibroker, cluster, leader, args, meter)
                else:
                    out = run_zookeeper(cluster, leader, args, meter)
            result.phases, result.failover = out
        finally:
            cluster.stop()
    for ph in result.phases:
        console.print(f"  {ph.name}: {ph.ops_per_s:,.0f} ops/s, p99 {ph.p99_ms} ms")
    return result


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value}{unit}"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else "[green]met[/]" if ok else "[red]missed[/]"


def render(results: dict[str, SystemResult], console: Console) -> None:
    cols = [r for r in (results.get("minibroker"), results.get("zookeeper")) if r is not None]
    table = Table(title="coordinator benchmark: minibroker vs Apache ZooKeeper 3.8")
    table.add_column("metric")
    for r in cols:
        table.add_column(f"{r.system} ({r.mode})", justify="right")
    table.add_column("mb / zk", justify="right")
    table.add_column("goal for minibroker")
    busy = max((p.cpu_other_pct for r in cols for p in r.phases), default=0)
    for name in PHASES:
        got = [next((p for p in r.phases if p.name == name), None) for r in cols]
        rates = [None if p is None else p.ops_per_s for p in got]
        mine, theirs = rates[0], rates[1] if len(rates) == 2 else None
        goal = GOALS["reads_per_s" if name == "get" else "writes_per_s"]
        ok = None if mine is None else mine >= goal and (not theirs or mine >= 4 * theirs)
        ratio = f"{mine / theirs:.1f}x" if mine and theirs else "-"
        table.add_row(f"{name} ops/s", *map(_fmt, rates), ratio, f">= {goal:,}, 4x: {_mark(ok)}")
        lat = ["-" if p is None else f"{p.p50_ms} / {p.p99_ms}" for p in got]
        table.add_row("  p50 / p99 ms", *lat, "", "")
        if any(p is not None and p.errors for p in got):
            errs = [", ".join(f"{v} {k}" for k, v in p.errors.items()) if p else "-" for p in got]
            table.add_row("  [red]errors[/]", *errs, "", "")
        cpu = ["-" if p is None else f"{p.cpu_servers_pct} / {p.cpu_client_pct}" for p in got]
        table.add_row("  CPU % servers / client", *cpu, "", "")
    labels = {"new_leader_ms": "new leader after kill -9", "next_ack_ms": "next acked write"}
    for key, label in labels.items():
        vals = [None if r.failover is None else getattr(r.failover, key) for r in cols]
        ok = None if vals[0] is None else vals[0] < GOALS[key] if key in GOALS else None
        target = f"< {GOALS[key]:,} ms: {_mark(ok)}" if ok is not None else ""
        table.add_row(label, *(_fmt(v, " ms") for v in vals), "", target)
    console.print(table)
    if busy > 25:
        console.print(f"[yellow]other processes used up to {busy}% CPU during a phase[/]")
    for r in cols:
        if r.note:
            console.print(f"[yellow]{r.system}[/]: {r.note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=10_000, help="znodes per phase (default 10000)")
    ap.add_argument("--warmup", type=int, default=2_000, help="unreported znodes first (JIT)")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    ap.add_argument("--size", type=int, default=100, help="znode data bytes")
    ap.add_argument(
        "--mode",
        choices=["auto", "ensemble", "standalone"],
        default="auto",
        help="auto: 3-node ensembles if minibroker has --peers, else standalone",
    )

    ap.add_argument("--systems", default="minibroker,zookeeper", help="comma-separated")
    ap.add_argument("--no-failover", action="store_true", help="skip the leader-kill phase")
    ap.add_argument("--zk-heap-mb", type=int, default=512)
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy raw profiles of minibroker's members and client into DIR",
    )
    ap.add_argument("--json", action="store_true", help="print JSON on stdout")
    args = ap.parse_args(argv)
    if min(args.n, args.warmup, args.concurrency) < 1:
        ap.error("-n, --warmup and --concurrency must be positive")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := set(systems) - {"minibroker", "zookeeper"}:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    console = Console(stderr=True)
    # The kill phase makes both clients log every reconnect; the table says what happened.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("kazoo").setLevel(logging.ERROR)
    nodes, note = (1 if args.mode == "standalone" else 3), ""
    try:
        ensemble = args.mode == "standalone" or minibroker_has_ensemble()
    except RuntimeError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False)
        return 1
    if not ensemble:
        if args.mode == "ensemble":
            console.print("error: `minibroker coordinator` has no --peers/--peer-listen yet")
            return 2
        nodes, note = 1, "minibroker has no ensemble yet (no --peers): both ran standalone"
    # Ctrl-C and SIGTERM both end as KeyboardInterrupt (trio delivers it cleanly too), so
    # every finally block runs; SIGINT is re-armed in case a shell started us ignoring it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, SystemResult] = {}
    try:
        for system in systems:
            results[system] = result = run_system(system, nodes, args, console)
            result.note = " ".join(x for x in (result.note, note) if x)
    except KeyboardInterrupt:
        console.print("interrupted: every process and temp dir is cleaned up")
        return 130
    except RuntimeError as exc:  # a member exited or no leader came up: its log tail
        console.print(f"error: {exc}", markup=False, highlight=False)
        return 1
    if args.json:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        report = {"config": config, "nodes": nodes, "goals": GOALS, "cpu_cores": os.cpu_count()}
        report["systems"] = {k: dataclasses.asdict(v) for k, v in results.items()}
        print(json.dumps(report, indent=2))
    else:
        render(results, Console(width=None if sys.stdout.isatty() else 120))
    return 0


def _terminate(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    raise SystemExit(main())
