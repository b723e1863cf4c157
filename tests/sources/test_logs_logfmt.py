"""logfmt lines (Go's slog and logrus, go-kit, Prometheus' own logs) and local times with their
offsets: each line's own time, and a record without one never takes another line's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herdwatch.sources.logs import LogLineParser, parse_timestamp, zone

WANT = datetime(2026, 8, 12, 3, 44, 3, 271000, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "line",
    [
        'time="2026-08-12T09:14:03.271+05:30" level=error msg="connection refused"',
        "time=2026-08-12T09:14:03.271+05:30 level=ERROR source=db.go:3 msg=refused",
        'ts=2026-08-12T03:44:03.271Z caller=main.go:12 level=error msg="connection refused"',
        'level=error ts=2026-08-12T03:44:03.271Z caller=main.go:12 msg="connection refused"',
        "t=2026-08-11T22:44:03.271-05:00 lvl=eror msg=refused",
        "ts=1786506243.271 level=error msg=refused",
        "2026-08-12T09:14:03,271+0530 ERROR [pool-2-thread-4] Connection refused",
        "2026-08-11T22:44:03,271-0500 ERROR [main] Connection refused",
    ],
)
def test_logfmt_and_offset_stamps(line: str) -> None:
    assert parse_timestamp(line, year=2026) == pytest.approx(WANT)


def test_a_local_time_without_offset_reads_in_the_configured_zone() -> None:
    line = "time=2026-08-12T09:14:03.271 level=error msg=refused"
    assert parse_timestamp(line, default_tz=zone("UTC+5:30")) == pytest.approx(WANT)


@pytest.mark.parametrize(
    "line",
    [
        'level=error msg="connection refused"',
        'time=yesterday level=error msg="connection refused"',
        "09:14:03.271 [main] ERROR c.x.Y - Connection refused",
    ],
)
def test_a_record_without_a_readable_time_is_skipped_not_inherited(line: str) -> None:
    p = LogLineParser(year=2026)
    assert p.feed("time=2026-08-12T03:44:03Z level=info msg=start") is None
    assert p.feed(line) is None
    assert p.skipped == 1
    # a traceback's last line still continues the stamped record before it
    assert p.feed("psycopg2.OperationalError: connection refused") is not None
