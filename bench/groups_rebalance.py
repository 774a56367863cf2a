"""Rebalance time of `make bench-groups`: 10 members over 100 partitions, eager (range)
against cooperative-sticky, while a producer writes at a fixed rate.

Per strategy one group of 10 member processes (``bench.groups_member flow``) settles;
then each round is two scenarios on that group, each measured from the members' logs:

- join: an 11th member starts; the rebalance starts at its first ``poll()`` (which
  sends its JoinGroup);
- leave: the oldest member is closed (SIGTERM -> ``close()`` -> LeaveGroup), back to 10
  members; the rebalance starts when its ``close()`` begins.

The producer is a process of its own (``bench.groups_member produce``), so that neither
the orchestrator nor a member slows the flow; it logs any tick of its schedule it
missed by over 50 ms (``producer_late_max_s``: a gap every partition would show).

The rebalance ends at the last listener callback of any member (cooperative: that of the
second, follow-up rebalance). Before each scenario the group has run settled for
``--baseline`` seconds plus a random part of the heartbeat interval (the members
heartbeat in step, so where in that period a scenario starts decides how soon they hear
of it); the gaps between polls in the last ``--baseline`` seconds are the baseline. What
is reported:

- ``total_s``: from the start to the last callback;
- per partition, its stall: the longest gap between two polls (by whichever member)
  that returned records of it, among the gaps that overlap the rebalance; split into
  partitions that kept their owner and those that moved; the baseline is each
  partition's longest gap in the settled window before;
- per member that stayed: ``gap_s``, the longest gap between two of its polls that
  returned any records, overlapping the rebalance (how long it stopped consuming), and,
  when it was revoked everything it owned (eager), ``revoke_to_records_s``: from that
  revocation to its first records after its last assignment;
- ``moved``: partitions whose owner changed; ``revoked``: partitions the members that
  stayed were revoked (eager: all of theirs).
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.groups_members import FlowGroup, MemberProc

MEMBERS = 10
SETTLE_TIMEOUT_S = 120.0
QUIET_S = 1.0
STRATEGIES = ("range", "cooperative-sticky")
DEFAULT_HEARTBEAT_MS = 3_000  # the client's heartbeat_interval_ms


def spread(values: Iterable[float]) -> dict[str, float] | None:
    """min / median / max, rounded to the millisecond (None for no values)."""
    vs = sorted(values)
    if not vs:
        return None
    return {
        "min": round(vs[0], 3),
        "median": round(statistics.median(vs), 3),
        "max": round(vs[-1], 3),
    }


def _max_gap(times: Sequence[float], start: float, end: float) -> float | None:
    """The longest gap between consecutive ``times`` that overlaps [start, end]."""
    gaps = [b - a for a, b in itertools.pairwise(times) if b > start and a < end]
    return max(gaps) if gaps else None


def _record_times(members: Iterable[MemberProc], lo: float, hi: float) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for m in members:
        for e in m.entries:
            if e["e"] == "records" and lo <= e["at"] <= hi:
                for p in e["p"]:
                    out.setdefault(int(p), []).append(e["at"])
    return {p: sorted(ts) for p, ts in out.items()}


def _revoked_parts(entries: Iterable[dict[str, Any]]) -> set[int]:
    return {p for e in entries for p in e["partitions"]}


def _member_result(
    m: MemberProc, before: set[int], after: set[int], start: float, end: float, hi: float
) -> dict[str, Any]:
    entries = [e for e in m.entries if start <= e.get("at", 0.0) <= hi]
    revoked = [e for e in entries if e["e"] in ("revoked", "lost") and e["partitions"]]
    assigned = [e for e in entries if e["e"] == "assigned"]
    own_polls = [e["at"] for e in m.entries if e["e"] == "records" and e["at"] <= hi]
    gap = _max_gap(own_polls, start, end)
    result: dict[str, Any] = {
        "member": m.index,
        "before": len(before),
        "after": len(after),
        "revoked": sum(len(e["partitions"]) for e in revoked),
        "added": len(after - before),
        "assignments": len(assigned),
        "gap_s": round(gap, 3) if gap is not None else None,
    }
    if before and before <= _revoked_parts(revoked) and assigned:
        # It revoked all it owned (eager): from then until records flowed again.
        last_assign = assigned[-1]["at"]
        first_records = next(
            (e["at"] for e in m.entries if e["e"] == "records" and e["at"] > last_assign), None
        )
        if first_records is not None:
            result["revoke_to_records_s"] = round(first_records - revoked[0]["at"], 3)
    return result


def analyse(
    group: FlowGroup,
    kind: str,
    start: float,
    before: dict[int, int],
    settled_at: float,
    baseline_s: float,
    newcomer: MemberProc | None,
    leaver: MemberProc | None,
    producer: MemberProc,
) -> dict[str, Any]:
    after = group.owners()
    callbacks = [
        e["at"]
        for m in group.all
        for e in m.entries
        if e["e"] in ("assigned", "revoked", "lost") and start <= e["at"] <= settled_at
    ]
    end = max(callbacks, default=start)
    lo = start - baseline_s
    times = _record_times(group.all, lo, settled_at)
    # Per partition, its longest gap while settled: what a stall compares with.
    baseline = [
        g
        for ts in times.values()
        if (g := _max_gap([t for t in ts if t <= start], lo, start)) is not None
    ]
    moved = {p for p in after if before.get(p) != after[p]}
    stall = {p: _max_gap(times.get(p, []), start, end) for p in after}
    stayed = [m for m in group.active if m is not newcomer]
    members = []
    for m in stayed:
        own_before = {p for p, i in before.items() if i == m.index}
        own_after = {p for p, i in after.items() if i == m.index}
        members.append(_member_result(m, own_before, own_after, start, end, settled_at))
    result: dict[str, Any] = {
        "scenario": kind,
        "members_after": len(group.active),
        "total_s": round(end - start, 3),
        "moved": len(moved),
        "revoked": sum(r["revoked"] for r in members),
        "baseline_gaps": [round(g, 3) for g in baseline],
        "stalls": {
            "kept": [round(s, 3) for p, s in stall.items() if p not in moved and s is not None],
            "moved": [round(s, 3) for p, s in stall.items() if p in moved and s is not None],
        },
        "member_gap_s": spread(r["gap_s"] for r in members if r["gap_s"] is not None),
        "member_revoke_to_records_s": spread(
            r["revoke_to_records_s"] for r in members if "revoke_to_records_s" in r
        ),
        "members": members,
    }
    producer.refresh()
    late = [e["s"] for e in producer.entries if e["e"] == "late" and lo <= e["at"] <= settled_at]
    result["producer_late_max_s"] = max(late, default=0.0)
    if newcomer is not None:
        first = newcomer.first("records")
        result["newcomer_first_records_s"] = round(first["at"] - start, 3) if first else None
    if leaver is not None:
        result["leaver"] = leaver.index
    return result


def run_strategy(
    options: dict[str, str],
    partitions: int,
    args: Any,
    producer: MemberProc,
    workdir: Path,
    console: Console,
) -> dict[str, Any]:
    strategy = options["strategy"]
    group = FlowGroup(workdir, partitions, options)
    # Members heartbeat in step (each resets its timer when a join completes): start each
    # scenario at a random point of that period (module doc).
    rng = random.Random(args.seed)
    heartbeat_s = (args.heartbeat_interval_ms or DEFAULT_HEARTBEAT_MS) / 1000
    scenarios: list[dict[str, Any]] = []
    try:
        for _ in range(MEMBERS):
            group.spawn()
        settled = group.wait_settled(QUIET_S, SETTLE_TIMEOUT_S)
        console.print(f"{strategy}: {MEMBERS} members settled")
        rounds = args.rounds
        for n in range(rounds):
            for kind in ("join", "leave"):
                at = settled + args.baseline + rng.uniform(0, heartbeat_s)
                time.sleep(max(0.0, at - time.monotonic()))  # the baseline window
                before = group.owners()
                newcomer = leaver = None
                if kind == "join":
                    newcomer = group.spawn()
                    start = newcomer.wait_for("first_poll", SETTLE_TIMEOUT_S)["at"]
                else:
                    leaver = group.active[0]
                    group.retire(leaver)
                    start = leaver.wait_for("close_begin", SETTLE_TIMEOUT_S)["at"]
                settled = group.wait_settled(QUIET_S, SETTLE_TIMEOUT_S)
                r = analyse(
                    group, kind, start, before, settled, args.baseline, newcomer, leaver, producer
                )
                r["round"] = n + 1
                scenarios.append(r)
                console.print(
                    f"{strategy} round {n + 1}/{rounds} {kind}: {r['total_s']:.2f} s, "
                    f"{r['moved']} moved, {r['revoked']} revoked"
                )
    finally:
        group.stop()
    closed = [m.first("closed") for m in group.all]
    return {
        "strategy": strategy,
        "scenarios": scenarios,
        "member_cpu_s": spread(c["cpu_s"] for c in closed if c is not None),
        "member_max_rss_mib": spread(c["max_rss_mib"] for c in closed if c is not None),
    }


def rebalance_bench(
    bootstrap: str,
    topic: str,
    partitions: int,
    args: Any,
    workdir: Path,
    console: Console,
) -> dict[str, Any]:
    """Both strategies, one after the other, while one producer process writes."""
    flow = {
        "bootstrap": bootstrap,
        "topic": topic,
        "rate": str(args.rate),
        "partitions": str(partitions),
        "record-size": str(args.record_size),
    }
    producer = MemberProc.start(-1, "produce", workdir / "producer.jsonl", flow)
    began = producer.wait_for("started", SETTLE_TIMEOUT_S)["at"]
    results = []
    try:
        for strategy in STRATEGIES:
            options = {"bootstrap": bootstrap, "topic": topic, "group": f"g-{strategy}"}
            options["strategy"] = strategy
            if args.heartbeat_interval_ms:
                options["heartbeat-interval-ms"] = str(args.heartbeat_interval_ms)
            results.append(run_strategy(options, partitions, args, producer, workdir, console))
    finally:
        producer.terminate()
        producer.wait()
    closed = producer.wait_for("closed", 1)
    return {
        "partitions": partitions,
        "members": MEMBERS,
        "rate": args.rate,
        "heartbeat_interval_ms": args.heartbeat_interval_ms or DEFAULT_HEARTBEAT_MS,
        "produced": closed["records"],
        "produced_per_sec": round(closed["records"] / (closed["at"] - began), 1),
        "producer_cpu_s": closed["cpu_s"],
        "strategies": results,
    }
