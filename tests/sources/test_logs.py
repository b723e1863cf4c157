"""Log timestamps (Postgres, ISO 8601, JSON, syslog), error classification, continuations."""

from __future__ import annotations

import gzip
import json
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdwatch.sources.logs import (
    KINDS,
    LogLineParser,
    classify,
    parse_log_line,
    parse_timestamp,
    read_log,
    read_log_detail,
)

T = datetime(2025, 11, 24, 3, 0, 1, 123000, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2025-11-24 03:00:01.123 UTC [123] app@db ERROR:  x", T),
        ("2025-11-24 04:00:01.123 CET [123] app@db ERROR:  x", T),
        ("2025-11-23 22:00:01.123 EST [9] app@db FATAL:  x", T),
        ("2025-11-24 06:00:01.123 +03 [9] x", T),
        ("2025-11-24 08:30:01.123 +0530 [9] x", T),
        ("2025-11-24 03:00:01 UTC [9] x", T - 0.123),
        ("2025-11-24T03:00:01.123Z x", T),
        ("2025-11-24T04:00:01.123+01:00 x", T),
        ("2025-11-24T03:00:01.123456Z 12 [ERROR] [MY-012345] [InnoDB] x", T + 0.000456),
        ("2025-11-24 03:00:01,123 ERROR app: x", T),
        ("[2025-11-24 03:00:01.123] ERROR x", T),
        ('{"ts": 1763953201.123, "msg": "x"}', T),
        ('{"time": 1763953201123, "msg": "x"}', T),
        ('{"t": 1763953201123000, "msg": "x"}', T),
        ('{"timestamp": 1763953201123000000}', T),
        ('{"@timestamp": "2025-11-24T03:00:01.123Z", "message": "x"}', T),
        ('{"timestamp": "2025-11-24 03:00:01.123 UTC", "error_severity": "ERROR"}', T),
        ("Nov 24 03:00:01 db1 postgres[123]: x", T - 0.123),
        ("<13>Nov 24 03:00:01 db1 app: x", T - 0.123),
        ("<34>1 2025-11-24T03:00:01.123Z db1 app 12 - - x", T),
        ("2025-11-24 03:00:01.123 XYZT [1] x", None),
        ("\tat java.net.PlainSocketImpl.connect", None),
        ("DETAIL:  Process 12 waits for ShareLock", None),
        ('{"msg": "no time here"}', None),
        ("", None),
    ],
)
def test_timestamps(line: str, expected: float | None) -> None:
    got = parse_timestamp(line, year=2025)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_syslog_year_comes_from_the_hint_and_rolls_back_over_new_year() -> None:
    assert (
        parse_timestamp("Dec 31 23:59:59 h p: x", year=2026, month=1)
        == datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    )
    assert (
        parse_timestamp("Jan  1 00:00:01 h p: x", year=2026, month=1)
        == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    )
    assert parse_timestamp("Jan  1 00:00:01 h p: x") is None  # no year: unstamped


def test_naive_times_take_the_default_zone() -> None:
    berlin = timezone(timedelta(hours=1))
    assert parse_timestamp("2025-11-24 04:00:01.123 ERROR x", default_tz=berlin) == T


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("ERROR:  canceling statement due to lock timeout", "lock_timeout"),
        ("[ERROR] Lock wait timeout exceeded; try restarting transaction", "lock_timeout"),
        ("FATAL:  sorry, too many clients already", "too_many_clients"),
        (
            "FATAL:  remaining connection slots are reserved for non-replication superuser",
            "too_many_clients",
        ),
        ("ERROR 1040 (HY000): Too many connections", "too_many_clients"),
        ("psycopg.OperationalError: connection refused", "connection_refused"),
        ("Error: connect ECONNREFUSED 127.0.0.1:5432", "connection_refused"),
        ("ConnectionRefusedError: [Errno 111] Connection refused", "connection_refused"),
        ("ERROR:  deadlock detected", "deadlock"),
        ("Deadlock found when trying to get lock; try restarting transaction", "deadlock"),
        ("LOG:  checkpoint starting: time", None),
        ('ERROR:  relation "users" does not exist', None),
    ],
)
def test_classification(line: str, kind: str | None) -> None:
    assert classify(line) == kind
    assert kind is None or kind in KINDS


def test_parse_log_line_is_stateless() -> None:
    assert parse_log_line("2025-11-24T03:00:01.123Z deadlock detected") == (T, "deadlock")
    assert parse_log_line("\tdeadlock detected") == (None, "deadlock")


def test_continuation_takes_previous_stamp_and_orphans_are_counted() -> None:
    p = LogLineParser(year=2025)
    lines = [
        "connection refused before any timestamp",
        "2025-11-24 03:00:01.123 UTC [7] app@db LOG:  statement: select 1",
        "Traceback (most recent call last):",
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "2025-11-24 03:00:02.000 UTC [7] app@db ERROR:  deadlock detected",
    ]
    events = [e for i, line in enumerate(lines, 1) if (e := p.feed(line, f"x.log:{i}"))]
    assert [(e.timestamp, e.kind, e.where) for e in events] == [
        (pytest.approx(T), "connection_refused", "x.log:4"),
        (pytest.approx(T + 0.877), "deadlock", "x.log:5"),
    ]
    assert (p.lines, p.skipped) == (5, 1)


