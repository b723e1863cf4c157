"""Issue 8's bullets that a fixture alone does not pin: summaries a person can read, errors
logged by several layers, a cluster's core, and the log formats real stacks write."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from herdwatch.detect.locks import core, once_per_error
from herdwatch.engine import scan
from herdwatch.model import LogEvent
from herdwatch.sources.logs import LogLineParser, parse_timestamp, zone
from herdwatch.sources.replay import load_replay

INCIDENTS = Path(__file__).resolve().parents[2] / "fixtures" / "incidents"


@pytest.mark.parametrize(
    "name", ["fleet_stampede_first_samples_15s", "fleet_two_stampedes_close_15s"]
)
def test_a_stampede_summary_names_both_p99_levels(name: str) -> None:
    found = [f for f in scan(load_replay(INCIDENTS / name)).findings]
    assert found
    for f in found:
        assert "None" not in f.summary
        assert "db p99" in f.summary


def _ev(t: float, file: str, kind: str = "lock_timeout") -> LogEvent:
    return LogEvent(timestamp=t, kind=kind, where=f"{file}:1", message="x")


def test_one_error_logged_by_three_layers_counts_once() -> None:
    layers = ((0.0, "pg"), (0.003, "go"), (0.01, "app"))
    evs = [_ev(t + d, f) for t in (10.0, 50.0, 90.0) for d, f in layers]
    assert [e.timestamp for e in once_per_error(evs, 0.05)] == [10.0, 50.0, 90.0]


def test_a_burst_in_one_file_keeps_its_count() -> None:
    evs = [_ev(100.0 + i * 0.001, "pg") for i in range(1800)]
    assert len(once_per_error(evs, 0.05)) == 1800


def test_the_core_drops_background_at_the_edges() -> None:
    background = [_ev(t, "pg") for t in (0.0, 70.0, 140.0)]
    evs = background + [_ev(300 + i / 900, "pg") for i in range(1800)]
    kept = core(evs, 10.0)
    assert kept[0].timestamp == 300.0 and len(kept) == 1800


@pytest.mark.parametrize(
    "line",
    [
        "2025/11/24 03:00:01 [error] 12#0: *5 connect() failed (111: Connection refused)",
        "2025/11/24 03:00:01.000000 dial tcp: connection refused",
        "[Mon Nov 24 03:00:01.000000 2025] [proxy:error] [pid 1] (111)Connection refused",
        "E1124 03:00:01.000000    1234 file.go:12] connection refused",
        "1763953201 connection refused",
        "[1763953201000] connection refused",
        "<27>1 2025-11-24T03:00:01.000Z host app 1 - - connection refused",
        "2025-11-24 03:00:01,000 ERROR [main] c.x.Y - Connection refused",
    ],
)
def test_log_formats_are_stamped(line: str) -> None:
    want = datetime(2025, 11, 24, 3, 0, 1, tzinfo=UTC).timestamp()
    assert parse_timestamp(line, year=2025, month=11) == pytest.approx(want)


def test_local_time_zones_from_config_values() -> None:
    line = "2025/11/24 03:00:01 [error] connection refused"
    utc = datetime(2025, 11, 24, 3, 0, 1, tzinfo=UTC).timestamp()
    assert parse_timestamp(line, default_tz=zone("UTC+5:30")) == utc - 5.5 * 3600
    assert parse_timestamp(line, default_tz=zone("-05:00")) == utc + 5 * 3600
    with pytest.raises(ValueError):
        zone("Mars/Olympus")


def test_an_unreadable_stamp_does_not_inherit_the_last_time() -> None:
    p = LogLineParser(year=2025)
    assert p.feed("2025-11-24 03:00:00 UTC [1] LOG:  starting") is None
    assert p.feed("24.11.2025 03:10:00 connection refused") is None
    assert p.skipped == 1
    # a continuation (a traceback's last line) still takes the stamped line's time
    assert p.feed("psycopg2.OperationalError: connection refused") is not None
