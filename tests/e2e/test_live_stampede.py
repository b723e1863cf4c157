"""End to end on a real herd: a live Prometheus scanned over HTTP finds a real cache stampede.

One real stack (Redis + redis_exporter, PostgreSQL 15 + postgres_exporter, node_exporter, and
the load driver of fixtures/capture/stampede_load.py as the app, all scraped every second) runs
one timeline:

1. open-loop cache-aside readers at a flat rate; hundreds of hot keys share ONE expiry and a
   miss runs a real sequential-scan aggregate on Postgres: a stampede at `expire_at`;
2. after it has settled, a second driver process joins: the request rate triples, with the
   same hot keys cached (a pure traffic increase).

PrometheusSource + scan must find `cache_stampede` in the first window and not in the second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import psycopg
import pytest

from herdwatch.config import PrometheusConfig
from herdwatch.engine import scan
from herdwatch.model import ScanResult, Signal
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.prometheus import PrometheusSource
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

CAPTURE = Path(__file__).resolve().parents[2] / "fixtures" / "capture"
RATE = 150.0  # requests per second of the first driver
SURGE_RATE = 300.0  # the second driver's: traffic x3
HOT_KEYS = 600
ROWS = 400_000  # ~30 ms a query: the stampede saturates two cores, as a real one would
BASELINE = 22.0  # seconds of steady traffic before the expiry
AFTER = 12.0  # seconds after the expiry in the stampede window
#: seconds of steady traffic opening the surge window: the stampede's reloads (600 keys, ~30 ms a
#: query, ~75 ms on a slow machine) settle in its first part
CALM = 24.0
SURGE = 11.0  # seconds of tripled traffic closing it


def _lab_stack() -> ModuleType:
    """fixtures/capture/lab_stack.py (the capture scripts' stack), imported from its file."""
    spec = importlib.util.spec_from_file_location("lab_stack", CAPTURE / "lab_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Timeline:
    prometheus: str
    expire_at: float
    stampede: tuple[float, float]
    surge_at: float
    surge: tuple[float, float]


def _driver(args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start stampede_load.py; return it and the time it said it was ready."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(CAPTURE / "stampede_load.py"), *args],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"driver exited: {log.read_text()[-2000:]}"
    return proc, float(json.loads(line)["ready"])


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 1.0))


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Timeline]:
    lab = _lab_stack()
    log = tmp_path_factory.mktemp("drivers") / "drivers.log"
    ports = [free_port(), free_port()]
    targets = {"app": f"http://127.0.0.1:{ports[0]}/metrics",
               "app2": f"http://127.0.0.1:{ports[1]}/metrics"}  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    # One backend per query (no parallel workers): the loader's queries queue on the pool.
    with lab.stack(extra_targets=targets, pg_settings={"max_parallel_workers_per_gather": 0}) as st:
        try:
            with psycopg.connect(st.postgres.dsn, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE items AS SELECT g AS id, g %% 500 AS grp, random() AS v "
                    "FROM generate_series(1, %s) g",
                    (ROWS,),
                )
                # hint bits and the visibility map set now: no autovacuum of the new table and
                # no first-touch page writes during the baseline
                conn.execute("VACUUM ANALYZE items")
            phase = lab.scrape_phase(st.prometheus, "redis")
            # 150 ms after a redis_exporter scrape: the next scrape shows a whole second of it
            expire_at = math.floor(time.time() + BASELINE + 3) + phase + 0.15
            surge_at = expire_at + AFTER + CALM
            common = ["--redis", st.redis.url, "--dsn", st.postgres.dsn,
                      "--hot-keys", str(HOT_KEYS)]  # fmt: skip
            first, ready = _driver(
                [*common, "--port", str(ports[0]), "--rate", str(RATE),
                 "--expire-at", f"{expire_at:.3f}",
                 "--duration", f"{surge_at + SURGE + 2 - time.time():.1f}"],
                log,
            )  # fmt: skip
            procs.append(first)
            start = ready + 2.0
            _sleep_until(surge_at)
            # The same hot keys, cached for an hour: more readers, no expiry.
            second, _ = _driver(
                [*common, "--port", str(ports[1]), "--rate", str(SURGE_RATE), "--seed", "2",
                 "--expire-at", f"{time.time() + 3600:.3f}", "--duration", f"{SURGE + 2:.1f}"],
                log,
            )  # fmt: skip
            procs.append(second)
            _sleep_until(surge_at + SURGE + 1.5)  # the last scrapes land
            yield Timeline(
                st.prometheus.url,
                expire_at,
                (start, expire_at + AFTER),
                surge_at,
                (expire_at + AFTER, surge_at + SURGE),
            )
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
                if proc.stdout is not None:
                    proc.stdout.close()


