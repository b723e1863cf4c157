"""Log lines -> timestamped error events (lock timeouts, too many clients, connection refused,
deadlocks), for replay files and the live tailer alike.

Timestamps recognised at the start of a line (an opening `[` is allowed):

* Postgres' default prefix `%m [%p] `: `2025-11-24 03:00:01.123 UTC [123] ...`; the zone is an
  abbreviation (UTC, GMT, CET, CEST, EST, PDT, ... see `TZ_ABBREVIATIONS`) or a numeric offset
  (`+03`, `-0530`, `+05:30`). An abbreviation herdwatch does not know makes the line unstamped.
* ISO 8601 / RFC 3339: `2025-11-24T03:00:01.123Z`, `...+01:00`, `2025-11-24 03:00:01,123`
  (Python logging), MySQL's `2025-11-24T03:00:01.123456Z 12 [ERROR] ...`.
* JSON lines: the first of the keys ts, time, timestamp, @timestamp, t; a string in one of the
  forms above, or a number of epoch seconds (milliseconds above 1e11, microseconds above 1e14,
  nanoseconds above 1e17).
* nginx error logs and Go's `log`: `2025/11/24 03:00:01 [error] ...`, `2025/11/24 03:00:01.123456`.
* Apache's error log: `[Mon Nov 24 03:00:01.123456 2025] [core:error] ...`.
* klog (Kubernetes): `E1124 03:00:01.123456    1234 file.go:12] ...` (no year: as syslog).
* Epoch-prefixed lines: `1764000001.123 ...`, `[1764000001123] ...` (10 digits of seconds, or
  13 of milliseconds, with optional fraction).
* logback / log4j: `2025-11-24 03:00:01,123 ERROR ...` (the ISO form above).
* logfmt (Go's slog and logrus text handlers, go-kit, Prometheus' own logs):
  `time=2025-11-24T03:00:01.123+01:00 level=ERROR msg=...`, `level=error ts=... caller=...`:
  the first of the keys ts, time, timestamp, t among the line's `key=value` pairs, read as a
  JSON line's value.
* Syslog (RFC 3164) `Nov 24 03:00:01 host prog[pid]: ...` and RFC 5424 `<34>1 2025-11-24T...`.
  RFC 3164 has no year: it comes from `year` (the caller's reference year; `read_log` uses the
  file's modification time). With the file's month known, a month after it is last year's
  (a January file holding December lines).

A time without a zone is read in `default_tz` (UTC unless the caller says otherwise).

A time without a zone is read in `default_tz`; `zone("UTC+5:30")`, `zone("-05:00")` or
`zone("America/New_York")` makes one from a config value.

A line with no timestamp of its own continues the last stamped line before it (stack traces,
multi-line statements) and takes its time. A matching line with no stamped line before it, or
one that starts like a timestamp herdwatch cannot read (`24.11.2025 03:00`, `03:00:01.123`), is
skipped and counted in `LogLineParser.skipped`: it never inherits another line's time (sixty
unreadable errors over four hours are not sixty errors in one instant). So is a logfmt record
without a readable time (`level=error msg=...`): it is a record of its own, not a continuation.
"""

from __future__ import annotations

import calendar
import gzip
import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import BinaryIO

from herdwatch.config._zones import TZ_ABBREVIATIONS, zone
from herdwatch.errors import ReplayFormatError
from herdwatch.model import LogEvent

__all__ = [
    "KINDS",
    "MAX_LINE_BYTES",
    "TZ_ABBREVIATIONS",
    "LogLineParser",
    "classify",
    "iter_lines",
    "numbered_lines",
    "parse_log_line",
    "parse_timestamp",
    "read_log",
    "read_log_detail",
    "zone",
]

KINDS = ("lock_timeout", "too_many_clients", "connection_refused", "deadlock")

_PATTERN = re.compile(
    r"(?P<lock_timeout>canceling statement due to lock timeout|Lock wait timeout exceeded)"
    r"|(?P<too_many_clients>sorry, too many clients already"
    r"|remaining connection slots are reserved|Too many connections)"
    r"|(?P<connection_refused>connection refused|ECONNREFUSED)"
    r"|(?P<deadlock>deadlock detected|Deadlock found when trying to get lock)",
    re.IGNORECASE,
)

# Hours east of UTC. Ambiguous abbreviations (IST, CST in China) take the Postgres default set.

