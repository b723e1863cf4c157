"""Export a Prometheus time range as OpenMetrics text that promtool can backfill.

``export_range`` runs ``query_range`` per metric family (chunked under Prometheus' 11,000
points-per-series limit), types each family from ``/api/v1/metadata`` (falling back to the known
exporter types), and writes ``# TYPE`` / ``# HELP`` lines, samples with timestamps in seconds,
histograms as buckets + ``_count`` + ``_sum`` per timestamp, and the final ``# EOF``.
Gaps (failed scrapes, stale series) stay gaps: nothing is interpolated.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from prometheus_api_client import PrometheusConnect

from herdwatch.sources.omwrite import format_labels, format_time, write_maybe_gzipped

__all__ = ["KNOWN_TYPES", "MAX_POINTS", "ExportStats", "RangeSeries", "export_range", "fetch_range"]

# Prometheus refuses a range query with more than 11,000 points per series; stay well under.
MAX_POINTS = 10_000

# Types of the families herdwatch reads, for when a Prometheus has no metadata (e.g. backfilled).
KNOWN_TYPES: Mapping[str, str] = {
    "redis_keyspace_hits_total": "counter",
    "redis_keyspace_misses_total": "counter",
    "redis_commands_processed_total": "counter",
    "redis_expired_keys_total": "counter",
    "redis_connected_clients": "gauge",
    "redis_db_keys": "gauge",
    "redis_db_keys_expiring": "gauge",
    "redis_up": "gauge",
    "db_query_duration_seconds": "histogram",
    "http_requests_total": "counter",
    "http_client_requests_total": "counter",
    "http_client_request_duration_seconds": "histogram",
    "pg_stat_activity_count": "gauge",
    "pg_stat_activity_max_tx_duration": "gauge",
    "pg_settings_max_connections": "gauge",
    "pg_settings_superuser_reserved_connections": "gauge",
    "pg_stat_database_numbackends": "gauge",
    "pg_up": "gauge",
    "node_context_switches_total": "counter",
    "node_cpu_seconds_total": "counter",
    "node_forks_total": "counter",
    "node_load1": "gauge",
    "up": "gauge",
}

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


@dataclass(frozen=True, slots=True)
class RangeSeries:
    """One sample series from a range query: its sample name, labels and (t, value-text) points."""

    name: str
    labels: tuple[tuple[str, str], ...]
    points: tuple[tuple[float, str], ...]


@dataclass(frozen=True, slots=True)
class ExportStats:
    """What an export wrote: families, series and samples, and the requested names with no data."""

    path: Path
    families: int
    series: int
    samples: int
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    type: str
    help: str
    samples: tuple[str, ...]


def _connect(prom: PrometheusConnect | str) -> PrometheusConnect:
    return PrometheusConnect(url=prom, disable_ssl=True) if isinstance(prom, str) else prom


def _chunks(
    start: float, end: float, step: float, max_points: int
) -> Iterable[tuple[float, float]]:
    """Non-overlapping [a, b] windows on the step grid, each with at most ``max_points`` points."""
    span = (max_points - 1) * step
    a = start
    while a <= end:
        b = min(a + span, end)
        yield a, b
        a = b + step


def fetch_range(
    prom: PrometheusConnect | str,
    query: str,
    start: float,
    end: float,
    step: float,
    *,
    max_points: int = MAX_POINTS,
) -> list[RangeSeries]:
    """Run ``query`` as query_range over [start, end] in chunks; one RangeSeries per series."""
    conn = _connect(prom)
    points: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, str]]] = defaultdict(
        list
    )
    for a, b in _chunks(start, end, step, max_points):
        result = conn.custom_query_range(
            query,
            start_time=datetime.fromtimestamp(a, UTC),
            end_time=datetime.fromtimestamp(b, UTC),
            step=format_time(step),
        )
        for item in result:
            metric = dict(item["metric"])
            name = metric.pop("__name__", "")
            key = (name, tuple(sorted(metric.items())))
            points[key].extend((float(t), str(v)) for t, v in item["values"])
    return [RangeSeries(n, labels, tuple(pts)) for (n, labels), pts in sorted(points.items())]


def _metadata(conn: PrometheusConnect) -> dict[str, tuple[str, str]]:
    try:
        entries = conn.get_metric_metadata(metric="")
    except Exception:  # metadata is a nicety: the known types cover herdwatch's families
        return {}
    out: dict[str, tuple[str, str]] = {}
    for entry in entries:
        out.setdefault(entry["metric_name"], (entry["type"], entry.get("help", "")))
    return out


def _family(name: str, meta: Mapping[str, tuple[str, str]]) -> _Family:
    """Map a requested metric name (as exposed, e.g. ``x_total``) to its OpenMetrics family."""
    base = name.removesuffix("_total")
    mtype, help_text = meta.get(name) or meta.get(base) or (KNOWN_TYPES.get(name, "unknown"), "")
    if mtype == "untyped":
        mtype = "unknown"
    if mtype == "counter":
        if name.endswith("_total"):
            return _Family(base, "counter", help_text, (name,))
        # OpenMetrics counters must end in _total; an older exporter's bare counter stays unknown.
        return _Family(name, "unknown", help_text, (name,))
    if mtype in ("histogram", "summary"):
        return _Family(name, mtype, help_text, tuple(name + s for s in _SUFFIXES[mtype]))
    return _Family(name, mtype if mtype in ("gauge", "unknown") else "unknown", help_text, (name,))


def _fmt_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _le_key(series: RangeSeries) -> float:
    le = dict(series.labels).get("le", dict(series.labels).get("quantile", "+Inf"))
    try:
        return float(le)
    except ValueError:
        return math.inf


def _write_family(out: TextIO, fam: _Family, series: Sequence[RangeSeries]) -> int:
    """Write one family; return the number of samples written."""
    out.write(f"# TYPE {fam.name} {fam.type}\n")
    if fam.help:
        out.write(f"# HELP {fam.name} {_fmt_help(fam.help)}\n")
    written = 0
    if fam.type not in ("histogram", "summary"):
        for s in series:
            prefix = s.name + format_labels(s.labels)
            for t, v in s.points:
                out.write(f"{prefix} {v} {format_time(t)}\n")
            written += len(s.points)
        return written
    # A histogram's MetricPoint is all of its buckets, _count and _sum at one timestamp.
    inner = "le" if fam.type == "histogram" else "quantile"
    groups: dict[tuple[tuple[str, str], ...], list[RangeSeries]] = defaultdict(list)
    for s in series:
        groups[tuple(kv for kv in s.labels if kv[0] != inner)].append(s)
    for _, members in sorted(groups.items()):
        parts = sorted(
            (s for s in members if s.name == fam.name + _SUFFIXES[fam.type][0]), key=_le_key
        )
        parts += [s for s in members if s.name == fam.name + "_count"]
        parts += [s for s in members if s.name == fam.name + "_sum"]
        values = [dict(s.points) for s in parts]
        stamps = sorted({t for s in parts for t, _ in s.points})
        lines = [s.name + format_labels(s.labels) for s in parts]
        for t in stamps:
            ts = format_time(t)
            for prefix, vals in zip(lines, values, strict=True):
                val = vals.get(t)
                if val is not None:
                    out.write(f"{prefix} {val} {ts}\n")
                    written += 1
    return written


def export_range(
    prom: PrometheusConnect | str,
    metrics: Sequence[str],
    start: float,
    end: float,
    step: float,
    path: Path,
    *,
    max_points: int = MAX_POINTS,
) -> ExportStats:
    """Write ``metrics`` (names as exposed, e.g. ``redis_keyspace_hits_total``) over [start, end]
    at ``step`` seconds to ``path`` as OpenMetrics (gzip when the name ends in ``.gz``)."""
    conn = _connect(prom)
    meta = _metadata(conn)
    buf = io.StringIO()
    families = series_count = samples = 0
    missing: list[str] = []
    for name in metrics:
        fam = _family(name, meta)
        selector = '{__name__=~"' + "|".join(fam.samples) + '"}'
        series = fetch_range(conn, selector, start, end, step, max_points=max_points)
        if not series:
            missing.append(name)
            continue
        samples += _write_family(buf, fam, series)
        families += 1
        series_count += len(series)
    buf.write("# EOF\n")
    write_maybe_gzipped(path, buf.getvalue().encode())
    return ExportStats(path, families, series_count, samples, tuple(missing))