def _scan(tl: Timeline, window: tuple[float, float]) -> ScanResult:
    source = PrometheusSource(PrometheusConfig(url=tl.prometheus, timeout=10))
    raw = source.fetch(*window)
    assert source.step == 1.0
    return scan(raw)


def _around(result: ScanResult, tl: Timeline) -> str:
    """Findings and the key signals around the expiry, for a failure message."""
    lines = [str([(f.signature, round(f.onset, 3), f.summary) for f in result.findings])]
    for name in ("miss_ratio", "db_latency_p99", "cache_requests", "requests"):
        sig = result.signals.get(name)
        if sig is not None:
            sel = (sig.t > tl.expire_at - 5) & (sig.t < tl.expire_at + 8)
            pairs = zip(sig.t[sel] - tl.expire_at, sig.v[sel], strict=True)
            pts = ", ".join(f"{t:+.1f}:{v:.3g}" for t, v in pairs)
            lines.append(f"{name}: {pts}")
    return "\n".join(lines)


async def test_live_stampede_is_found(timeline: Timeline) -> None:
    source = PrometheusSource(PrometheusConfig(url=timeline.prometheus, timeout=10))
    raw = await source.collect(CollectWindow(*timeline.stampede))
    result = scan(raw)
    found = [f for f in result.findings if f.signature == "cache_stampede"]
    assert found, f"no stampede at {timeline.expire_at:.3f}: {_around(result, timeline)}"
    # the first redis_exporter scrape after the shared expiry (one step of tolerance)
    assert timeline.expire_at <= found[0].onset <= timeline.expire_at + 2.0, (
        f"onset {found[0].onset:.3f}, expiry {timeline.expire_at:.3f}: {_around(result, timeline)}"
    )
    # the database felt it: its p99 rose, or (with headroom) its connections in use did
    assert {"db_latency_p99", "db_connections"} & set(found[0].signals), found[0].evidence
    assert {"requests", "cache_requests", "db_latency_p99", "db_connections"} <= set(result.signals)


def test_pure_traffic_increase_is_not_a_stampede(timeline: Timeline) -> None:
    result = _scan(timeline, timeline.surge)
    assert "cache_stampede" not in {f.signature for f in result.findings}
    # the surge is really there: requests and misses up, ratio flat, against the settled level
    # before the stampede (on a slow machine the stampede's reloads still settle into the calm)
    calm = _scan(timeline, (timeline.stampede[0], timeline.expire_at)).signals
    names = ("requests", "cache_misses", "miss_ratio")

    def level(sig: Signal, lo: float, hi: float) -> float:
        sel = (sig.t >= lo) & (sig.t < hi)
        return float(np.nanmedian(sig.v[sel]))

    before = (timeline.stampede[0] + 2, timeline.expire_at)
    during = (timeline.surge_at + 4, timeline.surge[1])
    req, misses, ratio = (level(result.signals[k], *during) for k in names)
    req0, misses0, ratio0 = (level(calm[k], *before) for k in names)
    assert req > 2.2 * req0 and misses > 1.8 * misses0 and ratio < 1.5 * ratio0, (
        (req0, req),
        (misses0, misses),
        (ratio0, ratio),
    )