_ISO = re.compile(
    r"\[?(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(?:(Z|[+-]\d{2}(?::?\d{2})?)|\s([+-]\d{2}(?::?\d{2})?|[A-Z]{1,5})\b)?"
)
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_SYSLOG = re.compile(
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})"
    r"(?:\.(\d{1,9}))?\s"
)
_PRI = re.compile(r"<\d{1,3}>(?:1 )?")
_PG_PID = re.compile(r" \[\d+\]")  # Postgres' `%m [%p]` after the zone
_SLASHED = re.compile(r"\[?(\d{4})/(\d{2})/(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?")
_APACHE = re.compile(
    r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"{1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))? (\d{4})\]"
)
_KLOG = re.compile(r"[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s")
_EPOCH = re.compile(r"\[?(\d{10}|\d{13})(?:\.(\d{1,9}))?\]?(?:\s|$)")
#: the start of a line that carries a time herdwatch cannot read: such a line is not a
#: continuation of the last stamped one
_UNREAD_STAMP = re.compile(r"\[?\d{1,4}[-/.:]\d{1,2}[-/.:]\d{1,4}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_JSON_KEYS = ("ts", "time", "timestamp", "@timestamp", "t")
_LOGFMT_START = re.compile(r"[A-Za-z_][A-Za-z0-9_.@]*=")
#: a logfmt record (`level=... msg=...`) stands on its own: never a continuation line
_LOGFMT_RECORD = re.compile(r"(?:^|\s)(?:level|lvl|msg)=")
_LOGFMT_TIME = re.compile(r'(?:^|\s)(?:ts|time|timestamp|@timestamp|t)=("[^"]*"|\S+)')
_JSON_MSG_KEYS = ("msg", "message", "error", "err", "event")
_MAX_MESSAGE = 500


def classify(text: str) -> str | None:
    """The error kind a line reports (one of KINDS), or None."""
    m = _PATTERN.search(text)
    return m.lastgroup if m else None


def _offset(tz: str | None, default_tz: tzinfo, naive: datetime) -> float | None:
    """Seconds east of UTC for a zone token; None for an abbreviation we do not know."""
    if tz is None:
        off = default_tz.utcoffset(naive)
        return off.total_seconds() if off is not None else 0.0
    if tz[0] in "+-":
        digits = tz[1:].replace(":", "")
        hours = int(digits[:2])
        minutes = int(digits[2:4]) if len(digits) > 2 else 0
        sign = 1 if tz[0] == "+" else -1
        return sign * (hours * 3600 + minutes * 60)
    abbr = TZ_ABBREVIATIONS.get(tz)
    return None if abbr is None else abbr * 3600


def _epoch(
    y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str | None, tz: str | None,
    default_tz: tzinfo,
) -> float | None:  # fmt: skip
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s <= 60):
        return None
    try:
        naive = datetime(y, mo, d, h, mi, min(s, 59))
    except ValueError:
        return None
    off = _offset(tz, default_tz, naive)
    if off is None:
        return None
    base = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) - off
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


#: 9999-12-31T23:59:59Z; a JSON time beyond it (after scaling) is no time (1e308 is not)
_MAX_EPOCH = 253402300799.0


def _from_number(x: float) -> float | None:
    if not math.isfinite(x):
        return None
    for limit, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
        if abs(x) > limit:
            x = x / scale
            break
    return x if 0.0 <= x <= _MAX_EPOCH else None


def parse_timestamp(
    line: str,
    *,
    year: int | None = None,
    month: int | None = None,
    default_tz: tzinfo = UTC,
) -> float | None:
    """Unix seconds of the timestamp that starts `line`, or None when it has none.

    `year` (and optionally `month`, the month of the reference date) place RFC 3164 syslog
    lines, which carry no year; without `year` such lines count as unstamped."""
    if not line:
        return None
    c = line[0]
    if c == "{":
        return _json_timestamp(line, year=year, month=month, default_tz=default_tz)
    value = _logfmt_time(line)
    if value is not None:
        return _stamp_value(value, year=year, month=month, default_tz=default_tz)
    pos = 0
    if c == "<":
        m = _PRI.match(line)
        if m is None:
            return None
        pos = m.end()
    m = _ISO.match(line, pos)
    if m is not None:
        g = m.groups()
        tz = g[7] or g[8]
        if tz is not None and tz[0].isalpha() and tz not in TZ_ABBREVIATIONS:
            # Postgres' `%m [%p]`: a zone we cannot place; elsewhere a word such as ERROR.
            if _PG_PID.match(line, m.end()):
                return None
            tz = None
        return _epoch(
            int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), g[6], tz,
            default_tz,
        )  # fmt: skip
    other = _other_formats(line, pos, year, month, default_tz)
    if other is not None:
        return other
    m = _SYSLOG.match(line, pos)
    if m is None or year is None:
        return None
    g = m.groups()
    mo = _MONTHS[g[0]]
    y = year - 1 if month is not None and mo > month else year
    return _epoch(y, mo, int(g[1]), int(g[2]), int(g[3]), int(g[4]), g[5], None, default_tz)


