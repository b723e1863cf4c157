"""What one Watcher tick costs: a 30-minute window of 200 series at 1 s, ticked every second.

    python benchmarks/watch_tick.py [--series 200] [--window 1800] [--ticks 120]

The series are what a mid-size fleet exports (Redis shards, an HTTP front end, a database
latency histogram per app instance, node CPU and context switches per host, pg_stat_activity
per state), served by an in-memory source as a live one would hand them over, second by second.
Prints the tick's wall time percentiles (target: under 50 ms) and the engine's own cost figure.
The first `WARMUP` ticks are not measured: they pay what a process pays once (scipy.ndimage's
import when the rolling median's numpy budget runs out, see detect/_rolling), not per tick.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from herdwatch.engine import Watcher
from herdwatch.model import RawData, Series, SourceStatus
from herdwatch.rules import load_rules
from herdwatch.sources.base import CollectWindow

T0 = 1_764_000_000.0
#: ticks run before measuring: enough to spend detect/_rolling's numpy budget at 200 series
WARMUP = 5
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")


def _counter(name: str, family: str, labels: dict[str, str], t: np.ndarray, rate: float,
             rng: np.random.Generator) -> Series:  # fmt: skip
    inc = rng.poisson(rate, len(t)).astype(float)
    return Series(name, tuple(sorted(labels.items())), t, np.cumsum(inc), family, "counter")


def fleet(n_series: int, seconds: float, seed: int = 1) -> list[Series]:
    """About `n_series` raw series over `seconds` at 1 s, in exporter names."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(0.0, seconds)
    out: list[Series] = []
    shard = 0
    while len(out) < n_series:
        inst = {"instance": f"redis-{shard}:9121", "job": "redis"}
        out.append(_counter("redis_keyspace_hits_total", "redis_keyspace_hits", inst, t, 300, rng))
        out.append(
            _counter("redis_keyspace_misses_total", "redis_keyspace_misses", inst, t, 9, rng)
        )
        host = {"instance": f"node-{shard}:9100", "job": "node"}
        out.append(
            _counter("node_context_switches_total", "node_context_switches", host, t, 4000, rng)
        )
        for mode, rate in (("user", 0.3), ("system", 0.05), ("idle", 1.6)):
            out.append(_counter("node_cpu_seconds_total", "node_cpu_seconds",
                                {**host, "mode": mode}, t, rate * 100, rng))  # fmt: skip
        app = {"instance": f"app-{shard}:8080", "job": "app"}
        out.append(
            _counter("http_requests_total", "http_requests", {**app, "code": "200"}, t, 150, rng)
        )
        below = 0.0
        for le in BUCKETS:
            below += {"0.005": 5, "0.01": 30, "0.025": 60, "0.05": 30}.get(le, 1)
            labels = {**app, "le": le}
            out.append(Series("db_query_duration_seconds_bucket", tuple(sorted(labels.items())),
                              t, np.cumsum(rng.poisson(below, len(t)).astype(float)),
                              "db_query_duration_seconds", "histogram"))  # fmt: skip
        shard += 1
    return out[:n_series]


class MemorySource:
    """Serves recorded series for (since, until], like a live history source."""

    name = "memory"

    def __init__(self, series: list[Series]) -> None:
        self.series = series

    async def collect(self, window: CollectWindow) -> RawData:
        lo = -np.inf if window.since is None else window.since
        hi = np.inf if window.until is None else window.until
        out = []
        for s in self.series:
            i0 = int(np.searchsorted(s.timestamps, lo, side="right"))
            i1 = int(np.searchsorted(s.timestamps, hi, side="right"))
            if i1 > i0:
                out.append(Series(s.name, s.labels, s.timestamps[i0:i1], s.values[i0:i1],
                                  s.family, s.type))  # fmt: skip
        return RawData(out, sources=[SourceStatus(self.name, True)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--window", type=float, default=1800.0)
    ap.add_argument("--ticks", type=int, default=120)
    args = ap.parse_args()
    total = args.window + WARMUP + args.ticks + 1
    series = fleet(args.series, total)
    watcher = Watcher([MemorySource(series)], rules=load_rules(), lookback=args.window)
    now = T0 + args.window
    for _ in range(WARMUP):
        now += 1.0
        asyncio.run(watcher.poll(now))
        watcher.tick(now)
    walls, costs = [], []
    cpu0 = time.process_time()
    for _ in range(args.ticks):
        now += 1.0
        started = time.perf_counter()
        asyncio.run(watcher.poll(now))
        snap = watcher.tick(now)
        walls.append(time.perf_counter() - started)
        costs.append(snap.cost.seconds)
    cpu = time.process_time() - cpu0
    q = statistics.quantiles([w * 1000 for w in walls], n=100)
    print(f"watch_tick: {len(series)} series, {args.window:g} s window at 1 s, {args.ticks} ticks, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"  poll + tick wall: p50 {q[49]:.1f} ms  p90 {q[89]:.1f} ms  p99 {q[98]:.1f} ms  "
          f"max {max(walls) * 1000:.1f} ms   (target: under 50 ms)")  # fmt: skip
    print(f"  engine's own tick cost (Snapshot.cost): p50 {statistics.median(costs) * 1000:.1f} ms")
    print(f"  CPU {cpu / args.ticks * 1000:.1f} ms per tick; {snap.cost.samples} samples scanned")


if __name__ == "__main__":
    main()