def test_json_message_is_the_event_message() -> None:
    p = LogLineParser()
    ev = p.feed(json.dumps({"ts": 1763953201.123, "level": "error",
                            "msg": "connect ECONNREFUSED 10.0.0.5:6379"}))  # fmt: skip
    assert ev is not None and ev.message == "connect ECONNREFUSED 10.0.0.5:6379"


def test_read_log_plain_and_gzip_with_mtime_year(tmp_path: Path) -> None:
    text = "Nov 24 03:00:01 db1 app[1]: connect ECONNREFUSED\nNov 24 03:00:02 db1 app[1]: ok\n"
    plain = tmp_path / "app.log"
    plain.write_text(text)
    packed = tmp_path / "app.log.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    stamp = datetime(2025, 12, 1, tzinfo=UTC).timestamp()
    for p in (plain, packed):
        os.utime(p, (stamp, stamp))
        events, n = read_log(p)
        assert n == 2
        assert [(e.timestamp, e.kind, e.where) for e in events] == [
            (T - 0.123, "connection_refused", f"{p}:1")
        ]
    events, n, skipped = read_log_detail(plain, year=2024)
    assert events[0].timestamp == datetime(2024, 11, 24, 3, 0, 1, tzinfo=UTC).timestamp()
    assert skipped == 0


ZONES = st.sampled_from([("UTC", 0.0), ("CET", 1.0), ("PDT", -7.0), ("+05:30", 5.5),
                         ("-03", -3.0)])  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    ZONES,
    st.sampled_from(["pg", "iso", "json", "syslog"]),
)
def test_timestamp_matches_datetime_reference(
    when: datetime, zone: tuple[str, float], style: str
) -> None:
    """Formatting a wall-clock time in a zone and parsing it back gives datetime's answer."""
    name, hours = zone
    tz = timezone(timedelta(hours=hours))
    ms = when.microsecond // 1000
    wall = when.replace(microsecond=ms * 1000)
    expected = wall.replace(tzinfo=tz).timestamp()
    base = wall.strftime("%Y-%m-%d %H:%M:%S")
    if style == "pg":
        line = f"{base}.{ms:03d} {name} [42] app@db ERROR:  deadlock detected"
        got = parse_timestamp(line)
    elif style == "iso":
        off = "Z" if hours == 0 else wall.replace(tzinfo=tz).strftime("%z")
        line = f"{wall.strftime('%Y-%m-%dT%H:%M:%S')}.{ms:03d}{off} deadlock detected"
        got = parse_timestamp(line)
    elif style == "json":
        got = parse_timestamp(json.dumps({"ts": expected}))
    else:
        line = f"{wall.strftime('%b')} {wall.day:2d} {wall.strftime('%H:%M:%S')} h p: x"
        got = parse_timestamp(line, year=wall.year, default_tz=tz)
        expected = wall.replace(microsecond=0, tzinfo=tz).timestamp()
    assert got == pytest.approx(expected, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60), st.sampled_from([
    '{"ts": 1e400, "msg": "ECONNREFUSED"}', '{"ts": NaN, "msg": "deadlock detected"}',
    '{"time": "1764000000", "msg": "connection refused"}', "Feb 30 03:00:01 h p: deadlock detected",
    "9999-99-99 99:99:99 UTC [1] deadlock detected", "<999>1 x", '{"t": true}', "[",
])), max_size=8))  # fmt: skip
def test_any_line_is_safe(lines: list[str]) -> None:
    """Arbitrary text never raises, and every event has a finite timestamp."""
    p = LogLineParser(year=2025, month=11)
    for line in lines:
        ev = p.feed(line)
        assert ev is None or (math.isfinite(ev.timestamp) and ev.kind in KINDS)
        ts, kind = parse_log_line(line, year=2025)
        assert kind == classify(line)
        assert ts is None or math.isfinite(ts)


@pytest.mark.parametrize("value", [1e308, -1e308, 1e30, -5.0, "1e308", 2e11 * 1e3 * 1e3 * 1e9])
def test_json_times_no_calendar_holds_are_unstamped(value: object) -> None:
    """A JSON log time of 1e308 is no time (it crashed the report, issue 9)."""
    line = json.dumps({"time": value, "msg": "canceling statement due to lock timeout"})
    assert parse_timestamp(line) is None


def test_json_times_in_every_unit_still_read() -> None:
    for v in (1764000000, 1764000000e3, 1764000000e6, 1764000000e9):
        assert parse_timestamp(json.dumps({"ts": v})) == pytest.approx(1764000000)
