"""One load process of the lab: open-loop virtual users doing cache-aside on Redis + Postgres.

    python -m herdwatch.lab._worker '<json config>'

Once connected it prints `{"ready": ...}` and reads one line from stdin: `start_at` and
`duration`. Requests arrive at a fixed rate from `start_at` (open loop: latency counts from
each request's scheduled time, so a stalled system cannot slow the arrivals down). Each reads
one key: mostly one of `hot_keys` hot keys, else one of `tail_keys` cold ones. A miss runs the
scenario's loader (`mode`) and stores the value back:

- `cache`: a real aggregate on Postgres through a bounded pool;
- `lock`: the same aggregate, written back to the key's summary row under its row lock
  (`SELECT ... FOR UPDATE`, then `UPDATE`) with `lock_timeout`;
- `upstream`: an HTTP GET to the lab's upstream service;
- `cron`: a point read by id (indexed) for the cold keys; the hot key `hot:0` is a report
  (an aggregate per group over the whole table) that `jobs` scheduled jobs in the process
  refresh at each of the wall-clock boundaries `marks` (`if now % period == 0:
  refresh_report()` in every replica).

The clients:

- `naive`: what people write: redis-py GET, and on a miss load and SET EX (no collapsing); a
  failed upstream call is retried every `retry_interval` seconds, up to `retries` times; the
  report job recomputes the report and SETs it with the period as TTL;
- `herdcache`: `HerdCache.get_or_load` with the settings given; the report job starts after a
  random delay up to the splay scan recommends (the same number as its `ttl_jitter`, at most
  half the period) and reads the report through the cache (one load per expiry, collapsed).

Every 0.25 s it prints a JSON line of cumulative counters (requests by code, loads, the
database query histogram, upstream calls by code) and the errors logged since the last line; at
the end one line with every caller latency and loads per hot key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from herdwatch.lab._buckets import BOUNDS

QUERY = "SELECT count(*), avg(v) FROM lab_items WHERE grp = %s"
LOCK = "SELECT v FROM lab_summary WHERE id = %s FOR UPDATE"
SUMMARY = (
    "SELECT count(*), percentile_cont(0.99) WITHIN GROUP (ORDER BY v) FROM lab_items "
    "WHERE grp BETWEEN %s AND %s"
)
WRITE = "UPDATE lab_summary SET n = %s, v = %s, at = now() WHERE id = %s"
#: the cron scenario's cold keys: a point read (its many cheap queries keep the p99's window short)
LOOKUP = "SELECT id, v FROM lab_items WHERE id = %s"
#: the cron scenario's report: an aggregate per group over the whole table, summarised
REPORT = (
    "SELECT count(*), avg(a) FROM (SELECT grp, count(*) AS n, avg(v) AS a FROM lab_items "
    "GROUP BY grp) s"
)
REPORT_EVERY = 0.25
MAX_IN_FLIGHT = 5000
#: errors a request may log (the application's own error log; the first lines also go to stderr)
MAX_EVENTS_PER_REPORT = 2000


class UpstreamError(Exception):
    """The upstream answered with an error status, or could not be reached."""


class _ErrorLog(logging.Handler):
    """The driver's own warnings (psycopg_pool's "error connecting ...") into the error log."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(logging.WARNING)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        self.worker.log_error(record.getMessage())


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.mode = cfg.get("mode", "cache")
        self.rng = random.Random(cfg.get("seed", 1))
        self.codes: Counter[str] = Counter()
        self.up_codes: Counter[str] = Counter()
        self.loads = 0
        self.hot_loads: Counter[str] = Counter()
        self.hot_times: dict[str, list[tuple[float, float, bool]]] = {}
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.q_sum = 0.0
        self.latencies: list[tuple[float, float, int]] = []
        self.events: list[tuple[float, str]] = []
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

    def log_error(self, message: str) -> None:
        if len(self.events) < MAX_EVENTS_PER_REPORT:
            self.events.append((round(time.time(), 4), message.strip()[:300]))

    def observe(self, seconds: float) -> None:
        self.q_sum += seconds
        for i, b in enumerate(BOUNDS):
            if seconds <= b:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1

    async def loaded(self, key: str, fn: Callable[[], Awaitable[str]]) -> str:
        """One load (a query, a refresh, an upstream call), counted; for a hot key its start,
        end and success are kept (the lab finds the duplicate loads from them)."""
        self.loads += 1
        hot = key.startswith("hot:")
        if hot:
            self.hot_loads[key] += 1
        t0, ok = time.time(), False
        try:
            value = await fn()
            ok = True
            return value
        finally:
            if hot:
                self.hot_times.setdefault(key, []).append((round(t0, 4), round(time.time(), 4), ok))

    async def query(self, grp: int, sql: str = QUERY) -> str:
        async with self.pool.connection() as conn:
            t0 = time.perf_counter()
            cur = await conn.execute(sql, (grp,))
            row = await cur.fetchone()
            self.observe(time.perf_counter() - t0)
        return json.dumps(row, default=float)

    async def report_query(self) -> str:
        async with self.pool.connection() as conn:
            t0 = time.perf_counter()
            cur = await conn.execute(REPORT)
            row = await cur.fetchone()
            self.observe(time.perf_counter() - t0)
        return json.dumps(row, default=float)

    async def job(self, period: float) -> None:
        """One replica's refresh_report() at a boundary (see the module docstring)."""
        try:
            if self.cache is None:
                value = await self.loaded("hot:0", self.report_query)
                await self.redis.set("lab:hot:0", value, px=int(period * 1000))
                return
            splay = min(float(self.cfg["settings"].get("ttl_jitter", 0.0)), period / 2)
            await asyncio.sleep(self.rng.uniform(0.0, splay))
            await self.cache.get_or_load("hot:0", self.loader("hot:0", 0), ttl=period)
        except Exception as exc:  # a failed job is logged, as a scheduler logs it
            self.log_error(f"ERROR: job refresh_report failed: {exc!r}")

    async def cron(self) -> None:
        """`jobs` replicas' refresh_report() at each wall-clock boundary in `marks`."""
        c = self.cfg["cron"]
        running: list[asyncio.Task[None]] = []
        for mark in c["marks"]:
            await asyncio.sleep(max(0.0, mark - time.time()))
            running += [asyncio.create_task(self.job(c["period"])) for _ in range(c["jobs"])]
        await asyncio.gather(*running)

    async def refresh_row(self, row_id: int) -> str:
        """Recompute the key's summary (`lock_span` groups) and write it to its row, under the
        row's lock, with `lock_timeout`: the refresh-on-miss of a materialized summary."""
        first = row_id * int(self.cfg["lock_span"]) % 500
        async with self.pool.connection() as conn:
            t0 = time.perf_counter()
            try:
                async with conn.transaction():
                    ms = int(self.cfg["lock_timeout_ms"])
                    await conn.execute(f"SET LOCAL lock_timeout = {ms}")
                    await conn.execute(LOCK, (row_id,))
                    cur = await conn.execute(SUMMARY, (first, first + self.cfg["lock_span"] - 1))
                    row = await cur.fetchone()
                    assert row is not None
                    await conn.execute(WRITE, (row[0], row[1], row_id))
            except psycopg.Error as exc:
                self.log_error(f"ERROR: {str(exc).strip().splitlines()[0]}")
                raise
            finally:
                self.observe(time.perf_counter() - t0)
        return json.dumps(row, default=float)

    async def call_upstream(self, key: str) -> str:
        """One GET to the upstream; UpstreamError on a refused connection or a 5xx."""
        host, port = self.cfg["upstream"]
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        except (OSError, TimeoutError) as exc:
            self.up_codes["error"] += 1
            raise UpstreamError(f"upstream {host}:{port}: {exc!r}") from None
        try:
            writer.write(f"GET /item/{key} HTTP/1.1\r\nHost: upstream\r\n"
                         "Connection: close\r\n\r\n".encode())  # fmt: skip
            data = await asyncio.wait_for(reader.read(), 5.0)
        except (OSError, TimeoutError) as exc:
            self.up_codes["error"] += 1
            raise UpstreamError(f"upstream {host}:{port}: {exc!r}") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        code = parts[1].decode() if len(parts) > 1 else "error"
        self.up_codes[code] += 1
        if code != "200":
            raise UpstreamError(f"upstream {host}:{port}: HTTP {code}")
        return body.decode()

    async def naive_upstream(self, key: str) -> str:
        """Fixed-interval retries, as written: try, sleep `retry_interval`, try again."""
        for attempt in range(int(self.cfg["retries"]) + 1):
            try:
                return await self.loaded(key, lambda: self.call_upstream(key))
            except UpstreamError:
                if attempt == int(self.cfg["retries"]):
                    raise
                await asyncio.sleep(float(self.cfg["retry_interval"]))
        raise AssertionError("unreachable")

    def loader(self, key: str, grp: int) -> Callable[[], Awaitable[str]]:
        if self.mode == "lock" and key.startswith("hot:"):
            return lambda: self.loaded(key, lambda: self.refresh_row(grp))
        if self.mode == "cron":
            if key.startswith("hot:"):
                return lambda: self.loaded(key, self.report_query)
            return lambda: self.loaded(key, lambda: self.query(grp + 1, LOOKUP))
        if self.mode == "upstream":
            if self.cache is None:
                return lambda: self.naive_upstream(key)
            return lambda: self.loaded(key, lambda: self.call_upstream(key))
        return lambda: self.loaded(key, lambda: self.query(grp % 500))

    def pick(self) -> tuple[str, int]:
        if self.rng.random() < self.cfg["hot_share"]:
            i = self.rng.randrange(self.cfg["hot_keys"])
            return f"hot:{i}", i
        i = self.rng.randrange(self.cfg["tail_keys"])
        return f"tail:{i}", i

    def ttl(self, key: str) -> float:
        if key.startswith("hot:"):
            return float(self.cfg.get("hot_ttl", 3600))
        lo, hi = self.cfg.get("tail_ttl", (20, 40))
        return float(self.rng.randint(int(lo), int(hi)))

    async def naive(self, key: str, grp: int) -> None:
        rkey = f"lab:{key}"
        value = await self.redis.get(rkey)
        if value is None:
            value = await self.loader(key, grp)()
            await self.redis.set(rkey, value, ex=max(1, round(self.ttl(key))))

    async def herdcache(self, key: str, grp: int) -> None:
        hot_default = key.startswith("hot:") and "hot_ttl" not in self.cfg
        ttl = None if hot_default else self.ttl(key)
        await self.cache.get_or_load(key, self.loader(key, grp), ttl=ttl)

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
        except Exception as exc:  # a failed request is a 500 (503 when shed), as a service does
            ok = 0
            code = (
                "503"
                if type(exc).__name__ in ("Overloaded", "RateLimited", "CircuitOpen")
                else "500"
            )
            self.codes[code] += 1
            if self.codes[code] <= 3:
                print(f"request failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            self.in_flight -= 1
            self.latencies.append((round(scheduled, 4), round(time.time() - scheduled, 5), ok))

    def report(self) -> None:
        line = {
            "t": time.time(),
            "req": dict(self.codes),
            "up": dict(self.up_codes),
            "loads": self.loads,
            "hot_loads": sum(self.hot_loads.values()),
            "buckets": self.buckets,
            "sum": self.q_sum,
            "in_flight": self.in_flight,
            "ev": self.events,
        }
        self.events = []
        print(json.dumps(line), flush=True)

    async def reporter(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(REPORT_EVERY)

    async def run(self) -> None:
        logging.getLogger("psycopg.pool").addHandler(_ErrorLog(self))
        logging.getLogger("psycopg.pool").propagate = False
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
        # the lab answers with the start time once every worker is ready
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        self.cfg.update(json.loads(line))
        rep = asyncio.create_task(self.reporter())
        tasks: set[asyncio.Task[None]] = set()
        cron = asyncio.create_task(self.cron()) if "cron" in self.cfg else None
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
        if cron is not None:
            tasks.add(cron)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        rep.cancel()
        self.report()
        print(json.dumps({"done": time.time(), "lat": self.latencies,
                          "hot_load_times": self.hot_times}), flush=True)  # fmt: skip
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
