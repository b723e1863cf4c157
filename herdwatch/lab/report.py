"""The lab's comparison as one self-contained HTML page: inline SVG charts, no script, no network.

Per scenario and signal, naive and herdcache share one chart (time from the driver's onset on a
shared axis, one value axis); each finding is a marked vertical line at its onset.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["html_report"]

SIGNALS = ("miss_ratio", "db_latency_p99", "requests", "db_connections", "upstream_requests")
COLORS = {"naive": "#c0392b", "herdcache": "#2471a3"}
W, H, PAD = 640, 180, 36


def _segments(ps: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points split where samples are missing (a gap over 3x the median step is drawn as a
    gap, not as a straight line across it: a sampler refused by a full server, say)."""
    if len(ps) < 3:
        return [ps]
    steps = sorted(b[0] - a[0] for a, b in itertools.pairwise(ps))
    gap = 3 * max(steps[len(steps) // 2], 1e-9)
    out = [[ps[0]]]
    for a, b in itertools.pairwise(ps):
        if b[0] - a[0] > gap:
            out.append([])
        out[-1].append(b)
    return out


def _chart(name: str, runs: dict[str, Any]) -> str:
    pts = {c: [(t - r.onset, v) for t, v in r.signals.get(name, [])] for c, r in runs.items()}
    allp = [p for ps in pts.values() for p in ps]
    if not allp:
        return f"<p>{html.escape(name)}: no data</p>"
    x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
    y1 = max(max(p[1] for p in allp), 1e-9)

    def sx(x: float) -> float:
        return float(PAD + (x - x0) / max(x1 - x0, 1e-9) * (W - 2 * PAD))

    def sy(y: float) -> float:
        return float(H - PAD - y / y1 * (H - 2 * PAD))

    parts = [f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'role="img" aria-label="{html.escape(name)}">',
             f'<line x1="{PAD}" y1="{H-PAD}" x2="{W-PAD}" y2="{H-PAD}" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H-PAD}" stroke="#888"/>',
             f'<text x="{PAD}" y="{PAD-8}" font-size="12">'
             f'{html.escape(name)} (max {y1:.3g})</text>',
             f'<text x="{W-PAD}" y="{H-8}" font-size="11" text-anchor="end">s from onset '
             f'({x0:.0f} .. {x1:.0f})</text>',
             f'<line x1="{sx(0):.1f}" y1="{PAD}" x2="{sx(0):.1f}" y2="{H-PAD}" stroke="#999" '
             f'stroke-dasharray="2,3"/>']  # fmt: skip
    for client, ps in pts.items():
        for seg in _segments(ps):
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in seg)
            parts.append(f'<polyline class="series {client}" fill="none" '
                         f'stroke="{COLORS[client]}" stroke-width="1.5" '
                         f'points="{line}"/>')  # fmt: skip
        for k, f in enumerate(runs[client].findings):
            x = sx(f["onset"] - runs[client].onset)
            parts.append(f'<line class="finding" x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" '
                         f'y2="{H-PAD}" stroke="{COLORS[client]}" stroke-width="2"/>'
                         f'<text x="{x + 3:.1f}" y="{PAD + 12 + 12 * k}" font-size="11" '
                         f'fill="{COLORS[client]}">'
                         f'{html.escape(f["signature"])}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def html_report(results: Sequence[dict[str, Any]]) -> str:
    """The page for `lab compare` results (see the module docstring)."""
    body = []
    for r in results:
        runs = r["runs"]
        rows = "".join(
            f"<tr><td>{c}</td><td>{v.loads_per_expiry:.2f}</td><td>{v.duplicate_loads}</td>"
            f"<td>{v.peak_pg_connections:.0f}</td><td>{v.latency_ms['p50']}</td>"
            f"<td>{v.latency_ms['p99']}</td><td>{v.latency_ms['max']}</td><td>{v.errors}</td>"
            f"<td>{html.escape(', '.join(f['signature'] for f in v.findings) or 'none')}</td></tr>"
            for c, v in runs.items()
        )
        exp = ", ".join(f"{k}: {'ok' if v else 'FAILED'}" for k, v in r["expectations"].items())
        body.append(
            f"<section><h2>{html.escape(r['scenario'])} ({html.escape(r['signature'])})</h2>"
            "<table><tr><th>client</th><th>loads per expiry</th><th>duplicate loads</th>"
            "<th>peak PG conns</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>errors</th>"
            f"<th>findings</th></tr>{rows}</table><p>{html.escape(exp)}; duplicate loads saved "
            f"{r['duplicate_loads_saved']:.1%}</p>"
            + "".join(
                _chart(s, runs) for s in SIGNALS if any(v.signals.get(s) for v in runs.values())
            )
            + "</section>"
        )
    legend = " ".join(f'<span style="color:{c}">&#9632; {n}</span>' for n, c in COLORS.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>herdwatch lab</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}svg{display:block;margin:6px 0}</style>"
        f"</head><body><h1>herdwatch lab</h1><p>{legend}</p>{''.join(body)}</body></html>"
    )
