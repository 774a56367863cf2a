"""The summary a chaos run prints: faults with their times, records, anomalies per kind
(zeros shown: a clean run says so kind by kind), failover times, notes and the verdict."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from chaos.analysis import percentile
from chaos.checker import AnomalyKind
from chaos.result import ChaosResult

__all__ = ["print_summary"]

_VERDICT_STYLE = {"valid": "bold green", "invalid": "bold red", "unknown": "bold yellow"}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _faults_table(result: ChaosResult) -> Table:
    table = Table(title="Faults injected", title_justify="left")
    for col in ("#", "kind", "target", "at", "healed", "held", "recovered after", "led"):
        table.add_column(col, justify="right" if col in ("#", "at", "healed", "held") else "left")
    for f in result.faults:
        held = None if f.healed_at is None else f.healed_at - f.started_at
        recovered = (
            None if f.recovered_at is None or f.healed_at is None else f.recovered_at - f.healed_at
        )
        table.add_row(
            str(f.index),
            f.kind,
            f.target or "-",
            _s(f.started_at),
            _s(f.healed_at),
            _s(held),
            f.error or _s(recovered),
            ", ".join(map(str, f.led)) or "-",
        )
    if not result.faults:
        table.add_row("-", "none", "", "", "", "", "", "")
    return table


def _records_table(result: ChaosResult) -> Table:
    table = Table(title="Records", title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    if result.report is None:
        table.add_row("(no check)", "-")
        return table
    s = result.report.stats
    for name, value in (
        ("attempted", s.sends),
        ("acknowledged", s.acked),
        ("failed", s.failed),
        ("unknown", s.unknown),
        ("  of them read", s.unknown_read),
        ("polled by the group", s.records_polled),
        ("group commits", s.commits),
        ("final read", s.records_final),
    ):
        table.add_row(name, str(value))
    return table


def _anomalies_table(result: ChaosResult) -> Table:
    table = Table(title="Anomalies", title_justify="left")
    table.add_column("kind")
    table.add_column("count", justify="right")
    table.add_column("first example")
    report = result.report
    for kind in AnomalyKind:
        if report is None:
            table.add_row(str(kind), "-", "")
            continue
        n = report.counts[kind]
        example = str(report.examples[kind][0]) if report.examples[kind] else ""
        table.add_row(str(kind), f"[red]{n}[/red]" if n else "0", example)
    if report is not None:
        n = report.workload_error_count
        first = str(report.workload_errors[0]) if report.workload_errors else ""
        table.add_row("workload errors", f"[red]{n}[/red]" if n else "0", first)
    return table


def _failover_table(result: ChaosResult) -> Table | None:
    rows = result.failovers()
    if not rows:
        return None
    table = Table(title="Failover of the partitions a faulted broker led", title_justify="left")
    for col in ("fault", "kind", "partition", "old leader", "next ack (s)", "longest gap (s)"):
        table.add_column(col, justify="right")
    kinds = {f.index: f.kind for f in result.faults}
    for row in rows:
        table.add_row(
            f"#{row.fault}", kinds.get(row.fault, ""), str(row.partition), str(row.leader),
            "never" if row.seconds is None else f"{row.seconds:.2f}",
            "-" if row.longest_gap_s is None else f"{row.longest_gap_s:.2f}",
        )  # fmt: skip
    done = sorted(r.seconds for r in rows if r.seconds is not None)
    gaps = sorted(r.longest_gap_s for r in rows if r.longest_gap_s is not None)
    if done:
        table.caption = (
            f"next ack: median {percentile(done, 50):.2f}s, max {done[-1]:.2f}s; "
            + (
                f"longest gap: median {percentile(gaps, 50):.2f}s, max {gaps[-1]:.2f}s; "
                if gaps
                else ""
            )
            + f"{len(done)} partition failovers"
        )
    return table


def print_summary(
    result: ChaosResult, console: Console, out_dir: Path | None = None, html: str | None = None
) -> None:
    """``html``: what became of report.html (its path, or why it was not written)."""
    opts = result.options
    console.print()
    console.print(
        f"[bold]minibroker chaos[/bold] seed {opts.get('seed')} on {result.target}: "
        f"{result.ended_at:.0f}s, faults {', '.join(opts.get('faults', []))}",
        highlight=False,
    )
    console.print(_faults_table(result))
    console.print(_records_table(result))
    console.print(_anomalies_table(result))
    failover = _failover_table(result)
    if failover is not None:
        console.print(failover)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if result.error:
        console.print(f"[red]error:[/red] {result.error}", highlight=False)
    if out_dir is not None:
        console.print(f"history: {out_dir / 'history.json'}", highlight=False)
    if html is not None:
        console.print(f"picture: {html}", highlight=False)
    style = _VERDICT_STYLE[result.verdict]
    console.print(f"verdict: [{style}]{result.verdict.upper()}[/{style}]")
