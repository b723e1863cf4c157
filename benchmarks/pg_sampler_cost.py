"""What the 100 ms Postgres sampler costs: CPU time of this process over wall time while
`PostgresDirectSource` samples a real PostgreSQL for a minute, as % of one core (target < 2 %).

    .venv/bin/python benchmarks/pg_sampler_cost.py [--seconds 60] [--interval 0.1] [--dsn DSN]

Without --dsn it starts its own PostgreSQL on a free 127.0.0.1 port (tests.support.servers)
with a few idle and active clients, so the sampled views are not empty. The server-side cost of
the sampler's backend is printed too (from /proc/PID/stat, when the server runs here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support lives in the repository, not in the package

from herdwatch.config import PostgresConfig  # noqa: E402
from herdwatch.sources.base import CollectWindow  # noqa: E402
from herdwatch.sources.postgres_direct import APPLICATION_NAME, PostgresDirectSource  # noqa: E402
from tests.support.servers import start_postgres  # noqa: E402

TARGET_PERCENT = 2.0


def _backend_cpu(pid: int) -> float | None:
    """utime + stime of a local process in seconds, or None when it is not readable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with start_postgres(max_connections=50) as pg:
        yield pg.dsn


async def _measure(dsn: str, seconds: float, interval: float) -> None:
    # some clients so pg_stat_activity has rows in several states
    clients = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(6)]
    sleepers = [asyncio.create_task(c.execute("SELECT pg_sleep(3600)")) for c in clients[:2]]
    src = PostgresDirectSource(PostgresConfig(dsn=dsn, sample_interval=interval))
    task = asyncio.create_task(src.collect(CollectWindow(duration=seconds)))
    backend = None
    for _ in range(100):
        row = await (
            await clients[-1].execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (APPLICATION_NAME,),
            )
        ).fetchone()
        if row:
            backend = int(row[0])
            break
        await asyncio.sleep(0.01)
    server_before = _backend_cpu(backend) if backend else None
    ru0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    raw = await task
    ru1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    server_after = _backend_cpu(backend) if backend else None
    await clients[-1].execute(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
    )
    await asyncio.gather(*sleepers, return_exceptions=True)
    for c in clients:
        await c.close()

    wall = wall1 - wall0
    user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    samples = len(raw.series[0].timestamps) if raw.series else 0
    pct = 100 * (user + system) / wall
    print(f"sampler: {samples} samples of {len(raw.series)} series every {interval * 1000:.0f} ms")
    print(f"wall {wall:.1f} s, CPU user {user:.2f} s + sys {system:.2f} s")
    print(f"sampler CPU: {pct:.2f} % of one core (target < {TARGET_PERCENT:g} %)")
    if server_before is not None and server_after is not None:
        spct = 100 * (server_after - server_before) / wall
        print(f"its Postgres backend (pid {backend}): {spct:.2f} % of one core")
    print("PASS" if pct < TARGET_PERCENT else "FAIL")
    if pct >= TARGET_PERCENT:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--dsn", help="sample this server instead of starting one")
    args = ap.parse_args()
    with _server(args.dsn) as dsn:
        asyncio.run(_measure(dsn, args.seconds, args.interval))


if __name__ == "__main__":
    main()
