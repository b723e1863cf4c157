"""End to end on a real herd: PostgreSQL with max_connections 20 hit by `pgbench -C -c 40`.

The direct sampler (100 ms) and the log tailer run while the herd happens; `pool_exhaustion` must
be found from the sampler's series alone and from the "too many clients" log lines alone.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from herdwatch import engine
from herdwatch.config import PostgresConfig
from herdwatch.model import RawData
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.logtail import LogTailSource
from herdwatch.sources.postgres_direct import PostgresDirectSource
from tests.support.servers import PostgresServer, start_postgres

MAX_CONNECTIONS = 20
# pool_exhaustion compares the climb with a baseline that ends 10 s (its max_climb) before the
# pool is full, so the sampler runs that long before the herd starts.
QUIET = 11.0
HERD_SECONDS = 5
TAIL = 2.0
REJECTED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC .*FATAL:  sorry, too many clients already"
)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with start_postgres(max_connections=MAX_CONNECTIONS) as server:
        subprocess.run(
            ["pgbench", "-i", "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
             "postgres"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def herd(pg: PostgresServer) -> tuple[RawData, RawData, float]:
    """(sampler data, tailed log data, herd start) for one real pgbench herd."""

    async def run() -> tuple[RawData, RawData, float]:
        window = CollectWindow(duration=QUIET + HERD_SECONDS + TAIL)
        sampler = PostgresDirectSource(PostgresConfig(dsn=pg.dsn, sample_interval=0.1))
        tailer = LogTailSource([str(pg.log_path)], poll_interval=0.1)
        collecting = asyncio.gather(sampler.collect(window), tailer.collect(window))
        await asyncio.sleep(QUIET)
        started = time.time()
        bench = await asyncio.create_subprocess_exec(
            "pgbench", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
            "-C", "-c", "40", "-j", "2", "-T", str(HERD_SECONDS), "postgres",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await bench.communicate()
        # pgbench exits 2 when clients were refused: that is the herd
        assert bench.returncode in (0, 2), err.decode()[-500:]
        sampled, tailed = await collecting
        return sampled, tailed, started

    return asyncio.run(run())


def _first_rejection(log: Path) -> float:
    for line in log.read_text().splitlines():
        m = REJECTED.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
            return stamp.timestamp()
    raise AssertionError("Postgres logged no 'too many clients' line: no herd happened")


def test_direct_sampler_finds_pool_exhaustion(herd: tuple[RawData, RawData, float]) -> None:
    sampled, _, started = herd
    assert sampled.events == [] or {e.kind for e in sampled.events} == {"too_many_clients"}
    busy = [
        s
        for s in sampled.series
        if s.name == "pg_stat_activity_count" and s.label("state") != "idle"
    ]
    t = busy[0].timestamps
    in_use = np.sum([s.values for s in busy], axis=0)
    full = t[in_use >= 0.9 * MAX_CONNECTIONS]
    assert len(full), f"the sampler never saw the pool near full: max {np.nanmax(in_use)}"

    result = engine.scan(sampled)
    found = [f for f in result.findings if f.signature == "pool_exhaustion"]
    assert len(found) == 1, [f.summary for f in result.findings]
    f = found[0]
    # onset: the first sample of the climb, after pgbench started and by the first full sample
    assert started - 0.15 <= f.onset <= full[0], (f.onset - started, full[0] - started)
    conn = f.evidence["connections"]
    # usable slots: max_connections less superuser_reserved_connections (3 by default)
    assert conn["max"] == MAX_CONNECTIONS - 3 and conn["peak"] >= 0.9 * conn["max"]
    assert conn["climb_seconds"] <= 1.0  # milliseconds-to-a-second, seen at 100 ms
    assert result.sources[0].ok and result.sources[0].name.startswith("postgres ")


def test_log_source_alone_finds_pool_exhaustion(
    pg: PostgresServer, herd: tuple[RawData, RawData, float]
) -> None:
    _, tailed, started = herd
    first = _first_rejection(Path(pg.log_path))
    assert first >= started - 0.01
    for raw in (tailed, asyncio.run(LogTailSource([str(pg.log_path)]).collect(CollectWindow()))):
        assert raw.series == []
        rejections = [e for e in raw.events if e.kind == "too_many_clients"]
        assert rejections and rejections[0].timestamp == pytest.approx(first, abs=1e-6)
        result = engine.scan(raw)
        found = [f for f in result.findings if f.signature == "pool_exhaustion"]
        assert len(found) == 1, [f.summary for f in result.findings]
        # the log signature's onset is the first error
        assert found[0].onset == pytest.approx(first, abs=1e-6)
        assert found[0].evidence["rejections"] >= 3