def _other_formats(
    line: str, pos: int, year: int | None, month: int | None, default_tz: tzinfo
) -> float | None:
    """nginx / Go `log`, Apache, klog and epoch-prefixed stamps (module docstring); None when
    the line starts with none of them."""
    m = _SLASHED.match(line, pos)
    if m is not None:
        g = m.groups()
        return _epoch(
            int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), g[6], None,
            default_tz,
        )  # fmt: skip
    m = _APACHE.match(line, pos)
    if m is not None:
        g = m.groups()
        return _epoch(
            int(g[6]), _MONTHS[g[0]], int(g[1]), int(g[2]), int(g[3]), int(g[4]), g[5], None,
            default_tz,
        )  # fmt: skip
    m = _KLOG.match(line, pos)
    if m is not None and year is not None:
        g = m.groups()
        mo = int(g[0])
        y = year - 1 if month is not None and mo > month else year
        return _epoch(y, mo, int(g[1]), int(g[2]), int(g[3]), int(g[4]), g[5], None, default_tz)
    m = _EPOCH.match(line, pos)
    if m is not None:
        frac = m.group(2)
        return _from_number(float(m.group(1) + ("." + frac if frac else "")))
    return None


def _logfmt_time(line: str) -> str | None:
    """The time field's value of a logfmt line (`time=...`, `ts="..."`), else None."""
    if not line[:1].isalpha() or _LOGFMT_START.match(line) is None:
        return None
    m = _LOGFMT_TIME.search(line)
    return m.group(1).strip('"') if m is not None else None


def _logfmt_record(line: str) -> bool:
    """A logfmt line that is a record of its own (a time, a level or a message field)."""
    if not line[:1].isalpha() or _LOGFMT_START.match(line) is None:
        return False
    return _LOGFMT_TIME.search(line) is not None or _LOGFMT_RECORD.search(line) is not None


def _stamp_value(
    v: str, *, year: int | None, month: int | None, default_tz: tzinfo
) -> float | None:
    """A time field's text (JSON or logfmt): epoch seconds (or ms, us, ns), or a stamp."""
    if _NUMBER.fullmatch(v):
        return _from_number(float(v))
    if not v or v[0] == "{" or _logfmt_time(v) is not None:
        return None
    return parse_timestamp(v, year=year, month=month, default_tz=default_tz)


def _json_value(line: str) -> dict[str, object] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _json_timestamp(
    line: str, *, year: int | None, month: int | None, default_tz: tzinfo
) -> float | None:
    obj = _json_value(line)
    if obj is None:
        return None
    for k in _JSON_KEYS:
        v = obj.get(k)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int | float):
            return _from_number(float(v))
        if isinstance(v, str):
            return _stamp_value(v, year=year, month=month, default_tz=default_tz)
    return None


def parse_log_line(
    line: str, *, year: int | None = None, default_tz: tzinfo = UTC
) -> tuple[float | None, str | None]:
    """(timestamp or None, error kind or None) of one line, on its own (no continuation)."""
    kind = classify(line)
    return parse_timestamp(line, year=year, default_tz=default_tz), kind


def _message(line: str) -> str:
    text = line.strip()
    if text.startswith("{"):
        obj = _json_value(text)
        if obj is not None:
            for k in _JSON_MSG_KEYS:
                v = obj.get(k)
                if isinstance(v, str) and v:
                    text = v
                    break
    return text[:_MAX_MESSAGE]


