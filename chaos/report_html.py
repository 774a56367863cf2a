"""``report.html``: throughput and latency over time with every fault marked, drawn with
plotly and written with the whole plotly.js inlined, so it opens without a network.

plotly is an optional dependency (``pip install 'minibroker[chaos]'``); without it the run
still checks and writes history.json, and says how to get the picture.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from chaos.result import ChaosResult

__all__ = ["PLOTLY_MISSING", "write_html"]

PLOTLY_MISSING = (
    "report.html not written: plotly is not installed (pip install 'minibroker[chaos]')"
)
_FAULT_COLORS = {
    "kill": "rgba(214, 39, 40, 0.18)",
    "pause": "rgba(255, 127, 14, 0.18)",
    "partition": "rgba(148, 103, 189, 0.18)",
    "restart": "rgba(44, 160, 44, 0.18)",
    "coordinator-kill": "rgba(140, 86, 75, 0.22)",
}


def _figure(result: ChaosResult, go: Any, make_subplots: Any) -> Any:
    buckets = result.timeline()
    width = buckets[1].start - buckets[0].start if len(buckets) > 1 else 1.0
    xs = [b.start + width / 2 for b in buckets]  # a second's count drawn at its middle
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("acknowledged writes per second", "acknowledgement latency (ms)"),
    )
    fig.add_trace(go.Scatter(x=xs, y=[b.acked for b in buckets], name="acked/s"), row=1, col=1)
    fig.add_trace(
        go.Bar(x=xs, y=[b.unknown for b in buckets], name="unknown/s", marker_color="orange"),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=xs, y=[b.failed for b in buckets], name="failed/s", marker_color="red"),
        row=1,
        col=1,
    )
    for label, attr in (("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms")):
        fig.add_trace(
            go.Scatter(x=xs, y=[getattr(b, attr) for b in buckets], name=f"latency {label}"),
            row=2,
            col=1,
        )
    for f in result.faults:
        end = f.healed_at if f.healed_at is not None else f.started_at + 0.5
        label = f"#{f.index} {f.kind} {f.target}" + (" (error)" if f.error else "")
        for row in (1, 2):
            labelled = (
                {"annotation_text": label, "annotation_position": "top left"} if row == 1 else {}
            )
            fig.add_vrect(
                x0=f.started_at,
                x1=max(end, f.started_at + 0.3),
                fillcolor=_FAULT_COLORS.get(f.kind, "rgba(0,0,0,0.15)"),
                line_width=0,
                row=row,
                col=1,
                **labelled,
            )
        if f.recovered_at is not None:
            fig.add_vline(x=f.recovered_at, line_dash="dot", line_color="gray", row=1, col=1)
    fig.update_xaxes(title_text="seconds since the start of the run", row=2, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    opts = result.options
    fig.update_layout(
        title=(
            f"minibroker chaos, seed {opts.get('seed')}: {result.verdict.upper()} "
            f"({', '.join(opts.get('faults', []))})"
        ),
        barmode="stack",
        height=760,
        legend={"orientation": "h", "y": -0.12},
    )
    return fig


def _summary_html(result: ChaosResult) -> str:
    rows = []
    if result.report is not None:
        for kind, n in result.report.counts.items():
            rows.append(f"<tr><td>{html.escape(str(kind))}</td><td>{n}</td></tr>")
    faults = "".join(
        f"<li>#{f.index} {html.escape(f.kind)} {html.escape(f.target)} at {f.started_at:.1f}s"
        + (f", healed {f.healed_at:.1f}s" if f.healed_at is not None else "")
        + (f" ({html.escape(f.error)})" if f.error else "")
        + "</li>"
        for f in result.faults
    )
    return (
        f"<h2>verdict: {result.verdict.upper()}</h2>"
        f"<p>{html.escape(result.target)}</p>"
        f"<table border=1 cellpadding=4><tr><th>anomaly</th><th>count</th></tr>{''.join(rows)}"
        f"</table><ul>{faults}</ul>"
    )


def write_html(result: ChaosResult, path: Path) -> str:
    """Writes ``path``; returns it, or the reason it was not written."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        return PLOTLY_MISSING
    fig = _figure(result, go, make_subplots)
    page = fig.to_html(include_plotlyjs=True, full_html=True)
    page = page.replace("<body>", f"<body>{_summary_html(result)}", 1)
    path.write_text(page)
    return str(path)
