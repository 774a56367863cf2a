"""The tables `make bench-groups` prints (bench/groups_bench.py): min / median / max of
each measurement over its rounds, or pooled over members or partitions where a row says
so. What each number means is in bench/groups_rebalance.py and docs/groups-bench.md."""

from __future__ import annotations

import statistics
from typing import Any

from rich.table import Table

from bench.groups_rebalance import spread


def cell(s: dict[str, float] | None, fmt: str = "{:.2f}") -> str:
    if s is None:
        return "-"
    return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def rebalance_tables(results: dict[str, Any]) -> list[Table]:
    what = (
        f"{results['members']} members over {results['partitions']} partitions, "
        f"{results['rate']:,} records/s flowing, heartbeat every "
        f"{results['heartbeat_interval_ms']} ms; min / median / max"
    )
    totals = Table(title=f"Rebalance: {what} over rounds")
    cols = ("strategy", "scenario", "total s", "moved", "revoked", "newcomer's records s")
    for col in (*cols, "producer late s"):
        totals.add_column(col, justify="right")
    stops = Table(
        title=f"Rebalance, how long consumption stopped (s): {what} over the members that "
        "stayed (member columns) or over partitions, all rounds"
    )
    for col in (
        "strategy",
        "scenario",
        "member: longest poll gap",
        "member: revoke-all -> records",
        "kept partition stall",
        "moved partition stall",
        "settled partition gap",
    ):
        stops.add_column(col, justify="right")
    for st in results["strategies"]:
        for kind in ("join", "leave"):
            rs = [r for r in st["scenarios"] if r["scenario"] == kind]
            members = [m for r in rs for m in r["members"]]
            newcomer = [
                r["newcomer_first_records_s"] for r in rs if r.get("newcomer_first_records_s")
            ]
            totals.add_row(
                st["strategy"],
                kind,
                cell(spread(r["total_s"] for r in rs)),
                cell(spread(r["moved"] for r in rs), "{:.0f}"),
                cell(spread(r["revoked"] for r in rs), "{:.0f}"),
                cell(spread(newcomer)),
                cell(spread(r["producer_late_max_s"] for r in rs)),
            )
            stops.add_row(
                st["strategy"],
                kind,
                cell(spread(m["gap_s"] for m in members if m["gap_s"] is not None)),
                cell(
                    spread(m["revoke_to_records_s"] for m in members if "revoke_to_records_s" in m)
                ),
                cell(spread(s for r in rs for s in r["stalls"]["kept"])),
                cell(spread(s for r in rs for s in r["stalls"]["moved"])),
                cell(spread(s for r in rs for s in r["baseline_gaps"])),
            )
    return [totals, stops]


def commit_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="Commits from one consumer, acknowledged when replicated (RF 3)")
    for col in ("api", "partitions per commit", "commits/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for api, width in (("commit()", 1), ("commit()", 10), ("commit_async()", 1)):
        rs = [r for r in runs if r["api"] == api and r["partitions"] == width]
        p50 = [r["latency_ms_p50"] for r in rs if "latency_ms_p50" in r]
        p99 = [r["latency_ms_p99"] for r in rs if "latency_ms_p99" in r]
        table.add_row(
            api,
            str(width),
            cell(spread(r["commits_per_sec"] for r in rs), "{:,.0f}"),
            f"{statistics.median(p50):.1f}" if p50 else "-",
            f"{statistics.median(p99):.1f}" if p99 else "-",
        )
    return table


def consume_table(results: dict[str, Any]) -> Table:
    records = results["runs"][0]["records"]
    table = Table(title=f"Consume {records:,} records of 6 partitions (records/s)")
    for col in (
        "consumers",
        "subscribe -> last record",
        "first assignment -> last",
        "assigned after s",
    ):
        table.add_column(col, justify="right")
    for members in (1, 3):
        rs = [r for r in results["runs"] if r["members"] == members]
        table.add_row(
            "1 consumer" if members == 1 else f"group of {members}",
            cell(spread(r["records_per_sec"] for r in rs), "{:,.0f}"),
            cell(spread(r["records_per_sec_after_assigned"] for r in rs), "{:,.0f}"),
            cell(spread(r["assigned_s"] for r in rs)),
        )
    return table
