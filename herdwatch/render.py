"""Turn a ScanResult into a report a person reads (rich) or the JSON contract (scripts, CI).

The renderer formats and lays out; it computes no statistics. Sparklines pick the points of
each involved signal in a window around the onset and scale them to eight levels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from herdwatch.model import Finding, ScanResult, Signal

__all__ = [
    "SPARK_LEVELS",
    "format_duration",
    "format_subject",
    "format_time",
    "render_json",
    "render_report",
    "render_rule_results",
    "render_rules",
    "render_rules_json",
    "sparkline",
]

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
TIMELINE_WIDTH = 60
_SEVERITY_STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "bold blue"}
_TIME_WORDS = ("onset", "time", "start", "end", "_at", "first", "last", "when", "occurrence")


def format_time(ts: float | None, *, date: bool = True, ms: bool = True) -> str:
    """Unix seconds as UTC `2025-11-24 16:12:07` (milliseconds shown only when present);
    `-` for a time that is missing or no calendar can show."""
    if ts is None or not math.isfinite(ts):
        return "-"
    if not ms:
        ts = round(ts)
    try:
        dt = datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return "-"
    text = dt.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    millis = round((ts - math.floor(ts)) * 1000)
    if 0 < millis < 1000:
        text += f".{millis:03d}"
    return text


def format_subject(subject: Sequence[tuple[str, str]]) -> str:
    """A subject as people write label sets: `instance=redis-3:9121`, or `fleet` when empty."""
    return ",".join(f"{k}={v}" for k, v in subject) or "fleet"


def format_duration(seconds: float) -> str:
    """A short human duration: 850ms, 12s, 3m05s, 2h03m, 3d04h."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    s = round(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _num(value: float, key: str = "") -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    k = key.lower()
    if any(w in k for w in _TIME_WORDS) and 1e9 < value < 1e10:
        return format_time(value) + " UTC"
    if ("p_value" in k or "pvalue" in k) and 0 < abs(value) < 1e-3:
        return f"{value:.2e}"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _fmt(value: Any, key: str = "", limit: int = 8) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return _num(float(value), key) if 1e9 < value < 1e10 else str(int(value))
    if isinstance(value, float | np.floating):
        return _num(float(value), key)
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v, str(k), limit)}" for k, v in value.items())
    if isinstance(value, Sequence | np.ndarray):
        items = list(value)
        shown = [_fmt(v, key, limit) for v in items[:limit]]
        if len(items) > limit:
            shown.append(f"… (+{len(items) - limit} more)")
        return ", ".join(shown)
    return str(value)


