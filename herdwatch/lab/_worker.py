"""One load process of the lab: open-loop virtual users doing cache-aside on Redis + Postgres.

    python -m herdwatch.lab._worker '<json config>'

Requests arrive at a fixed rate from `start_at` (open loop: latency counts from each request's
scheduled time, so a stalled system cannot slow the arrivals down). Each reads one key: mostly
one of `hot_keys` hot keys, else one of `tail_keys` cold ones. A miss runs a real aggregate on
Postgres through a bounded pool and stores the value back.

- `naive`: what people write: redis-py GET, and on a miss load and SET EX (no collapsing);
- `herdcache`: `HerdCache.get_or_load` with the settings given.

Every 0.25 s it prints a JSON line of cumulative counters (requests by code, loads, the
database query histogram); at the end one line with every caller latency and loads per hot key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from herdwatch.lab._buckets import BOUNDS

QUERY = "SELECT count(*), avg(v) FROM lab_items WHERE grp = %s"
REPORT_EVERY = 0.25
MAX_IN_FLIGHT = 5000


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.get("seed", 1))
        self.codes: Counter[str] = Counter()
        self.loads = 0
        self.hot_loads: Counter[str] = Counter()
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.q_sum = 0.0
        self.latencies: list[tuple[float, float, int]] = []
        self.in_flight = 0
        self.pool = AsyncConnectionPool(
            cfg["dsn"], min_size=1, max_size=cfg["pool"], open=False, timeout=60
        )
        self.redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                cfg["redis"], max_connections=64, timeout=30
            )
        )
        self.cache: Any = None

    def observe(self, seconds: float) -> None:
        self.q_sum += seconds
        for i, b in enumerate(BOUNDS):
            if seconds <= b:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1

    async def query(self, key: str, grp: int) -> str:
        self.loads += 1
        if key.startswith("hot:"):
            self.hot_loads[key] += 1
        async with self.pool.connection() as conn:
            t0 = time.perf_counter()
            cur = await conn.execute(QUERY, (grp,))
            row = await cur.fetchone()
            self.observe(time.perf_counter() - t0)
        return json.dumps(row, default=float)

    def pick(self) -> tuple[str, int]:
        if self.rng.random() < self.cfg["hot_share"]:
            i = self.rng.randrange(self.cfg["hot_keys"])
            return f"hot:{i}", i
        i = self.rng.randrange(self.cfg["tail_keys"])
        return f"tail:{i}", i

    async def naive(self, key: str, grp: int) -> None:
        rkey = f"lab:{key}"
        value = await self.redis.get(rkey)
        if value is None:
            value = await self.query(key, grp % 500)
            ttl = 3600 if key.startswith("hot:") else self.rng.randint(20, 40)
            await self.redis.set(rkey, value, ex=ttl)

    async def herdcache(self, key: str, grp: int) -> None:
        ttl = None if key.startswith("hot:") else float(self.rng.randint(20, 40))
        await self.cache.get_or_load(key, lambda: self.query(key, grp % 500), ttl=ttl)

    async def request(self, scheduled: float) -> None:
        self.in_flight += 1
        key, grp = self.pick()
        ok = 1
        try:
            if self.cache is None:
                await self.naive(key, grp)
            else:
                await self.herdcache(key, grp)
            self.codes["200"] += 1
        except Exception as exc:  # a failed request is a 500, as a real service returns
            ok = 0
            self.codes["500"] += 1
            if self.codes["500"] <= 3:
                print(f"request failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            self.in_flight -= 1
            self.latencies.append((round(scheduled, 4), round(time.time() - scheduled, 5), ok))

    def report(self) -> None:
        line = {
            "t": time.time(),
            "req": dict(self.codes),
            "loads": self.loads,
            "hot_loads": sum(self.hot_loads.values()),
            "buckets": self.buckets,
            "sum": self.q_sum,
            "in_flight": self.in_flight,
        }
        print(json.dumps(line), flush=True)

    async def reporter(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(REPORT_EVERY)

    async def run(self) -> None:
        await self.pool.open(wait=True)
        if self.cfg["client"] == "herdcache":
            from prometheus_client import CollectorRegistry

            from herdwatch.cache import HerdCache

            self.cache = HerdCache.from_url(
                self.cfg["redis"], namespace=self.cfg["namespace"], registry=CollectorRegistry(),
                **self.cfg["settings"],
            )  # fmt: skip
            await self.cache.start()
        print(json.dumps({"ready": time.time()}), flush=True)
        rep = asyncio.create_task(self.reporter())
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.cfg["rate"]
        t_next = max(self.cfg["start_at"], time.time()) + self.rng.random() * interval
        t_end = self.cfg["start_at"] + self.cfg["duration"]
        while t_next < t_end:
            now = time.time()
            if now < t_next:
                await asyncio.sleep(t_next - now)
            if self.in_flight >= MAX_IN_FLIGHT:
                self.codes["503"] += 1
            else:
                task = asyncio.create_task(self.request(t_next))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            t_next += interval
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        rep.cancel()
        self.report()
        print(json.dumps({"done": time.time(), "lat": self.latencies,
                          "hot_loads_by_key": dict(self.hot_loads)}), flush=True)  # fmt: skip
        await self.close()

    async def close(self) -> None:
        if self.cache is not None:
            with contextlib.suppress(Exception):
                await self.cache.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.pool.close()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    # The lab stops its workers with SIGTERM (Ctrl-C reaches them as SIGINT): exit quietly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(Worker(cfg).run())


if __name__ == "__main__":
    main()
