"""What a notification says: the text and HTML of a mail, its SVG chart, Slack blocks.

Formats only: every number comes from the Notification (the finding, its evidence, its
recommendations and the timeline the book captured around the onset).
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from typing import Any

from herdwatch.alert._book import Notification

__all__ = ["chart_svg", "mail_html", "mail_text", "slack_payload"]

_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _time(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _subject(a: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in a["subject"].items()) or "the whole fleet"


def _evidence_lines(ev: Any, indent: str = "  ") -> list[str]:
    out = []
    if isinstance(ev, dict):
        for k, v in ev.items():
            if isinstance(v, dict):
                parts = ", ".join(
                    f"{kk} {_num(vv)}" for kk, vv in v.items() if not isinstance(vv, dict | list)
                )
                out.append(f"{indent}{k}: {parts}")
            elif isinstance(v, list):
                shown = ", ".join(_num(x) for x in v[:8] if not isinstance(x, dict | list))
                out.append(f"{indent}{k}: {shown}{' ...' if len(v) > 8 else ''}")
            else:
                out.append(f"{indent}{k}: {_num(v)}")
    return out


def mail_text(n: Notification) -> str:
    """The plain-text part: per alert its summary, times, evidence, timeline and fixes."""
    lines = [n.title, ""]
    for a in n.alerts:
        lines.append(f"{a['signature']} on {_subject(a)} ({a['severity']})")
        lines.append(f"  {a['summary']}")
        lines.append(f"  onset {_time(a['onset'])}, last seen {_time(a['end'])}")
        if n.kind == "resolved":
            lines.append(f"  resolved (herd over at {_time(a['end'])})")
        lines.append("evidence:")
        lines += _evidence_lines(a.get("evidence", {}))
        for s in a.get("timeline", []):
            vals = [v for v in s["v"] if v is not None]
            if vals:
                lines.append(
                    f"timeline {s['name']}: min {_num(min(vals))}, "
                    f"max {_num(max(vals))} ({len(vals)} samples around the onset)"
                )
        if a.get("recommendations"):
            lines.append("recommendations:")
            for i, r in enumerate(a["recommendations"], 1):
                lines.append(f"  {i}. {r.get('action', '')}: {r.get('detail', '')}")
                for key in ("config", "option", "command"):
                    if r.get(key):
                        lines.append(f"     {key}: {r[key]}")
        lines.append(f"id {a['id']}")
        lines.append("")
    lines.append(f"idempotency key {n.key}")
    return "\n".join(lines) + "\n"


def chart_svg(series: list[dict[str, Any]], onset: float, *, width: int = 640) -> str:
    """An SVG line chart: each signal scaled to its own range, the onset as a dashed line."""
    height, pad = 40 * max(1, len(series)) + 60, 30
    ts = [t for s in series for t in s["t"]]
    if not ts:
        return ""
    t0, t1 = min(ts), max(ts)
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return float(pad + (t - t0) / span * (width - 2 * pad))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    plot_h = height - 2 * pad
    for i, s in enumerate(series):
        pts = [(t, v) for t, v in zip(s["t"], s["v"], strict=False) if v is not None]
        if not pts:
            continue
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        rng = (hi - lo) or 1.0
        color = _COLORS[i % len(_COLORS)]
        path = " ".join(
            f"{'M' if j == 0 else 'L'}{x(t):.1f},{pad + plot_h - (v - lo) / rng * plot_h:.1f}"
            for j, (t, v) in enumerate(pts)
        )
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        label = html.escape(f"{s['name']} ({_num(lo)} .. {_num(hi)})")
        parts.append(f'<text x="{pad}" y="{14 + 13 * i}" fill="{color}">{label}</text>')
    if t0 <= onset <= t1:
        xo = x(onset)
        parts.append(
            f'<line x1="{xo:.1f}" y1="{pad}" x2="{xo:.1f}" y2="{height - pad}" '
            'stroke="#000" stroke-dasharray="4,3"/>'
        )
        parts.append(f'<text x="{xo + 3:.1f}" y="{height - pad + 12}">onset</text>')
    parts.append(f'<text x="{pad}" y="{height - 6}">{html.escape(_time(t0))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def mail_html(n: Notification, chart_cids: dict[str, str]) -> str:
    """The HTML part; `chart_cids` maps an alert id to the Content-ID of its chart."""
    color = "#2ca02c" if n.kind == "resolved" else "#d62728"
    out = [
        f'<html><body style="font-family:sans-serif"><h2 style="color:{color}">'
        f"{html.escape(n.title)}</h2>"
    ]
    for a in n.alerts:
        out.append(
            f"<h3>{html.escape(a['signature'])} on {html.escape(_subject(a))} "
            f"({html.escape(a['severity'])})</h3>"
        )
        out.append(f"<p>{html.escape(a['summary'])}</p>")
        out.append(f"<p>onset {_time(a['onset'])}, last seen {_time(a['end'])}</p>")
        cid = chart_cids.get(a["id"])
        if cid:
            out.append(f'<p><img src="cid:{cid}" alt="signals around the onset"/></p>')
        out.append("<h4>Evidence</h4><ul>")
        out += [f"<li>{html.escape(line.strip())}</li>" for line in _evidence_lines(a["evidence"])]
        out.append("</ul>")
        if a.get("recommendations"):
            out.append("<h4>Recommendations</h4><ol>")
            for r in a["recommendations"]:
                out.append(
                    f"<li><b>{html.escape(str(r.get('action', '')))}</b>: "
                    f"{html.escape(str(r.get('detail', '')))}"
                )
                for key in ("config", "command"):
                    if r.get(key):
                        out.append(f"<pre>{html.escape(str(r[key]))}</pre>")
                out.append("</li>")
            out.append("</ol>")
    out.append(f"<p style='color:#888'>idempotency key {html.escape(n.key)}</p></body></html>")
    return "".join(out)


def slack_payload(n: Notification) -> dict[str, Any]:
    """A Slack-compatible message (Block Kit) for an incoming webhook."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": n.title[:150]}}
    ]
    for a in n.alerts:
        text = f"*{a['signature']}* on `{_subject(a)}` ({a['severity']})\n{a['summary']}\n"
        text += f"onset {_time(a['onset'])}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
        recs = a.get("recommendations") or []
        if recs and n.kind != "resolved":
            lines = [
                f"{i}. *{r.get('action', '')}*: {r.get('detail', '')}"
                for i, r in enumerate(recs[:3], 1)
            ]
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}}
            )
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"herdwatch · {n.key}"}]}
    )
    return {"text": n.title, "blocks": blocks}
