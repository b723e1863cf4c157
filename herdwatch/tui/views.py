"""The screens of `herdwatch top`: pure functions of a Snapshot, the ViewState and the size.

Nothing here reads a source or a clock: `screen(snap, state, replay, width, height)` returns
exactly `height` lines, none wider than `width` (so a terminal never wraps one), built from
what the Snapshot already holds (values, baselines and scores come from the engine).

    header    sources and their health, the clock (the replay's, when replaying), the refresh
    signals   one row per signal: value, baseline, score and a sparkline, every sparkline on one
              time axis (the last ten minutes before the Snapshot), colored by the score
    findings  active first, then recently ended: severity, signature, subject, onset, state,
              one line of evidence
    detail    the selected finding: evidence, timeline, recommendations with their
              `herdwatch mitigate` command where one exists
    footer    the keys
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Any

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.text import Text

from herdwatch.engine.snapshot import SignalView, Snapshot, TrackedFinding
from herdwatch.render import format_duration, format_subject, format_time, sparkline
from herdwatch.tui.state import ViewState

__all__ = [
    "ROWS",
    "SPAN",
    "ReplayInfo",
    "ordered_findings",
    "render_text",
    "score_style",
    "screen",
    "signal_rows",
]

#: seconds of history every sparkline spans (what a Snapshot carries per signal)
SPAN = 600.0
#: the signals an operator watches during a herd, in screen order: (name, label, unit)
ROWS: tuple[tuple[str, str, str], ...] = (
    ("miss_ratio", "miss ratio", "ratio"),
    ("cache_requests", "cache req", "rate"),
    ("requests", "requests", "rate"),
    ("db_latency_p99", "db p99", "seconds"),
    ("db_connections", "db conns", "count"),
    ("db_lock_waits", "lock waits", "count"),
    ("context_switches", "ctx switch", "rate"),
    ("cpu_system_share", "system cpu", "ratio"),
    ("error_logs", "error logs", "rate"),
    ("upstream_requests", "upstream req", "rate"),
)
# Shown when a filter names them: the inputs and companions of the rows above.
_EXTRA_UNITS = {
    "cache_hits": "rate",
    "cache_misses": "rate",
    "cpu_busy": "count",
    "upstream_latency_p99": "seconds",
    "db_connections_max": "count",
}
_NAME_W, _VALUE_W, _BASE_W, _SCORE_W = 14, 9, 9, 6
_SEVERITY = {"critical": ("CRIT", "bold red"), "warning": ("WARN", "yellow"), "info": ("INFO", "")}
_STATE_STYLE = {"active": "bold red", "resolved": "green", "withdrawn": "dim"}
KEYS = {
    "main": (("q", "quit"), ("p", "pause"), ("+/-", "refresh"), ("↑↓", "select"),
             ("enter", "open"), ("s", "subjects"), ("/", "filter"), ("?", "help")),
    "detail": (("q", "quit"), ("p", "pause"), ("+/-", "refresh"), ("↑↓", "scroll"),
               ("esc", "back"), ("?", "help")),
    "help": (("q", "quit"), ("esc", "back"), ("?", "close")),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReplayInfo:
    """The replay being shown: its name, the recording's span, the speed (inf: as fast as the
    engine goes) and whether it has ended."""

    name: str
    start: float
    end: float
    speed: float
    ended: bool = False


def score_style(score: float) -> str:
    """The color of a deviation score: green within 3 robust sigmas, yellow to 6, red beyond."""
    if not math.isfinite(score):
        return "dim"
    if abs(score) < 3:
        return "green"
    return "yellow" if abs(score) < 6 else "bold red"


def _num(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if a >= 10 else f"{v:.2f}"


def _fmt(v: float, unit: str) -> str:
    if not math.isfinite(v):
        return "-"
    if unit == "ratio":
        return f"{v * 100:.1f}%"
    if unit == "rate":
        return _num(v) + "/s"
    if unit == "seconds":
        return f"{v * 1000:.0f}ms" if abs(v) < 1 else f"{v:.2f}s"
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.1f}"


def _score(s: float) -> str:
    if not math.isfinite(s):
        return "-"
    return f"{max(-999.0, min(999.0, s)):+.1f}" if abs(s) < 100 else f"{s:+.0f}"[:5]


def _cell(text: str, width: int, right: bool = False) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 1 else text[:width]
    return text.rjust(width) if right else text.ljust(width)


def _short_subject(subject: Sequence[tuple[str, str]]) -> str:
    return ",".join(v for _, v in subject) or "fleet"


def _columns(view: SignalView, end: float, columns: int) -> list[float]:
    """The view's samples on `columns` slots ending at `end` (the shared axis): a slot holds
    its largest sample; an empty slot inside the data repeats the one before (coarse data)."""
    out = np.full(columns, np.nan)
    t, v = np.asarray(view.t, dtype=float), np.asarray(view.v, dtype=float)
    if len(t):
        width = SPAN / columns
        idx = np.floor((t - (end - SPAN)) / width).astype(np.int64)
        keep = (idx >= 0) & (idx < columns) & np.isfinite(v)
        np.fmax.at(out, idx[keep], v[keep])
        lo = math.floor((float(t[0]) - (end - SPAN)) / width)
        hi = math.floor((float(t[-1]) - (end - SPAN)) / width)
        for i in range(max(1, lo + 1), min(columns, hi + 1)):
            if math.isnan(out[i]):
                out[i] = out[i - 1]
    return [float(x) for x in out]


def _axis(columns: int) -> str:
    """The shared time axis over `columns`: -10m at the left, -5m in the middle, now."""
    if columns < 12:
        return _cell("-10m", columns)
    mid = "-5m"
    left = "-10m".ljust(columns // 2 - len(mid) // 2)
    return (left + mid).ljust(columns - 3) + "now"


def _spark_width(width: int) -> int:
    return max(0, width - (_NAME_W + _VALUE_W + _BASE_W + _SCORE_W + 4))


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    view: SignalView
    unit: str
    of: SignalView | None = None  # the max a count is shown against (connections)


def _matches(flt: str, name: str, label: str, subject: Sequence[tuple[str, str]]) -> bool:
    needle = flt.lower()
    return not needle or any(
        needle in h.lower() for h in (name, label, format_subject(subject) if subject else "")
    )


def signal_rows(snap: Snapshot, state: ViewState) -> tuple[list[_Row], list[str]]:
    """The rows the signal panel shows (fleet-wide, then with `s` each subject's below its
    fleet row) and the labels of watched signals the sources do not provide."""
    fleet = {v.name: v for v in snap.signals if not v.subject}
    by_subject: dict[str, list[SignalView]] = {}
    for v in snap.signals:
        if v.subject:
            by_subject.setdefault(v.name, []).append(v)
    specs = list(ROWS)
    if state.filter:
        specs += [(n, n.replace("_", " "), u) for n, u in _EXTRA_UNITS.items()]
    rows: list[_Row] = []
    missing: list[str] = []
    for name, label, unit in specs:
        base = fleet.get(name)
        subs = sorted(by_subject.get(name, []), key=lambda v: v.subject) if state.subjects else []
        if base is None and not subs:
            if (name, label, unit) in ROWS:
                missing.append(label)
            continue
        limit = fleet.get("db_connections_max") if name == "db_connections" else None
        if base is not None and _matches(state.filter, name, label, ()):
            rows.append(_Row(label, base, unit, limit))
        for v in subs:
            if _matches(state.filter, name, label, v.subject):
                rows.append(_Row("└" + _short_subject(v.subject), v, unit))
    return rows, missing


def _signal_line(row: _Row, end: float, spark_w: int) -> Text:
    v = row.view
    style = score_style(v.score)
    value = _fmt(v.value, row.unit)
    if row.of is not None and math.isfinite(row.of.value):
        value = f"{value}/{_fmt(row.of.value, row.unit)}"
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(_cell(row.label, _NAME_W) + " ", "bold" if not v.subject else "")
    line.append(_cell(value, _VALUE_W, right=True) + " ", style)
    line.append(_cell(_fmt(v.baseline, row.unit), _BASE_W, right=True) + " ", "dim")
    line.append(_cell(_score(v.score), _SCORE_W, right=True) + " ", style)
    if spark_w:
        line.append(sparkline(_columns(v, end, spark_w)), style)
    return line


def ordered_findings(snap: Snapshot | None) -> list[TrackedFinding]:
    """The findings as the panel lists them: active first, then ended; newest onset first."""
    if snap is None:
        return []
    return sorted(snap.findings, key=lambda f: (f.state != "active", -f.finding.onset, f.id))


def _finding_line(tf: TrackedFinding, selected: bool, width: int) -> Text:
    f = tf.finding
    sev, sev_style = _SEVERITY.get(f.severity, (f.severity[:4].upper(), ""))
    line = Text(no_wrap=True, overflow="ellipsis", style="reverse" if selected else "")
    line.append("▶ " if selected else "  ")
    line.append(_cell(sev, 4) + " ", sev_style)
    line.append(_cell(f.signature, 20) + " ", "bold")
    line.append(_cell(_short_subject(f.subject), 16) + " ")
    line.append(format_time(f.onset, date=False, ms=False) + " ")
    line.append(_cell(tf.state, 9) + " ", _STATE_STYLE.get(tf.state, ""))
    room = width - len(line.plain)
    if room > 0:
        line.append(_cell(f.summary, room))
    return line


def _header(
    snap: Snapshot | None,
    state: ViewState,
    replay: ReplayInfo | None,
    width: int,
    pace: float | None,
) -> list[Text]:
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append("herdwatch top", "bold")
    if replay is not None:
        title.append(f"  replay {replay.name}")
    if snap is not None:
        title.append("  " + format_time(snap.at, date=False, ms=False) + " UTC", "bold cyan")
    if replay is not None:
        if snap is not None:
            done = format_duration(max(0.0, snap.at - replay.start))
            title.append(f" +{done}/{format_duration(replay.end - replay.start)}")
        title.append("  x" + ("max" if math.isinf(replay.speed) else f"{replay.speed:g}"))
        if replay.ended:
            title.append("  ended", "bold")
    if state.paused:
        title.append("  PAUSED", "bold reverse")
    # What the refresh costs goes at the right, when there is room for it.
    right = f"every {state.interval:g}s"
    if pace is not None and pace > state.interval * 1.01:
        right = f"every {state.interval:g}s, ticks {pace:.1f}s (cpu budget)"
    if snap is not None:
        right += f"  tick {snap.cost.seconds * 1000:.0f}ms"
    if len(title.plain) + 2 + len(right) <= width:
        title.append(" " * (width - len(title.plain) - len(right)) + right, "dim")
    health = Text("sources ", no_wrap=True, overflow="ellipsis")
    if snap is None:
        health.append("waiting for the first tick…", "dim")
        return [title, health]
    for h in snap.sources:
        if h.healthy:
            health.append(f"● {h.name}", "green")
            health.append(f" {h.detail}  " if h.detail and len(snap.sources) == 1 else "  ", "dim")
        else:
            retry = ""
            if h.next_retry is not None:
                retry = f", retry in {format_duration(max(0.0, h.next_retry - snap.at))}"
            health.append(f"✗ {h.name}", "bold red")
            health.append(f" ({h.last_error or 'failing'}{retry})  ", "red")
    return [title, health]


def _footer(state: ViewState) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    if state.editing:
        line.append("filter signals: /", "bold")
        line.append(state.filter + "█")
        line.append("   enter keep  esc clear", "dim")
        return line
    for key, what in KEYS.get(state.mode, KEYS["main"]):
        line.append(key, "bold reverse")
        line.append(f" {what} ")
    if state.filter:
        line.append(f" /{state.filter}", "bold cyan")
    return line


def _main(snap: Snapshot, state: ViewState, width: int, height: int) -> list[Text]:
    """The signal panel and the findings panel in `height` lines."""
    spark_w = _spark_width(width)
    rows, missing = signal_rows(snap, state)
    head = Text(no_wrap=True, overflow="ellipsis", style="bold underline")
    head.append(_cell("signal", _NAME_W) + " " + _cell("value", _VALUE_W, right=True) + " ")
    head.append(_cell("baseline", _BASE_W, right=True) + " " + _cell("score", _SCORE_W, True))
    head.append(" " + _axis(spark_w) if spark_w else "")
    sig_lines = [_signal_line(r, snap.at, spark_w) for r in rows]
    if not rows:
        sig_lines.append(Text("  no signal matches" if state.filter else "  no data yet", "dim"))
    if missing and not state.filter:
        sig_lines.append(Text("not collected: " + ", ".join(missing), style="dim"))
    findings = ordered_findings(snap)
    n_active = sum(1 for f in findings if f.state == "active")
    f_head = Text(no_wrap=True, overflow="ellipsis", style="bold underline")
    f_head.append(f"findings: {n_active} active, {len(findings) - n_active} ended".ljust(width))
    ids = [f.id for f in findings]
    chosen = ids[state.index(ids)] if ids else None
    f_lines = [_finding_line(f, f.id == chosen, width) for f in findings]
    if not f_lines:
        f_lines = [Text("  none: no herd in the window", "green")]
    # The findings keep at least three rows; the signals take the rest, cut with a count.
    room = height - 2
    f_room = min(len(f_lines), max(3, room - len(sig_lines)))
    s_room = max(0, room - f_room)
    if len(sig_lines) > s_room:
        cut = len(sig_lines) - s_room + 1
        sig_lines = [*sig_lines[: max(0, s_room - 1)], Text(f"  … {cut} more (/ filters)", "dim")]
        sig_lines = sig_lines[:s_room]
    if len(f_lines) > f_room:
        at = ids.index(chosen) if chosen in ids else 0
        first = min(max(0, at - f_room + 1), len(f_lines) - f_room)
        f_lines = f_lines[first : first + f_room]
    return [head, *sig_lines, f_head, *f_lines]


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in value.items())
    if isinstance(value, float):
        if 1.5e9 < value < 4e9:  # a unix time in the evidence
            return format_time(value, date=False)
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flat(v) for v in value[:6]) + (", …]" if len(value) > 6 else "]")
    return str(value)


def _wrapped(text: str, width: int, indent: int, style: str = "") -> list[Text]:
    room = max(10, width - indent)
    return [
        Text(" " * indent + part, style=style, no_wrap=True, overflow="ellipsis")
        for part in textwrap.wrap(text, room) or [""]
    ]


def _timeline(snap: Snapshot, tf: TrackedFinding, width: int) -> list[Text]:
    """The finding's signals (its subject's own where the engine split them) on the shared
    axis, the onset marked."""
    own = {v.name: v for v in snap.signals if v.subject == tf.subject}
    fleet = {v.name: v for v in snap.signals if not v.subject}
    names = list(tf.finding.signals) or [n for n, _, _ in ROWS if n in fleet]
    views = [own.get(n) or fleet.get(n) for n in names]
    spark_w = max(10, width - _NAME_W - 1)
    units = {n: u for n, _, u in ROWS} | _EXTRA_UNITS
    lines = [Text(" " * (_NAME_W + 1) + _axis(spark_w), style="dim", no_wrap=True)]
    for name, view in zip(names, views, strict=True):
        if view is None:
            continue
        line = Text(_cell(name, _NAME_W) + " ", style="bold", no_wrap=True, overflow="ellipsis")
        line.append(sparkline(_columns(view, snap.at, spark_w)), score_style(view.score))
        lines.append(line)
        rng = f"now {_fmt(view.value, units.get(name, 'count'))}"
        rng += f", baseline {_fmt(view.baseline, units.get(name, 'count'))}"
        lines.append(Text(" " * (_NAME_W + 1) + rng, style="dim", no_wrap=True))
    col = math.floor((tf.finding.onset - (snap.at - SPAN)) / (SPAN / spark_w))
    if 0 <= col < spark_w:
        label = "onset " + format_time(tf.finding.onset, date=False, ms=False)
        at = _NAME_W + 1 + col
        # The label goes on whichever side of the mark has room for it.
        marker = " " * at + "▲ " + label
        if at + 2 + len(label) > width:
            marker = " " * max(0, at - len(label) - 1) + label + " ▲"
        lines.append(Text(marker, style="magenta", no_wrap=True, overflow="ellipsis"))
    return lines


def _detail_body(snap: Snapshot, tf: TrackedFinding, width: int) -> list[Text]:
    f = tf.finding
    sev_style = _SEVERITY.get(f.severity, ("", ""))[1]
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append(f.signature, "bold")
    title.append("  " + f.severity, sev_style)
    title.append("  " + tf.state, _STATE_STYLE.get(tf.state, ""))
    title.append(f"  {format_subject(f.subject)}  id {tf.id}", "")
    when = Text(no_wrap=True, overflow="ellipsis")
    when.append(f"onset {format_time(f.onset)} UTC  end {format_time(f.end, date=False)}")
    when.append(f"  lasted {format_duration(f.end - f.onset)}")
    out = [title, when, *_wrapped(f.summary, width, 0)]
    out.append(Text("Recommendations", style="bold underline"))
    for i, rec in enumerate(f.recommendations, 1):
        out += _wrapped(f"{i}. {rec.action}", width, 0, "bold green")
        if rec.command:
            out += _wrapped(f"$ {rec.command}", width, 3, "bold magenta")
        if rec.config:
            out += _wrapped(rec.config, width, 3, "cyan")
        if rec.detail:
            out += _wrapped(rec.detail, width, 3)
    if not f.recommendations:
        out.append(Text("   none for this signature", style="dim"))
    out.append(Text("Evidence", style="bold underline"))
    for key, value in f.evidence.items():
        out += _wrapped(f"{key}: {_flat(value)}", width, 2)
    out.append(Text("Timeline (last 10 minutes)", style="bold underline"))
    out += _timeline(snap, tf, width)
    return out


def _detail(snap: Snapshot, state: ViewState, width: int, height: int) -> list[Text]:
    findings = ordered_findings(snap)
    ids = [f.id for f in findings]
    if not findings:
        return [Text("no finding to show (esc: back)", style="dim")]
    body = _detail_body(snap, findings[state.index(ids)], width)
    first = min(state.scroll, max(0, len(body) - height))
    shown = body[first : first + height]
    if first + height < len(body):
        more = f"  … {len(body) - first - height} more lines (↓)"
        shown[-1] = Text(more, style="dim")
    return shown


def _help(height: int) -> list[Text]:
    lines = [
        ("q", "quit (the terminal is restored; Ctrl-C too)"),
        ("p", "pause: freeze the screen (a replay's clock stops)"),
        ("+ / -", "refresh slower / faster (0.5 to 5 s)"),
        ("↑ ↓", "select a finding (in its detail: scroll)"),
        ("enter", "open the selected finding: evidence, timeline, what to do"),
        ("esc", "back to the main screen"),
        ("s", "per-subject rows (which shard, which host) under each signal"),
        ("/", "filter signals by name or subject (enter keeps, esc clears)"),
        ("?", "this help"),
    ]
    out = [Text("Keys", style="bold underline")]
    out += [Text.assemble((k.ljust(7), "bold"), " " + what, no_wrap=True) for k, what in lines]
    out.append(Text(""))
    out.append(Text("Colors: the deviation score (value - baseline) / robust sigma:", "dim"))
    out.append(Text.assemble(("green", "green"), " under 3, ", ("yellow", "yellow"), " to 6, ",
                             ("red", "bold red"), " beyond."))  # fmt: skip
    return out[:height]


def screen(
    snap: Snapshot | None,
    state: ViewState,
    replay: ReplayInfo | None,
    width: int,
    height: int,
    *,
    pace: float | None = None,
) -> RenderableType:
    """The whole screen: exactly `height` lines, none wider than `width`. `pace` is the live
    seconds between ticks when the CPU budget stretches them past the refresh interval."""
    width, height = max(20, width), max(4, height)
    top = _header(snap, state, replay, width, pace)
    room = height - len(top) - 1
    if state.mode == "help":
        body = _help(room)
    elif snap is None:
        body = [Text("waiting for data…", style="dim")]
    elif state.mode == "detail":
        body = _detail(snap, state, width, room)
    else:
        body = _main(snap, state, width, room)
    lines = [*top, *body[:room]]
    lines += [Text("") for _ in range(height - 1 - len(lines))]
    lines.append(_footer(state))
    for line in lines:
        line.no_wrap = True
        line.overflow = "ellipsis"
        line.truncate(width, overflow="ellipsis")
    return Group(*lines)


def render_text(renderable: RenderableType, width: int, height: int, *, color: bool = False) -> str:
    """`renderable` as a terminal of `width` x `height` would show it, as text (for tests,
    the benchmark and the README's capture)."""
    console = Console(
        file=StringIO(),
        record=True,
        width=width,
        height=height,
        force_terminal=color,
        color_system="truecolor" if color else None,
        legacy_windows=False,
    )
    console.print(renderable, end="")
    out = console.export_text(styles=color)
    return out[:-1] if out.endswith("\n") else out
