"""Benchmark: a 1 h scan from a real Prometheus against the bare query_range fetch it needs.

    .venv/bin/python benchmarks/prometheus_scan.py [--hours 1] [--repeat 5]

Generates 1 h at 1 s of the standard exporter families (about 100 series, with
benchmarks/scan_large.py's generator), backfills it with promtool into a temporary TSDB, starts
a real Prometheus on it (tests.support.servers) and times, alternately, in one run:

* bare: `PrometheusConnect.custom_query_range` of every family herdwatch reads, over the hour
  at the 1 s scrape step (chunked under 11,000 points per series), JSON decoded, nothing else;
* scan: `PrometheusSource.fetch` (the same range queries plus its step, phase and scrape-time
  probes, converted to Series) followed by `engine.scan` (signals, every detector, recommend).

Prints the median of each, the ratio scan/bare (target: at most 1.5) and the samples fetched.
A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_api_client import PrometheusConnect  # noqa: E402

from herdwatch.config import PrometheusConfig  # noqa: E402
from herdwatch.engine import scan  # noqa: E402
from herdwatch.sources.prometheus import MAX_POINTS, PrometheusSource  # noqa: E402
from tests.support.servers import start_prometheus  # noqa: E402


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "scan_large", REPO / "benchmarks" / "scan_large.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bare_fetch(url: str, selectors: list[str], start: float, end: float, step: float) -> int:
    """query_range of every selector, chunked like the source; returns the points received."""
    conn = PrometheusConnect(url=url)
    points = 0
    span = (MAX_POINTS - 1) * step
    for sel in selectors:
        a = start
        while a <= end:
            b = min(a + span, end)
            result = conn.custom_query_range(
                sel,
                start_time=datetime.fromtimestamp(a, UTC),
                end_time=datetime.fromtimestamp(b, UTC),
                step=f"{step:g}",
            )
            points += sum(len(item["values"]) for item in result)
            a = b + step
    return points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    gen = _generator()
    tmp = Path(tempfile.mkdtemp(prefix="herdwatch-prombench-"))
    try:
        n_series, n_samples = gen.generate(tmp, args.hours)
        t0 = time.perf_counter()
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics",
             str(tmp / "metrics.om"), str(tmp / "tsdb")],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"generated {n_series} series, {n_samples} samples; "
              f"promtool backfill {time.perf_counter() - t0:.1f}s")  # fmt: skip
        start = float(gen.START)
        end = start + args.hours * 3600 - 1
        with start_prometheus(tsdb_dir=tmp / "tsdb") as prom:
            source = PrometheusSource(PrometheusConfig(url=prom.url))
            plans, _ = source.plans(start, end)
            selectors = [p.sample for p in plans]
            print(f"prometheus {prom.url}; {len(selectors)} families: "
                  + ", ".join(p.family for p in plans))  # fmt: skip
            bare_t: list[float] = []
            scan_t: list[float] = []
            fetch_t: list[float] = []
            points = 0
            findings: list[str] = []
            for i in range(args.repeat + 1):  # the first round warms caches and is dropped
                a = time.perf_counter()
                points = bare_fetch(prom.url, selectors, start, end, 1.0)
                b = time.perf_counter()
                raw = source.fetch(start, end)
                m = time.perf_counter()
                result = scan(raw)
                c = time.perf_counter()
                findings = [f.signature for f in result.findings]
                if i:
                    bare_t.append(b - a)
                    fetch_t.append(m - b)
                    scan_t.append(c - b)
            bare, full = statistics.median(bare_t), statistics.median(scan_t)
            print(f"bare query_range fetch: {bare:.3f}s ({points} points; runs "
                  + ", ".join(f"{x:.3f}" for x in bare_t) + ")")  # fmt: skip
            runs = ", ".join(f"{x:.3f}" for x in scan_t)
            print(f"herdwatch scan:         {full:.3f}s ({len(raw.series)} series, step "
                  f"{source.step:g}s; runs {runs})")  # fmt: skip
            fetch = statistics.median(fetch_t)
            engine = statistics.median(x - y for x, y in zip(scan_t, fetch_t, strict=True))
            print(f"  of which PrometheusSource.fetch {fetch:.3f}s ({fetch / bare:.2f}x bare), "
                  f"engine.scan {engine:.3f}s")  # fmt: skip
            print(f"ratio scan/bare: {full / bare:.2f}x (target <= 1.5x); findings: {findings}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