class LogLineParser:
    """Stateful per-stream parser: feed lines in order, get events. Reused by the live tailer.

    The timestamp of a line is only computed when an event needs it (its own, or the last
    stamped line's for a continuation), so non-matching lines cost one anchored regex."""

    def __init__(
        self,
        *,
        year: int | None = None,
        month: int | None = None,
        default_tz: tzinfo = UTC,
    ) -> None:
        self.year, self.month, self.default_tz = year, month, default_tz
        self.lines = 0
        self.skipped = 0
        self._last: str | None = None  # last line that looked stamped
        self._last_ts: float | None = None
        self._last_done = True

    def _stamp(self, line: str) -> float | None:
        return parse_timestamp(line, year=self.year, month=self.month, default_tz=self.default_tz)

    def _looks_stamped(self, line: str) -> bool:
        c = line[:1]
        if c == "{":
            return True
        if bool(c) and (c.isdigit() or c in "<[" or c in "ADFJMNOSEIW"):
            return True
        return _logfmt_time(line) is not None

    def feed(self, line: str, where: str = "") -> LogEvent | None:
        """One line (without its newline); `where` is `file:line` for the evidence."""
        self.lines += 1
        kind = classify(line)
        if kind is None:
            if self._looks_stamped(line):
                self._last, self._last_done = line, False
            return None
        ts = self._stamp(line) if self._looks_stamped(line) else None
        if ts is not None:
            self._last, self._last_ts, self._last_done = line, ts, True
        elif _UNREAD_STAMP.match(line) or _logfmt_record(line):
            # its own time, unreadable, or a record of its own without one: not the last
            # line's time
            self.skipped += 1
            return None
        else:
            ts = self._previous()
            if ts is None:
                self.skipped += 1
                return None
        return LogEvent(timestamp=ts, kind=kind, where=where, message=_message(line))

    def _previous(self) -> float | None:
        if not self._last_done and self._last is not None:
            ts = self._stamp(self._last)
            # A line that looked stamped but was not: keep the older stamp.
            if ts is not None:
                self._last_ts = ts
            self._last_done = True
        return self._last_ts


def _year_hint(path: Path) -> tuple[int, int]:
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return mtime.year, mtime.month


#: the longest log line read, in bytes (newline excluded): a longer one is no log line (a binary
#: file, a dump on one line) and reading it whole could take all memory
MAX_LINE_BYTES = 1 << 20


def iter_lines(path: Path, *, on_long: Callable[[int], None] | None = None) -> Iterable[str]:
    """Lines of a log file (`.gz` decompressed), newline stripped, undecodable bytes replaced;
    a line over MAX_LINE_BYTES as in numbered_lines."""
    for _, line in numbered_lines(path, on_long=on_long):
        yield line


def numbered_lines(
    path: Path, *, on_long: Callable[[int], None] | None = None
) -> Iterable[tuple[int, str]]:
    """(line number, line) of a log file, as iter_lines.

    A line longer than MAX_LINE_BYTES is never held in memory whole: it is a ReplayFormatError
    naming `file:line`, or, with `on_long`, skipped and reported as `on_long(line number)`."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                _skip_rest(fh)
                if on_long is None:
                    raise ReplayFormatError(
                        f"log line longer than {MAX_LINE_BYTES} bytes", file=str(path), line=lineno
                    )
                on_long(lineno)
                continue
            yield lineno, raw.decode("utf-8", "replace").rstrip("\r\n")


def _skip_rest(fh: gzip.GzipFile | BinaryIO) -> None:
    """Read past the rest of an over-long line, a chunk at a time."""
    while True:
        chunk = fh.readline(MAX_LINE_BYTES)
        if not chunk or chunk.endswith(b"\n"):
            return


def read_log(
    path: Path, *, year: int | None = None, default_tz: tzinfo = UTC
) -> tuple[list[LogEvent], int]:
    """(events, number of lines) of one log file. Syslog's missing year comes from `year`,
    else from the file's modification time."""
    events, lines, _ = read_log_detail(path, year=year, default_tz=default_tz)
    return events, lines


def read_log_detail(
    path: Path, *, year: int | None = None, default_tz: tzinfo = UTC
) -> tuple[list[LogEvent], int, int]:
    """Like read_log, plus the number of matching lines skipped for want of a timestamp."""
    if year is None:
        y, m = _year_hint(path)
        parser = LogLineParser(year=y, month=m, default_tz=default_tz)
    else:
        parser = LogLineParser(year=year, default_tz=default_tz)
    events = []
    name = str(path)
    for i, line in numbered_lines(path):
        ev = parser.feed(line, f"{name}:{i}")
        if ev is not None:
            events.append(ev)
    return events, parser.lines, parser.skipped
