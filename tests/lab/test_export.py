"""export_range round-trips a backfilled TSDB through a real Prometheus back to OpenMetrics."""

from __future__ import annotations

import gzip
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdwatch.lab.export import _family, export_range
from herdwatch.lab.servers import start_prometheus

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
    tmp = tmp_path_factory.mktemp("export")
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


@pytest.mark.parametrize("max_points", [10_000, 7])
def test_round_trip_is_exact(backfilled: tuple[str, str], tmp_path: Path, max_points: int) -> None:
    url, source = backfilled
    out = tmp_path / "metrics.om"
    metrics = ["redis_keyspace_hits_total", "pg_stat_activity_count", "db_query_duration_seconds"]
    stats = export_range(url, metrics, T0, T0 + N - 1, 1.0, out, max_points=max_points)
    text = out.read_text()
    assert text.endswith("# EOF\n")
    assert _samples(text) == _samples(source)
    assert stats.families == 3 and stats.missing == ()
    assert stats.samples == len(_samples(source))
    assert "# TYPE redis_keyspace_hits counter" in text
    assert "# TYPE db_query_duration_seconds histogram" in text
    # promtool must ingest what we wrote.
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(out), str(tmp_path / "t")],
        check=True,
        capture_output=True,
    )


def test_histogram_points_are_grouped_per_timestamp(
    backfilled: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = backfilled
    out = tmp_path / "h.om.gz"
    export_range(url, ["db_query_duration_seconds"], T0, T0 + 2, 1.0, out)
    lines = [ln for ln in gzip.decompress(out.read_bytes()).decode().splitlines() if ln[0] != "#"]
    names = [SAMPLE.match(ln)["name"] for ln in lines]  # type: ignore[index]
    per_ts = ["db_query_duration_seconds_bucket"] * 3 + [
        "db_query_duration_seconds_count",
        "db_query_duration_seconds_sum",
    ]
    assert names == per_ts * 3
    assert [SAMPLE.match(ln)["t"] for ln in lines[:5]] == [str(T0)] * 5  # type: ignore[index]
    assert 'le="+Inf"' in lines[2]


def test_missing_family_is_reported(backfilled: tuple[str, str], tmp_path: Path) -> None:
    url, _ = backfilled
    stats = export_range(url, ["no_such_metric_total"], T0, T0 + 5, 1.0, tmp_path / "m.om")
    assert stats.missing == ("no_such_metric_total",)
    assert (tmp_path / "m.om").read_text() == "# EOF\n"


def test_family_mapping_from_metadata() -> None:
    meta = {
        "http_requests": ("counter", "h"),  # OpenMetrics-style metadata key
        "pg_stat_database_xact_commit": ("counter", ""),  # a counter without _total
        "thing": ("untyped", ""),
    }
    fam = _family("http_requests_total", meta)
    assert (fam.name, fam.type, fam.samples) == (
        "http_requests",
        "counter",
        ("http_requests_total",),
    )
    assert _family("pg_stat_database_xact_commit", meta).type == "unknown"
    assert _family("thing", meta).type == "unknown"
    hist = _family("db_query_duration_seconds", {})
    assert hist.samples == (
        "db_query_duration_seconds_bucket",
        "db_query_duration_seconds_count",
        "db_query_duration_seconds_sum",
    )
