"""The report writers on a synthetic run: history.json round trip, report.html, summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from chaos.analysis import InjectedFault, failovers, percentile, timeline
from chaos.checker import AnomalyKind, check
from chaos.history import Commit, QueueHistory
from chaos.report_html import PLOTLY_MISSING, write_html
from chaos.report_terminal import print_summary
from chaos.result import ChaosResult, load_history
from chaos.schedule import FaultKind, PlannedFault


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def synthetic(lose_one: bool = False) -> ChaosResult:
    """Two partitions, 40 sends over 20 s, broker 2 (leader of partition 1) killed at 8 s
    and back at 11 s: partition 1 has no ack from 8 s to 10.5 s; a group member reads
    and commits everything; a final read. ``lose_one``: one value is never read."""
    clock = Clock()
    h = QueueHistory(clock)
    logs: dict[int, list[bytes]] = {0: [], 1: []}
    for i in range(40):
        clock.now = i * 0.5
        p = i % 2
        if p == 1 and 8 <= clock.now < 10.5:
            continue  # partition 1 is unavailable
        value = b"r-p0-%08d" % i
        handle = h.send(0, "t", b"k", value)
        clock.now += 0.01 + 0.001 * i
        h.send_ok(handle, partition=p, offset=len(logs[p]))
        logs[p].append(value)
    handle = h.send(1, "t", b"k", b"r-p1-unknown")
    h.send_unknown(handle)
    handle = h.send(1, "t", b"k", b"r-p1-failed")
    h.send_failed(handle)
    clock.now = 20.0
    records = {("t", p): list(enumerate(vals)) for p, vals in logs.items()}
    if lose_one:  # nobody ever reads partition 0's third-to-last record
        records[("t", 0)] = records[("t", 0)][:-3] + records[("t", 0)][-2:]
    h.rebalance(100, records.keys(), group="g")
    h.poll(100, 19.5, records)
    h.commit(100, "g", 20.0, {tp: recs[-1][0] + 1 for tp, recs in records.items()})
    clock.now = 21.0
    h.final_read(1000, 20.5, records)
    events = h.history()
    fault = InjectedFault(0, "kill", 2, "broker-2", 8.0, 11.0, 12.5, {0: 1, 1: 2})
    planned = [PlannedFault(0, 8.0, FaultKind.KILL, 2, 3.0)]
    return ChaosResult(
        options={"seed": 42, "faults": ["kill"], "duration_s": 20},
        target="process cluster /tmp/x",
        started_wall=1_700_000_000.0,
        ended_at=21.0,
        planned=planned,
        faults=[fault],
        events=events,
        report=check(events),
        workers={"producer-0": {"acked": 38}},
        notes=["a note"],
    )


def test_failover_is_the_time_to_the_next_ack_of_each_led_partition() -> None:
    result = synthetic()
    [f] = failovers(result.faults, result.events)
    assert (f.fault, f.partition, f.leader) == (0, 1, 2)
    assert f.seconds == pytest.approx(10.5 + 0.01 + 0.001 * 21 - 8.0)
    assert f.longest_gap_s == f.seconds  # the acks after it come every second
    assert result.faults[0].led == [1]


def test_timeline_buckets_acks_failures_and_latency() -> None:
    buckets = timeline(synthetic().events, end=21.0)
    assert len(buckets) == 21
    assert sum(b.acked for b in buckets) == 38
    assert sum(b.failed for b in buckets) == 1 and sum(b.unknown for b in buckets) == 1
    assert buckets[9].acked == 1  # only partition 0 acknowledged during the fault
    assert buckets[0].p50_ms == pytest.approx(10.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


def test_history_json_round_trip(tmp_path: Path) -> None:
    result = synthetic()
    path = tmp_path / "history.json"
    result.write_json(path)
    doc, events = load_history(path)
    assert events == list(result.events)
    assert any(isinstance(e, Commit) for e in events)
    assert doc["verdict"] == "valid"
    assert doc["options"]["seed"] == 42
    assert doc["faults"][0]["leaders"] == {"0": 1, "1": 2}
    assert InjectedFault.from_json(doc["faults"][0]) == result.faults[0]
    assert doc["failovers"][0]["partition"] == 1
    assert doc["result"]["stats"]["acked"] == 38
    assert doc["result"]["stats"]["commits"] == 1
    assert check(events) == result.report


def test_a_lost_write_makes_the_verdict_invalid(tmp_path: Path) -> None:
    result = synthetic(lose_one=True)
    assert result.verdict == "invalid" and result.exit_code == 1
    assert result.report is not None
    assert result.report.counts[AnomalyKind.LOST_WRITE] == 1
    assert result.report.counts[AnomalyKind.GROUP_SKIP] == 1  # the group went past it
    result.write_json(tmp_path / "h.json")
    assert json.loads((tmp_path / "h.json").read_text())["verdict"] == "invalid"
    no_check = synthetic()
    no_check.report, no_check.error = None, "ChaosRunError: final read stuck"
    assert (no_check.verdict, no_check.exit_code) == ("unknown", 2)


def test_summary_shows_the_numbers() -> None:
    console = Console(record=True, width=160)
    print_summary(synthetic(), console, Path("out"), "out/report.html")
    text = console.export_text()
    assert "seed 42" in text
    assert "broker-2" in text and "kill" in text
    for row in ("attempted", "acknowledged", "failed", "unknown"):
        assert row in text
    assert "40" in text and "38" in text  # attempted, acknowledged
    for kind in AnomalyKind:
        assert str(kind) in text
    assert "2.53" in text  # partition 1's failover
    assert "note: a note" in text
    assert "verdict: VALID" in text
    console = Console(record=True, width=160)
    print_summary(synthetic(lose_one=True), console)
    text = console.export_text()
    assert "verdict: INVALID" in text and "never read" in text


def test_report_html_is_self_contained(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    assert write_html(synthetic(), path) == str(path)
    page = path.read_text()
    assert "<script src=" not in page.replace('<script src="data:', "")  # nothing to fetch
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js itself is inline
    assert "#0 kill broker-2" in page
    assert "acknowledged writes per second" in page
    assert "verdict: VALID" in page


def test_report_html_without_plotly_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    path = tmp_path / "report.html"
    assert write_html(synthetic(), path) == PLOTLY_MISSING
    assert "pip install 'minibroker[chaos]'" in PLOTLY_MISSING
    assert not path.exists()
