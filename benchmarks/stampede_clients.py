"""Stampede benchmark: five cache-aside clients on the same real Redis and Postgres, one run.

    .venv/bin/python benchmarks/stampede_clients.py            # about 3 minutes, prints tables

Scenarios, for every client in turn (each client's Redis data flushed in between):

- cold: 4 processes x 250 concurrent callers on one cold key (a Postgres query of ~100 ms:
  ``pg_sleep(0.1)`` plus a count over a 10k-row table);
- steady: 1,000 req/s open-loop across 4 processes on one hot key for 10 TTLs.

Clients: naive cache-aside (redis-py GET / SET EX), aiocache ``cached_stampede`` (RedisCache),
cashews ``@cache(lock=True)`` (Redis lock), dogpile.cache (Redis backend, distributed lock,
threads) and HerdCache. Each process loads through its own connection pool (max 25).
Peak Postgres connections are sampled from pg_stat_activity every 5 ms by the driver.

It also times HerdCache's hit path against a bare redis-py GET of the same key, interleaved.
Servers are started by the script on free loopback ports and stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIENTS = ("naive", "aiocache", "cashews", "dogpile", "herdcache")
LOAD_SQL = "SELECT count(*), pg_sleep(0.1)::text FROM bench_items"
POOL_MAX = 25  # Postgres connections per process
REDIS_POOL = 64  # Redis connections per process, the same blocking pool for every async client


# --------------------------------------------------------------------------- worker side


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Counter:
    """Loads made by this process and how long each took (connection checkout included)."""

    def __init__(self) -> None:
        self.n = 0
        self.durations: list[float] = []
        self.starts: list[float] = []
        self.spans: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.report: Callable[[], dict[str, float]] = dict

    def add(self) -> None:
        with self.lock:
            self.n += 1
            self.starts.append(time.time())

    def took(self, seconds: float) -> None:
        end = time.time()
        with self.lock:
            self.durations.append(seconds)
            self.spans.append((end - seconds, end))


async def async_client(
    cfg: dict[str, Any], loads: Counter
) -> tuple[Callable[[str], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    """(get(key), close()) for the asyncio clients; every load is one Postgres query."""
    import psycopg_pool

    pool = psycopg_pool.AsyncConnectionPool(
        cfg["dsn"], min_size=0, max_size=POOL_MAX, open=False, kwargs={"autocommit": True}
    )
    await pool.open()

    async def load() -> dict[str, Any]:
        loads.add()
        t0 = time.monotonic()
        async with pool.connection() as conn:
            cur = await conn.execute(LOAD_SQL)
            row = await cur.fetchone()
        assert row is not None
        loads.took(time.monotonic() - t0)
        return {"count": row[0], "at": time.time()}

    ttl = cfg["ttl"]
    name = cfg["client"]
    if name == "naive":
        import redis.asyncio

        r = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                cfg["redis"], max_connections=REDIS_POOL, timeout=10
            )
        )

        async def get(key: str) -> Any:
            raw = await r.get(key)
            if raw is not None:
                return json.loads(raw)
            value = await load()
            await r.set(key, json.dumps(value), px=int(ttl * 1000))
            return value

        async def close() -> None:
            await r.aclose()
            await pool.close()

        return get, close
    if name == "aiocache":
        from aiocache import RedisCache, cached_stampede

        host, port = cfg["redis_host"], cfg["redis_port"]
        getters: dict[str, Callable[[], Awaitable[Any]]] = {}

        def getter(key: str) -> Callable[[], Awaitable[Any]]:
            if key not in getters:
                import redis.asyncio

                @cached_stampede(
                    lease=2, ttl=ttl, key=key, cache=RedisCache, endpoint=host, port=port,
                    pool_max_size=REDIS_POOL,
                    connection_pool_class=redis.asyncio.BlockingConnectionPool,
                    connection_pool_kwargs={"timeout": 10},
                )  # fmt: skip
                async def fetch() -> Any:
                    return await load()

                getters[key] = fetch
            return getters[key]

        async def get(key: str) -> Any:
            return await getter(key)()

        async def close() -> None:
            await pool.close()

        return get, close
    if name == "cashews":
        from cashews import Cache

        cache = Cache()
        cache.setup(cfg["redis"], max_connections=REDIS_POOL)

        @cache(ttl=ttl, key="{key}", lock=True)
        async def fetch(key: str) -> Any:
            return await load()

        async def get(key: str) -> Any:
            return await fetch(key)

        async def close() -> None:
            await cache.close()
            await pool.close()

        return get, close
    if name == "herdcache":
        from prometheus_client import CollectorRegistry

        from herdwatch.cache import HerdCache

        registry = CollectorRegistry()
        hc = HerdCache.from_url(
            cfg["redis"], ttl=ttl, registry=registry, namespace="bench", max_connections=REDIS_POOL
        )
        await hc.start()

        def results() -> dict[str, float]:
            return {
                r: registry.get_sample_value("herdcache_requests_total", {"result": r}) or 0.0
                for r in ("hit", "miss", "stale", "shed", "error")
            }

        loads.report = results

        async def get(key: str) -> Any:
            return await hc.get_or_load(key, load)

        async def close() -> None:
            await hc.aclose()
            await pool.close()

        return get, close
    raise ValueError(name)


def dogpile_client(cfg: dict[str, Any], loads: Counter) -> tuple[Callable[[str], Any], Any]:
    import psycopg_pool
    import redis
    from dogpile.cache import make_region

    pool = psycopg_pool.ConnectionPool(
        cfg["dsn"], min_size=0, max_size=POOL_MAX, kwargs={"autocommit": True}
    )
    region = make_region().configure(
        "dogpile.cache.redis",
        expiration_time=cfg["ttl"],
        arguments={
            # The same bounded, blocking pool as the async clients get.
            "connection_pool": redis.BlockingConnectionPool(
                host=cfg["redis_host"],
                port=cfg["redis_port"],
                max_connections=REDIS_POOL,
                timeout=10,
            ),
            "distributed_lock": True,
            "thread_local_lock": False,
            "lock_timeout": 10,
            "lock_sleep": 0.05,
        },
    )

    def load() -> dict[str, Any]:
        loads.add()
        t0 = time.monotonic()
        with pool.connection() as conn:
            row = conn.execute(LOAD_SQL).fetchone()
        assert row is not None
        loads.took(time.monotonic() - t0)
        return {"count": row[0], "at": time.time()}

    def get(key: str) -> Any:
        return region.get_or_create(key, load)

    return get, pool


def percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def async_worker(cfg: dict[str, Any]) -> None:
    import redis.asyncio

    loads = Counter()
    get, close = await async_client(cfg, loads)
    control = redis.asyncio.Redis.from_url(cfg["redis"])
    key = cfg["key"]
    if cfg["mode"] == "steady":
        await get(key)  # warm: the steady run measures expiries, not the first fill
    warm_loads = loads.n
    loads.durations.clear()
    loads.starts.clear()
    loads.spans.clear()
    counted = loads.report()
    say("ready")
    # Every process starts at the same wall-clock instant; latencies count from it.
    start = float((await control.blpop([f"go:{cfg['run']}"], timeout=120))[1])
    await asyncio.sleep(max(0.0, start - time.time()))
    latencies: list[float] = []
    errors: list[str] = []

    async def timed(start: float) -> None:
        try:
            await get(key)
        except Exception as exc:
            errors.append(type(exc).__name__)
        latencies.append(time.time() - start)

    if cfg["mode"] == "cold":
        await asyncio.gather(*(timed(start) for _ in range(cfg["callers"])))
    else:
        interval = 1.0 / cfg["rate"]
        tasks = []
        for i in range(int(cfg["duration"] * cfg["rate"])):
            slot = start + i * interval
            if (delay := slot - time.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed(slot)))
        await asyncio.gather(*tasks)
    say(
        "done",
        loads=loads.n - warm_loads,
        load_times=loads.durations,
        spans=loads.spans,
        load_starts=[t - start for t in loads.starts],
        report={k: v - counted.get(k, 0.0) for k, v in loads.report().items()},
        latencies=latencies,
        errors=errors,
    )
    await control.aclose()
    await close()


def dogpile_worker(cfg: dict[str, Any]) -> None:
    import redis

    loads = Counter()
    get, pool = dogpile_client(cfg, loads)
    control = redis.Redis.from_url(cfg["redis"])
    key = cfg["key"]
    if cfg["mode"] == "steady":
        get(key)
    warm_loads = loads.n
    loads.durations.clear()
    loads.starts.clear()
    loads.spans.clear()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def timed(start: float) -> None:
        try:
            get(key)
        except Exception as exc:
            with lock:
                errors.append(type(exc).__name__)
        with lock:
            latencies.append(time.time() - start)

    if cfg["mode"] == "cold":
        go = threading.Event()
        started = [0.0]

        def caller() -> None:
            go.wait()
            timed(started[0])

        threads = [threading.Thread(target=caller) for _ in range(cfg["callers"])]
        for t in threads:
            t.start()
        say("ready")
        started[0] = float(control.blpop([f"go:{cfg['run']}"], timeout=120)[1])
        time.sleep(max(0.0, started[0] - time.time()))
        go.set()
        for t in threads:
            t.join()
    else:
        say("ready")
        begin = float(control.blpop([f"go:{cfg['run']}"], timeout=120)[1])
        interval = 1.0 / cfg["rate"]
        with ThreadPoolExecutor(64) as executor:
            for i in range(int(cfg["duration"] * cfg["rate"])):
                slot = begin + i * interval
                if (delay := slot - time.time()) > 0:
                    time.sleep(delay)
                executor.submit(timed, slot)
    say(
        "done",
        loads=loads.n - warm_loads,
        load_times=loads.durations,
        spans=loads.spans,
        load_starts=[t - (started[0] if cfg["mode"] == "cold" else begin) for t in loads.starts],
        latencies=latencies,
        errors=errors,
    )
    control.close()
    pool.close()


# --------------------------------------------------------------------------- driver side


class PgSampler:
    """Peak client connections to Postgres (the sampler's own excluded), every 5 ms."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.peak = 0
        self.peak_active = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            row = self.conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            assert row is not None
            self.peak = max(self.peak, row[0])
            self.peak_active = max(self.peak_active, row[1])
            self._stop.wait(0.005)

    def __enter__(self) -> PgSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def run_scenario(base: dict[str, Any], client: str, mode: str, run: int) -> dict[str, Any]:
    import redis

    cfg = {**base, "client": client, "mode": mode, "run": run, "key": f"hot:{mode}:{run}"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # aiocache logs a traceback per failed GET; we count them
            text=True,
        )
        for _ in range(base["procs"])
    ]

    def expect(proc: subprocess.Popen[str], event: str) -> dict[str, Any]:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                msg: dict[str, Any] = json.loads(line)
                if msg["event"] == event:
                    return msg
        raise RuntimeError(f"{client} {mode} worker exited ({proc.wait()}) before {event}")

    try:
        for p in procs:
            expect(p, "ready")
        control = redis.Redis.from_url(base["redis"])
        with PgSampler(base["dsn"]) as sampler:
            start_at = f"{time.time() + 0.3:.6f}"
            control.rpush(f"go:{run}", *[start_at] * len(procs))
            done = [expect(p, "done") for p in procs]
        control.flushall()
        control.close()
    finally:
        for p in procs:
            p.wait(60)
            if p.stdout is not None:
                p.stdout.close()
    latencies = [x for d in done for x in d["latencies"]]
    errors = [e for d in done for e in d["errors"]]
    load_times = [x for d in done for x in d["load_times"]]
    # A duplicate load starts while another load of the same key is still running.
    duplicates, busy_until = 0, float("-inf")
    for begin, end in sorted(tuple(x) for d in done for x in d["spans"]):
        duplicates += begin < busy_until
        busy_until = max(busy_until, end)
    load_starts = [x for d in done for x in d["load_starts"]]
    if base.get("verbose"):
        for n, d in enumerate(done):
            print(f"#   {client} {mode} worker {n}: {d.get('report')}", file=sys.stderr)
            starts = ", ".join(f"{t:.3f}" for t in sorted(d["load_starts"]))
            print(f"#   {client} {mode} worker {n}: loads at [{starts}] s", file=sys.stderr)
    return {
        "loads": sum(d["loads"] for d in done),
        "duplicates": duplicates,
        "misses": sum(d.get("report", {}).get("miss", 0) for d in done),
        "load_ms": statistics.median(load_times) * 1000 if load_times else float("nan"),
        "first_load_ms": min(load_starts) * 1000 if load_starts else float("nan"),
        "peak_conns": sampler.peak,
        "peak_active": sampler.peak_active,
        "p50": percentile_ms(latencies, 0.50),
        "p99": percentile_ms(latencies, 0.99),
        "max": max(latencies) * 1000,
        "blocked": sum(x >= base["blocked_s"] for x in latencies),
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


async def hit_path(redis_url: str, rounds: int, n: int) -> dict[str, float]:
    """Per-call time of HerdCache hits vs bare GETs of the same key on the same pool.

    Four kinds of call, rotated call by call: bare GET; bare GET + json.loads; HerdCache hit
    with the default JSON codec; HerdCache hit with BytesCodec (the client's own overhead,
    nothing decoded). Reported: the median time per call of each, and their ratios.
    """
    from herdwatch.cache import BytesCodec, HerdCache

    value = {"id": 123, "name": "user 123", "email": "u123@example.com", "roles": ["a", "b"]}
    blob = json.dumps(value).encode()
    cache = HerdCache.from_url(redis_url, ttl=3600, registry=None, namespace="hitpath")
    raw = HerdCache(cache.redis, namespace="hitraw", registry=None, codec=BytesCodec())
    await cache.start()
    await raw.start()

    async def load() -> dict[str, Any]:
        return value

    async def load_raw() -> bytes:
        return blob

    await cache.get_or_load("user:123", load)
    await raw.get_or_load("user:123", load_raw)
    plain = "plain:user:123"  # what a bare client would store: the JSON itself
    await cache.redis.set(plain, blob)
    get = cache.redis.get

    async def bare() -> None:
        await get(plain)

    async def bare_json() -> None:
        json.loads((await get(plain)).decode())

    async def hit() -> None:
        await cache.get_or_load("user:123", load)

    async def hit_raw() -> None:
        await raw.get_or_load("user:123", load_raw)

    # One call of each in turn, each timed alone: load from other processes hits all four
    # alike, and the median per call ignores the bursts.
    loops = {"bare": bare, "bare_json": bare_json, "hit": hit, "hit_raw": hit_raw}
    times: dict[str, list[float]] = {k: [] for k in loops}
    names = list(loops)
    clock = time.perf_counter
    for i in range(rounds * n):
        for name in names[i % 4 :] + names[: i % 4]:
            call = loops[name]
            t0 = clock()
            await call()
            times[name].append(clock() - t0)
    await raw.aclose()
    await cache.aclose()
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    return {
        **{f"{k}_us": v for k, v in med.items()},
        "ratio_json": med["hit"] / med["bare_json"],
        "ratio_raw": med["hit_raw"] / med["bare"],
    }


def table(title: str, rows: list[tuple[str, dict[str, Any]]], expiries: float | None) -> str:
    """Markdown table; the cold table shows waiting against the load, steady shows blocking."""
    if expiries is None:
        head = "| client | loads | duplicate loads | peak PG conns | first load starts at ms |"
        head += " load ms (median) | p50 ms | p99 ms | p99 - (start + load) ms | errors |"
        cols = 10
    else:
        head = "| client | loads | loads per TTL | duplicate loads | peak PG conns | p50 ms |"
        head += " p99 ms | max ms | slower than 50 ms | errors |"
        cols = 10
    lines = [f"**{title}**", "", head, "|" + "---|" * cols]
    for name, r in rows:
        errs = f"{r['errors']}" + (f" ({', '.join(r['error_kinds'])})" if r["errors"] else "")
        if expiries is None:
            lines.append(
                f"| {name} | {r['loads']} | {r['duplicates']} | {r['peak_conns']} |"
                f" {r['first_load_ms']:.0f} |"
                f" {r['load_ms']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} |"
                f" {r['p99'] - r['first_load_ms'] - r['load_ms']:.0f} | {errs} |"
            )
        else:
            lines.append(
                f"| {name} | {r['loads']} | {r['loads'] / expiries:.1f} | {r['duplicates']} |"
                f" {r['peak_conns']} |"
                f" {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.0f} |"
                f" {r['blocked']} / {r['requests']} | {errs} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--callers", type=int, default=250)
    parser.add_argument("--rate", type=float, default=1000.0, help="steady req/s, all procs")
    parser.add_argument("--ttl", type=float, default=2.0, help="steady-run TTL in seconds")
    parser.add_argument("--ttls", type=int, default=10, help="steady-run length in TTLs")
    parser.add_argument("--verbose", action="store_true", help="load times per worker")
    parser.add_argument("--hit-rounds", type=int, default=20, help="hit-path calls / 1000")
    args = parser.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        if cfg["client"] == "dogpile":
            dogpile_worker(cfg)
        else:
            asyncio.run(async_worker(cfg))
        return

    import psycopg

    from tests.support.servers import start_postgres, start_redis

    began = time.monotonic()
    with start_redis() as rs, start_postgres(max_connections=150) as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bench_items AS SELECT g AS id, md5(g::text) AS payload"
                " FROM generate_series(1, 10000) g"
            )
            t0 = time.perf_counter()
            conn.execute(LOAD_SQL).fetchone()
            query_ms = (time.perf_counter() - t0) * 1000
        base = {
            "redis": rs.url, "redis_host": "127.0.0.1", "redis_port": rs.port, "dsn": pg.dsn,
            "procs": args.procs, "callers": args.callers, "ttl": args.ttl,
            "rate": args.rate / args.procs, "duration": args.ttl * args.ttls, "blocked_s": 0.05,
            "verbose": args.verbose,
        }  # fmt: skip
        clients = args.clients.split(",")
        cold: list[tuple[str, dict[str, Any]]] = []
        steady: list[tuple[str, dict[str, Any]]] = []
        for run, client in enumerate(clients):
            cold.append((client, run_scenario(base, client, "cold", 2 * run)))
            print(f"# {client} cold: {cold[-1]}", file=sys.stderr, flush=True)
            steady.append((client, run_scenario(base, client, "steady", 2 * run + 1)))
            print(f"# {client} steady: {steady[-1]}", file=sys.stderr, flush=True)
        hits = asyncio.run(hit_path(rs.url, rounds=args.hit_rounds, n=1000))
    print(
        f"Redis {rs.url}, Postgres 15 ({pg.dsn.split('@')[1].split('/')[0]}), "
        f"load query {query_ms:.0f} ms, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        table(
            f"Cold key: {args.procs} processes x {args.callers} concurrent callers, one key",
            cold,
            None,
        )
    )
    print()
    print(
        table(
            f"Steady: {args.rate:.0f} req/s over {args.procs} processes, one hot key, "
            f"TTL {args.ttl:g} s x {args.ttls} (loads per TTL = loads / {args.ttls})",
            steady,
            args.ttls,
        )
    )
    for name, r in steady:
        if name == "herdcache":
            print(
                f"\nHerdCache's own count of steady-run callers that waited for a load"
                f' (herdcache_requests_total{{result="miss"}}): {r["misses"]:.0f}'
                f" of {r['requests']}."
            )
    print()
    print(
        f"**Hit path** (same connection pool, calls rotated one by one, median of"
        f" {args.hit_rounds * 1000:,} timed calls of each kind)\n"
    )
    print("| compared | bare redis-py | HerdCache hit | ratio |")
    print("|---|---|---|---|")
    print(
        f"| bytes, no decoding (BytesCodec) | GET {hits['bare_us']:.1f} µs |"
        f" {hits['hit_raw_us']:.1f} µs | {hits['ratio_raw']:.3f}x |"
    )
    print(
        f"| decoded value (JsonCodec) | GET + json.loads {hits['bare_json_us']:.1f} µs |"
        f" {hits['hit_us']:.1f} µs | {hits['ratio_json']:.3f}x |"
    )
    print(f"\n(total run {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