def _evidence_table(evidence: Mapping[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in evidence.items():
        # A mapping of mappings (per-signal details) reads better as one row per entry.
        if isinstance(value, Mapping) and any(isinstance(v, Mapping) for v in value.values()):
            for sub, subvalue in value.items():
                table.add_row(f"{key}.{sub}", _fmt(subvalue, f"{key}.{sub}"))
        elif (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and value
            and all(isinstance(v, Mapping) for v in value)
        ):
            for i, item in enumerate(value[:8]):
                table.add_row(key if i == 0 else "", _fmt(item, key))
            if len(value) > 8:
                table.add_row("", f"… (+{len(value) - 8} more)")
        else:
            table.add_row(key, _fmt(value, key))
    return table


def sparkline(values: Iterable[float]) -> str:
    """Values scaled to ▁..█ between 0 (or their min, if negative) and their max; NaN is a space.

    Scaling from zero keeps a flat but noisy rate looking flat (1939..2191 req/s is ▇▇▇▇)."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return " " * len(vals)
    # Halved so that values near the float limits cannot overflow the span.
    lo, hi = min(0.0, min(finite)) / 2, max(finite) / 2
    span = hi - lo
    out = []
    for v in vals:
        if not math.isfinite(v):
            out.append(" ")
        elif span == 0:
            out.append(SPARK_LEVELS[0])
        else:
            level = round((v / 2 - lo) / span * (len(SPARK_LEVELS) - 1))
            out.append(SPARK_LEVELS[min(max(level, 0), len(SPARK_LEVELS) - 1)])
    return "".join(out)


def _timeline_window(
    finding: Finding, signals: Sequence[Signal], max_slots: int = TIMELINE_WIDTH
) -> tuple[float, float, int]:
    """(start, slot width, slots): one slot per sample step of the finest signal, from a
    little before the onset to a little after the end, at most `max_slots` slots."""
    step = min((s.step for s in signals if s.step > 0), default=1.0)
    length = max(finding.end - finding.onset, 0.0)
    pad = max(20 * step, length)
    start = finding.onset - pad
    slots = round((length + 2 * pad) / step) + 1
    if slots <= max_slots:
        return start, step, slots
    return start, (length + 2 * pad + step) / max_slots, max_slots


def _columns(signal: Signal, start: float, width: float, columns: int) -> list[float]:
    """The signal on `columns` slots of `width` seconds from `start`: a slot shows its largest
    point, an empty slot inside the data repeats the previous one (a coarser grid), NaN
    outside the data."""
    out = [math.nan] * columns
    t = np.asarray(signal.t, dtype=float)
    v = np.asarray(signal.v, dtype=float)
    if len(t) == 0:
        return out
    for ts, val in zip(t, v, strict=True):
        # The epsilon keeps a sample that sits exactly on a slot boundary in its own slot.
        i = math.floor((ts - start) / width + 1e-6)
        if 0 <= i < columns and math.isfinite(val) and (math.isnan(out[i]) or val > out[i]):
            out[i] = float(val)
    first, last = float(t[0]), float(t[-1])
    for i in range(1, columns):
        slot_start = start + i * width
        if math.isnan(out[i]) and first <= slot_start <= last:
            out[i] = out[i - 1]
    return out


def _timeline(finding: Finding, result: ScanResult, room: int) -> RenderableType | None:
    """Sparklines of the finding's signals on one time axis, the onset marked; `room` is the
    width available, so labels and ranges are never cut."""
    own = {**result.signals, **result.subject_signals.get(finding.subject, {})}
    involved = [own[name] for name in finding.signals if name in own]
    if not involved:
        return None
    label_w = max(len(s.name) for s in involved)

    def lay_out(slots: int) -> tuple[float, float, int, list[tuple[str, list[float], str]]]:
        start, width, columns = _timeline_window(finding, involved, slots)
        rows = []
        for sig in involved:
            cols = _columns(sig, start, width, columns)
            finite = [c for c in cols if math.isfinite(c)]
            rng = f"{_fmt(min(finite))} … {_fmt(max(finite))}" if finite else "no data"
            rows.append((sig.name, cols, rng))
        return start, width, columns, rows

    start, width, columns, rows = lay_out(TIMELINE_WIDTH)
    range_w = max(len(r[2]) for r in rows)
    fit = max(10, min(TIMELINE_WIDTH, room - label_w - range_w - 2))
    if fit < columns:
        start, width, columns, rows = lay_out(fit)
    end = start + (columns - 1) * width
    onset_col = min(columns - 1, max(0, math.floor((finding.onset - start) / width + 1e-6)))
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, style="bold")
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, style="dim")
    axis = f"{format_time(start, date=False, ms=False)} UTC"
    right = format_time(end, date=False, ms=False)
    table.add_row("", Text(axis + right.rjust(max(1, columns - len(axis))), style="dim"), "")
    for name, cols, rng in rows:
        line = Text(sparkline(cols))
        line.stylize("bold magenta", onset_col, onset_col + 1)
        table.add_row(name.ljust(label_w), line, rng)
    marker = " " * onset_col + "▲ onset " + format_time(finding.onset, date=False)
    table.add_row("", Text(marker, style="magenta"), "")
    return table


def _recommendations(finding: Finding) -> RenderableType | None:
    if not finding.recommendations:
        return None
    parts: list[RenderableType] = []
    for i, rec in enumerate(finding.recommendations, 1):
        parts.append(Text.assemble((f"{i}. ", "bold"), (rec.action, "bold green")))
        if rec.option:
            parts.append(Padding(Text(f"↳ {rec.option}", style="dim"), (0, 0, 0, 3)))
        if rec.detail:
            parts.append(Padding(Text(rec.detail), (0, 0, 0, 3)))
        if rec.config:
            parts.append(Padding(Text(rec.config.rstrip("\n"), style="cyan"), (0, 0, 0, 5)))
        if rec.command:
            parts.append(Padding(Text(f"$ {rec.command}", style="magenta"), (0, 0, 0, 5)))
    return Group(*parts)


def _finding_panel(index: int, finding: Finding, result: ScanResult, width: int) -> Panel:
    style = _SEVERITY_STYLE.get(finding.severity, "bold")
    parts: list[RenderableType] = [
        Text(finding.summary),
        *(
            [Text(f"subject {format_subject(finding.subject)}", style="bold")]
            if finding.subject
            else []
        ),
        Text(
            f"onset {format_time(finding.onset)} UTC · end {format_time(finding.end)} UTC · "
            f"lasted {format_duration(finding.end - finding.onset)}",
            style="dim",
        ),
    ]
    if finding.evidence:
        parts += [Text("\nEvidence", style="bold underline"), _evidence_table(finding.evidence)]
    timeline = _timeline(finding, result, width - 4)
    if timeline is not None:
        parts += [Text("\nTimeline", style="bold underline"), timeline]
    recs = _recommendations(finding)
    if recs is not None:
        parts += [Text("\nRecommendations", style="bold underline"), recs]
    title = Text.assemble(
        (f"{index}. {finding.signature}", "bold"), "  ", (finding.severity, style)
    )
    return Panel(Group(*parts), title=title, title_align="left", border_style=style.split()[-1])


def _header(result: ScanResult, config_files: Sequence[str]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if result.window:
        start, end = result.window
        same_day = format_time(start)[:10] == format_time(end)[:10]
        grid.add_row(
            "window",
            f"{format_time(start)} → {format_time(end, date=not same_day)} UTC "
            f"({format_duration(end - start)})",
        )
    else:
        grid.add_row("window", "no data")
    sources = Text()
    for i, src in enumerate(result.sources):
        if i:
            sources.append("  ")
        sources.append(src.name)
        sources.append(" ✓" if src.ok else " ✗", style="green" if src.ok else "red")
        if src.detail:
            sources.append(f" ({src.detail})", style="dim")
    grid.add_row("sources", sources if result.sources else Text("none"))
    if config_files:
        grid.add_row("config", ", ".join(config_files))
    if result.not_evaluated:
        skipped = Text()
        for i, n in enumerate(result.not_evaluated):
            if i:
                skipped.append("\n")
            skipped.append(n.rule, style="yellow")
            skipped.append(f": {n.why}", style="dim")
        grid.add_row("not evaluated", skipped)
    return grid


def render_report(
    result: ScanResult, console: Console, *, config_files: Sequence[str] = ()
) -> None:
    """Print the human report: header (window, sources, config files read), findings table,
    then one panel per finding."""
    header = _header(result, config_files)
    console.print(Panel(header, title="herdwatch scan", title_align="left"))
    if not result.findings:
        console.print(Text("No herds found in this window.", style="bold green"))
        return
    # The date is in the header; repeat it per finding only when the findings span days.
    days = {format_time(f.onset)[:10] for f in result.findings}
    if result.window:
        days |= {format_time(result.window[0])[:10]}
    table = Table(title=f"{len(result.findings)} finding(s)", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("signature", style="bold", no_wrap=True)
    subjects = any(f.subject for f in result.findings)
    if subjects:
        table.add_column("subject", no_wrap=True)
    table.add_column("onset (UTC)", no_wrap=True)
    table.add_column("lasted", justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("summary", min_width=20)
    for i, f in enumerate(result.findings, 1):
        table.add_row(
            str(i),
            f.signature,
            *([format_subject(f.subject)] if subjects else []),
            format_time(f.onset, date=len(days) > 1),
            format_duration(f.end - f.onset),
            Text(f.severity, style=_SEVERITY_STYLE.get(f.severity, "")),
            f.summary,
        )
    console.print(table)
    for i, f in enumerate(result.findings, 1):
        console.print(_finding_panel(i, f, result, console.width))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        # JSON has no NaN or Infinity: they become null.
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def render_json(result: ScanResult) -> str:
    """The JSON contract (README.md, "JSON output") as one line; NaN and infinities become null."""
    return json.dumps(_jsonable(result.to_json()), allow_nan=False)


class _ParamSpec(Protocol):
    @property
    def default(self) -> Any: ...
    @property
    def doc(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def minimum(self) -> float | None: ...
    @property
    def maximum(self) -> float | None: ...


class _Rule(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def detector(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def parameters(self) -> Mapping[str, _ParamSpec]: ...
    def param_values(self) -> dict[str, Any]: ...


def _param_line(value: Any, spec: _ParamSpec, name: str) -> Text:
    unit = f" {spec.unit}" if spec.unit else ""
    line = Text(_fmt(value, name) + unit, style="bold")
    notes = []
    changed = _jsonable(value) != _jsonable(spec.default)
    if changed:
        notes.append(f"default {_fmt(spec.default, name)}{unit}")
    if spec.minimum is not None or spec.maximum is not None:
        lo = "" if spec.minimum is None else _fmt(spec.minimum)
        hi = "" if spec.maximum is None else _fmt(spec.maximum)
        notes.append(f"range {lo}..{hi}")
    if notes:
        line.append("  (" + "; ".join(notes) + ")", style="dim")
    if changed:
        line.append(" *", style="bold yellow")
    return line


def render_rules(rules: Sequence[_Rule], console: Console) -> None:
    """Each rule: id, detector, description and its parameters (value, default, unit and
    range, doc); a value changed by the config is marked with * and shows its default."""
    for rule in rules:
        values = rule.param_values()
        params = Table.grid(padding=(0, 2))
        params.add_column(style="cyan", no_wrap=True)
        params.add_column()
        for name, spec in rule.parameters.items():
            value = values.get(name, spec.default)
            doc = Text(" ".join(spec.doc.split()), style="dim")
            params.add_row(name, Group(_param_line(value, spec, name), doc))
        status = Text("enabled", style="green") if rule.enabled else Text("disabled", style="red")
        title = Text.assemble((rule.id, "bold"), "  ", (f"detector: {rule.detector}", "dim"))
        body = Group(Text(rule.description.strip()), status, Text(""), params)
        console.print(Panel(body, title=title, title_align="left"))


def render_rules_json(rules: Sequence[_Rule]) -> str:
    """The rules as a JSON list: id, detector, description, enabled, file and per parameter its
    value, default, unit, bounds and doc."""
    out = [
        {
            "id": r.id,
            "detector": r.detector,
            "description": r.description,
            "enabled": r.enabled,
            "file": str(getattr(r, "file", "")),
            "parameters": {
                name: {
                    "value": r.param_values().get(name, spec.default),
                    "default": spec.default,
                    "unit": spec.unit,
                    "minimum": spec.minimum,
                    "maximum": spec.maximum,
                    "doc": spec.doc.strip(),
                }
                for name, spec in r.parameters.items()
            },
        }
        for r in rules
    ]
    return json.dumps(_jsonable(out), indent=2)


class _CaseResult(Protocol):
    @property
    def fixture(self) -> str: ...
    @property
    def signature(self) -> str: ...
    @property
    def expectation(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def detail(self) -> str: ...


def render_rule_results(results: Sequence[_CaseResult], console: Console) -> None:
    """Per fixture, one line per expectation (PASS/FAIL with the detail), then a summary,
    in the manner of `promtool test rules`."""
    current = None
    for r in results:
        if r.fixture != current:
            current = r.fixture
            console.print(Text.assemble("Unit Testing: ", (r.fixture, "bold")))
        mark = Text("  PASS ", style="green") if r.passed else Text("  FAIL ", style="bold red")
        line = Text.assemble(mark, f"{r.signature} {r.expectation}")
        if r.detail:
            line.append(f"  ({r.detail})", style="dim" if r.passed else "red")
        console.print(line)
    failed = sum(1 for r in results if not r.passed)
    fixtures = len({r.fixture for r in results})
    summary = f"{len(results) - failed} passed, {failed} failed ({fixtures} fixtures)"
    console.print(Text(("SUCCESS: " if not failed else "FAILED: ") + summary,
                       style="bold green" if not failed else "bold red"))  # fmt: skip
