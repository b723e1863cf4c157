"""`herdwatch.capture` round-trips a backfilled TSDB through a real Prometheus back to the very
same OpenMetrics samples, in a file promtool ingests."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdwatch.capture import capture
from herdwatch.config import PrometheusConfig
from tests.support.servers import start_prometheus

T0 = 1_764_000_000
N = 40
SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})? (?P<v>\S+) (?P<t>\S+)$"
)
BUCKETS = ("0.05", "0.25", "+Inf")


def _source_text() -> str:
    lines = ["# TYPE redis_keyspace_hits counter"]
    lines += [f"redis_keyspace_hits_total {100 + 7 * i} {T0 + i}" for i in range(N)]
    lines.append("# TYPE pg_stat_activity_count gauge")
    for state in ("active", 'idle "quoted"'):
        esc = state.replace('"', '\\"')
        lines += [
            f'pg_stat_activity_count{{datname="app",state="{esc}"}} {i % 5} {T0 + i}'
            for i in range(N)
        ]
    lines.append("# TYPE db_query_duration_seconds histogram")
    for i in range(N):
        counts = (2 * i, 3 * i, 4 * i)
        for le, c in zip(BUCKETS, counts, strict=True):
            lines.append(f'db_query_duration_seconds_bucket{{le="{le}"}} {c} {T0 + i}')
        lines.append(f"db_query_duration_seconds_count {4 * i} {T0 + i}")
        lines.append(f"db_query_duration_seconds_sum {0.5 * i} {T0 + i}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _samples(text: str) -> dict[tuple[str, str, float], float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        out[(m["name"], m["labels"] or "", float(m["t"]))] = float(m["v"])
    return out


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("capture")
    src = tmp / "source.om"
    src.write_text(_source_text())
    tsdb = tmp / "tsdb"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(src), str(tsdb)],
        check=True,
        capture_output=True,
    )
    with start_prometheus(tsdb_dir=tsdb) as prom:
        yield prom.url, src.read_text()


def test_round_trip_is_exact(backfilled: tuple[str, str], tmp_path: Path) -> None:
    url, source = backfilled
    res = capture(PrometheusConfig(url=url), T0, T0 + N - 1, tmp_path / "incident", {})
    text = res.metrics.read_text()
    assert res.metrics.name == "metrics.om" and text.endswith("# EOF\n")
    assert _samples(text) == _samples(source)
    assert res.families == 3 and res.samples == len(_samples(source))
    assert "# TYPE redis_keyspace_hits counter" in text
    assert "# TYPE db_query_duration_seconds histogram" in text
    assert (res.since, res.until, res.step) == (T0, T0 + N - 1, 1.0)
    # promtool must ingest what was written.
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(res.metrics),
         str(tmp_path / "t")],
        check=True, capture_output=True,
    )  # fmt: skip


def test_histogram_points_are_grouped_per_timestamp(
    backfilled: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = backfilled
    res = capture(PrometheusConfig(url=url), T0, T0 + 2, tmp_path / "incident", {})
    lines = [ln for ln in res.metrics.read_text().splitlines() if ln[0] != "#"]
    lines = [ln for ln in lines if ln.startswith("db_query_duration_seconds")]
    names = [SAMPLE.match(ln)["name"] for ln in lines]  # type: ignore[index]
    per_ts = ["db_query_duration_seconds_bucket"] * 3 + [
        "db_query_duration_seconds_count",
        "db_query_duration_seconds_sum",
    ]
    assert names == per_ts * 3
    assert [SAMPLE.match(ln)["t"] for ln in lines[:5]] == [str(T0)] * 5  # type: ignore[index]
    assert 'le="+Inf"' in lines[2]


def test_capture_writes_no_source_url_and_no_secret(
    backfilled: tuple[str, str], tmp_path: Path
) -> None:
    """The directory is made to be shared: its herdwatch.yaml names no host, URL or token,
    even when the config's values carry one (issue 9)."""
    url, _ = backfilled
    used = {
        "signals": {"cache_hits": "redis_keyspace_hits_total"},
        "rules": {"cache_stampede": {"align_steps": 3}},
        "sources": {"prometheus": {"url": url + "/?access_token=tok3n"}},
    }
    res = capture(PrometheusConfig(url=url), T0, T0 + 5, tmp_path / "incident", used)
    text = res.config.read_text()
    host = url.split("://", 1)[1]
    assert host not in text and "tok3n" not in text and "sources" not in text
    assert text.startswith("# Captured by herdwatch from Prometheus at a 1 s step,")
    for f in (tmp_path / "incident").iterdir():
        assert "tok3n" not in f.read_bytes().decode("utf-8", "replace")
