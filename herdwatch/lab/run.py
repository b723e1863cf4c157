"""Run a scenario's load against real Redis and Postgres while a Watcher watches it.

One run: the tables the loaders read are made, `processes` worker processes (and, for an
upstream scenario, the lab's upstream service) start and connect, the hot keys are warmed (with
ONE shared expiry at `expire_at`, a batch job that warmed the cache, or spread), the workers
drive open-loop requests from `start` to `end` (the upstream is down from `expire_at` for
`outage` s), and every second a Watcher polls the lab's direct sources (Redis INFO and a key
sample, pg_stat_activity) and the drivers' own measurements (herdwatch.lab._source) and ticks.
The result holds what the drivers measured (loads per expiry, duplicate loads, caller latency,
errors), the peak of Postgres connections and every finding with its detection delay (first
tick that showed it, minus the driver's onset: the expiry, the upstream's recovery, or the
warm-up that wrote a forecast cliff). See docs/lab.md for the scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import redis.asyncio

from herdwatch.config import PostgresConfig, RedisConfig, redact
from herdwatch.engine import Snapshot, TrackedFinding, Watcher
from herdwatch.errors import HerdwatchError
from herdwatch.lab._source import DriverSource
from herdwatch.model import Finding, Recommendation

__all__ = ["SCENARIOS", "RunResult", "Scenario", "herdcache_settings", "run_scenario"]

NAMESPACE = "herdlab"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A workload and what it must show: `signature` for the naive client, none for herdcache.

    `pool` is each process's connection pool; 0 sizes the pools past the server: each holds
    `overcommit` x the server's free slots / `processes` (together more than it has, as pools
    sized per service and not per server are). `mode` is the loader (see the worker), `also`
    the signatures whose recommendations a herdcache run without a naive run's findings takes
    besides the scenario's own (what the naive run also shows).
    """

    name: str
    signature: str
    doc: str
    baseline: float = 20.0  # seconds of steady load before the onset
    after: float = 12.0  # seconds after it
    rate: float = 300.0  # requests per second over all processes
    processes: int = 3
    hot_keys: int = 50
    tail_keys: int = 100_000
    hot_share: float = 0.95
    pool: int = 6  # connections per process
    overcommit: float = 0.0
    rows: int = 200_000
    mode: str = "cache"
    also: tuple[str, ...] = ()
    lock_timeout_ms: int = 500
    lock_span: int = 250  # groups a summary row aggregates (lock mode)
    #: hot keys' TTL; None: one shared expiry at the onset (warmed together), else each hot key
    #: is warmed with its own remaining TTL spread over (0, hot_ttl] and rewritten with hot_ttl
    hot_ttl: float | None = None
    outage: float = 0.0  # seconds the upstream is down; the onset is when it comes back
    retries: int = 10  # the naive client's fixed-interval retries of an upstream call
    retry_interval: float = 1.0
    #: keys the Watcher's Redis source samples (SCAN + PTTL) for a ttl_cliff forecast; with
    #: it, the driver's onset is the warm-up that wrote the cliff, not the expiry
    sample_keys: int = 0
    #: the application rewrites the hot keys with the TTL the warm-up gave them (their own TTL:
    #: the warm-up's cliff recurs one TTL after the refill)
    hot_ttl_from_warm: bool = False
    #: cron: the report job's period (s, scaled like the rest), the boundaries it runs at and
    #: the replicas per process that run it (the onset is the first boundary)
    period: float = 0.0
    boundaries: int = 0
    jobs: int = 0
    #: run by name only, not by `lab compare all`, until its expectations hold (docs/lab.md)
    draft: bool = False


SCENARIOS: dict[str, Scenario] = {
    "stampede": Scenario(
        "stampede",
        "cache_stampede",
        "hot keys warmed together with one TTL expire at once under flat traffic",
    ),
    "pool": Scenario(
        "pool",
        "pool_exhaustion",
        "hot keys expire at once and every process opens connections up to its pool's max; "
        "the pools together promise more connections than the server has",
        pool=0,
        overcommit=1.25,
        processes=6,
        hot_keys=200,
        also=("cache_stampede",),
    ),
    "lock-contention": Scenario(
        "lock-contention",
        "lock_timeout_cluster",
        "hot keys expire at once and every miss recomputes its summary row under the row's "
        "lock (SELECT ... FOR UPDATE; lock_timeout 5x the summary's measured run time, at most "
        "500ms): the refreshers queue and time out",
        hot_keys=20,
        pool=15,
        mode="lock",
        also=("cache_stampede",),
    ),
    "ttl-cliff": Scenario(
        "ttl-cliff",
        "ttl_cliff",
        "a warm-up writes the hot keys with one TTL: Redis holds a cliff of expiries, "
        "forecast from a key sample before it falls (and the stampede when it does)",
        hot_keys=200,
        sample_keys=2000,
        hot_ttl_from_warm=True,
        also=("cache_stampede",),
    ),
    "retry-storm": Scenario(
        "retry-storm",
        "retry_storm",
        "a short-TTL cache in front of an upstream HTTP service that is down for 5 s; naive "
        "callers retry every second (up to 10 times) and all come back at its recovery",
        rate=150.0,
        after=15.0,  # past the breaker_reset scan recommends (10 s), so herdcache's recovery shows
        hot_keys=30,
        hot_ttl=2.0,
        outage=5.0,
        mode="upstream",
        pool=1,  # the loader calls the upstream, not the database
    ),
    "cron": Scenario(
        "cron",
        "cron_herd",
        "every replica refreshes an expensive report (an aggregate per group over the whole "
        "table) at the same wall-clock boundary each period, under steady traffic",
        baseline=10.0,
        after=15.0,
        rate=300.0,
        hot_keys=1,
        hot_share=0.5,
        mode="cron",
        period=60.0,
        boundaries=6,
        jobs=8,
    ),
}


@dataclass(slots=True)
class RunResult:
    scenario: str
    client: str
    settings: dict[str, Any]
    onset: float
    start: float
    end: float
    requests: int = 0
    errors: int = 0
    loads: int = 0
    hot_loads: int = 0
    hot_keys: int = 0
    duplicate_loads: int = 0
    expiries: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    peak_pg_connections: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)
    signals: dict[str, list[list[float]]] = field(default_factory=dict)
    recommendations: list[Recommendation] = field(default_factory=list, repr=False)

    @property
    def loads_per_expiry(self) -> float:
        """Hot-key loads per needed load (1.0: every expiry loaded once; see _expiries)."""
        return self.hot_loads / self.expiries if self.expiries else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "client": self.client,
            "settings": self.settings,
            "onset": self.onset,
            "window": {"start": self.start, "end": self.end},
            "requests": self.requests,
            "errors": self.errors,
            "loads": self.loads,
            "hot_keys": self.hot_keys,
            "hot_loads": self.hot_loads,
            "expiries": self.expiries,
            "loads_per_expiry": round(self.loads_per_expiry, 3),
            "duplicate_loads": self.duplicate_loads,
            "latency_ms": self.latency_ms,
            "peak_pg_connections": self.peak_pg_connections,
            "findings": self.findings,
            "signals": self.signals,
        }


_SETTING = re.compile(r"\b([a-z_]+)=('?[\w.]+'?)")


def herdcache_settings(recs: list[Recommendation]) -> dict[str, Any]:
    """The HerdCache settings the recommendations' config snippets name (`ttl_jitter=10`,
    `jitter_mode='hash'`, ...), the first value of each setting winning."""
    from herdwatch.cache import Settings

    fields = set(Settings().as_dict())
    out: dict[str, Any] = {}
    for r in recs:
        for name, raw in _SETTING.findall(r.config):
            if name in fields and name not in out and name != "ttl":
                value: Any = raw.strip("'")
                with contextlib.suppress(ValueError):
                    value = json.loads(raw.lower() if raw in ("True", "False") else raw)
                out[name] = value
    Settings().replace(out)
    return out


def default_recommendations(signature: str) -> list[Recommendation]:
    """What scan recommends for `signature` when there is no finding to read numbers from."""
    from herdwatch.detect.cron import recommend_cron_herd
    from herdwatch.detect.locks import recommend_lock_timeout_cluster
    from herdwatch.detect.pool import recommend_pool_exhaustion
    from herdwatch.detect.retry import recommend_retry_storm
    from herdwatch.detect.stampede import recommend_cache_stampede
    from herdwatch.detect.ttl_cliff import recommend_ttl_cliff

    recommend = {
        "cache_stampede": recommend_cache_stampede,
        "pool_exhaustion": recommend_pool_exhaustion,
        "lock_timeout_cluster": recommend_lock_timeout_cluster,
        "retry_storm": recommend_retry_storm,
        "cron_herd": recommend_cron_herd,
        "ttl_cliff": recommend_ttl_cliff,
    }.get(signature)
    empty = Finding(signature, 0.0, 0.0, "critical", "", {})
    return recommend(empty) if recommend is not None else []


#: settings a recommendation derives from a finding's measured rates
_MEASURED = frozenset({"load_rate", "load_burst"})

_NOT_FOR_WARM_UP = _MEASURED | {"ttl", "max_concurrent_loads"}

#: the signals a result keeps (the report charts them)
SIGNALS = ("miss_ratio", "db_latency_p99", "requests", "db_connections", "upstream_requests")

#: how long the workers may take to start and connect
READY_TIMEOUT = 60.0

#: the share of a server's usable slots at which pool_exhaustion sees a full pool
_FILL = 0.9

#: connections the lab holds besides the workers' pools: the Watcher's sampler and this setup
_OWN_CONNECTIONS = 2


#: cron_herd's start_delay on the lab's clock, x the scale (the default 10 s allows for cron's
#: own delay and a container's start-up). The lab's jobs start within milliseconds of their
#: boundary, but the Watcher samples pg_stat_activity for 0.8 s of each second: a boundary in
#: the rest shows up to 0.35 s late, past a 0.2 s window (1 s x 0.2; docs/lab.md)
_CRON_START_DELAY = 2.0


def rule_overrides(sc: Scenario, scale: float) -> dict[str, dict[str, Any]]:
    """The rule overrides the lab's Watcher runs with, as a user's config gives them: for a
    scenario with a period, cron_herd on the lab's clock (its periods, baseline and start delay
    multiplied by `scale`, as the period is)."""
    if not sc.period:
        return {}
    from herdwatch.detect.cron import CronParams

    d = CronParams()
    return {
        "cron_herd": {
            "periods": [p * scale for p in d.periods],
            "baseline": d.baseline * scale,
            "start_delay": _CRON_START_DELAY * scale,
        }
    }


async def _prepare_db(dsn: str, sc: Scenario) -> int:
    """Make the tables the loaders read; return each process's pool size. A server without
    room for fixed pools is refused (they would fill it: pool_exhaustion beside the herd)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        row = await cur.fetchone()
        usable, others = (int(row[0]), int(row[1]) - 1) if row is not None else (0, 0)
        free = usable - others  # this connection is one of the lab's own
        needed = sc.processes * sc.pool + _OWN_CONNECTIONS
        # pool_exhaustion counts a pool as full at 90 % of the usable slots (its default
        # fill_fraction): the lab's pools must stay under that, whoever else is connected
        if sc.pool and others + needed >= _FILL * usable:
            raise HerdwatchError(
                f"postgres {redact(dsn)}: the lab needs {needed} free connection slots and the "
                f"server has {free} of {usable}; pools that fill {_FILL:.0%} of it would show "
                f"as pool_exhaustion beside the scenario's herd (raise max_connections)"
            )
        cur = await conn.execute("SELECT to_regclass('lab_items') IS NOT NULL")
        row = await cur.fetchone()
        fresh = True
        if row and row[0]:
            cur = await conn.execute("SELECT count(*) FROM lab_items")
            n = await cur.fetchone()
            fresh = not (n and n[0] == sc.rows)
            if fresh:
                await conn.execute("DROP TABLE lab_items")
        if fresh:
            await conn.execute(
                "CREATE TABLE lab_items AS SELECT g AS id, g %% 500 AS grp, random() AS v "
                "FROM generate_series(1, %s) g",
                (sc.rows,),
            )
            await conn.execute("ANALYZE lab_items")
        if sc.mode == "cron":
            await conn.execute("CREATE INDEX IF NOT EXISTS lab_items_id ON lab_items (id)")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS lab_summary "
            "(id int PRIMARY KEY, n bigint, v float8, at timestamptz)"
        )
        await conn.execute(
            "INSERT INTO lab_summary SELECT g, 0, 0, now() FROM generate_series(0, %s) g "
            "ON CONFLICT (id) DO NOTHING",
            (sc.hot_keys - 1,),
        )
    if sc.pool:
        return sc.pool
    return max(2, math.ceil(sc.overcommit * (free - _OWN_CONNECTIONS) / sc.processes))


async def _lock_timeout(dsn: str, sc: Scenario) -> int:
    """The lock scenario's lock_timeout in ms: 5 x the summary's measured run time (the median
    of 5), at least 20 ms and at most `sc.lock_timeout_ms`. The refreshers queued behind the
    first then time out on a fast machine as on a slow one: a fixed 500 ms let a fast, quiet
    machine drain the queue in time (0-7 timeouts, against 22-151 on a loaded one)."""
    from herdwatch.lab._worker import SUMMARY

    took = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for i in range(5):
            first = i * sc.lock_span % 500
            t0 = time.perf_counter()
            await conn.execute(SUMMARY, (first, first + sc.lock_span - 1))
            took.append(time.perf_counter() - t0)
    return int(min(sc.lock_timeout_ms, max(20.0, 5000 * float(np.median(took)))))


async def _clear_keys(client: redis.asyncio.Redis) -> None:
    """Remove the keys of earlier lab runs (only the lab's own prefixes)."""
    for pattern in ("lab:*", f"{NAMESPACE}:*"):
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)


def _warm_ttls(sc: Scenario, expire_at: float) -> list[float]:
    """Each hot key's remaining TTL at the warm-up: one shared expiry at the onset, or (with
    `hot_ttl`) spread over (0, hot_ttl], as a cache in a steady state holds them."""
    if sc.hot_ttl is None:
        return [max(expire_at - time.time(), 1.0)] * sc.hot_keys
    return [sc.hot_ttl * (i + 1) / sc.hot_keys for i in range(sc.hot_keys)]


async def _warm(sc: Scenario, client_kind: str, url: str, expire_at: float,
                settings: Mapping[str, Any]) -> None:  # fmt: skip
    """Every hot key written before the load starts (see _warm_ttls), as a batch job would."""
    ttls = _warm_ttls(sc, expire_at)
    r = redis.asyncio.Redis.from_url(url)
    try:
        await _clear_keys(r)
        if client_kind == "naive":
            async with r.pipeline(transaction=False) as pipe:
                for i, ttl in enumerate(ttls):
                    pipe.set(f"lab:hot:{i}", json.dumps([i, 0.5]), px=int(ttl * 1000))
                await pipe.execute()
            return
    finally:
        await r.aclose()
    from prometheus_client import CollectorRegistry

    from herdwatch.cache import HerdCache

    # the warm-up is a batch writer, not the live loader: no shedding nor rate limit
    warm = {k: v for k, v in settings.items() if k not in _NOT_FOR_WARM_UP}
    async with HerdCache.from_url(url, ttl=ttls[0], namespace=NAMESPACE,
                                  registry=CollectorRegistry(), **warm) as cache:  # fmt: skip
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async def value() -> str:
                return json.dumps([i, 0.5])

            async with sem:
                await cache.get_or_load(f"hot:{i}", value, ttl=ttls[i])

        await asyncio.gather(*(one(i) for i in range(sc.hot_keys)))


@dataclass(slots=True)
class _Workers:
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    finals: dict[int, dict[str, Any]] = field(default_factory=dict)
    ready: set[int] = field(default_factory=set)
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)
    upstream_port: int = 0
    expected: int = 0  # load workers: the first of procs (the upstream service follows them)

    async def stop(self) -> None:
        """Terminate the workers still running (by their pid), then kill what is left."""
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()


async def _send(proc: asyncio.subprocess.Process, msg: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(msg).encode() + b"\n")
    await proc.stdin.drain()


async def _start_upstream(workers: _Workers) -> asyncio.subprocess.Process:
    """The lab's upstream service (herdwatch.lab._upstream) on a free port, once listening;
    it is stopped with the workers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herdwatch.lab._upstream", str(workers.upstream_port),
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    workers.procs.append(proc)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
    except TimeoutError:
        line = b""
    if b"ready" not in line:
        raise HerdwatchError("the lab's upstream service did not start")
    return proc


async def _read_worker(i: int, proc: asyncio.subprocess.Process, src: DriverSource,
                       workers: _Workers) -> None:  # fmt: skip
    assert proc.stdout is not None
    async for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "t" in msg:
            src.update(i, msg)
        elif "done" in msg:
            workers.finals[i] = msg
        elif "ready" in msg:
            workers.ready.add(i)
            if len(workers.ready) == workers.expected:
                workers.all_ready.set()


def _expiries(finals: Mapping[int, dict[str, Any]], ttl: float | None) -> tuple[int, int]:
    """(needed, duplicate) hot-key loads from every process's (start, end, ok) of each: a load
    is a duplicate when another load of the key was in flight as it started, or one had
    succeeded less than 0.9 `ttl` before (ttl None: at any time before), so the cache (with
    one load per key) would have saved it; the others were needed, one per expiry or failed
    attempt. A load in the last tenth of the value's life is an early refresh (XFetch), not a
    duplicate."""
    loads: dict[str, list[tuple[float, float, bool]]] = {}
    for fin in finals.values():
        for k, ls in fin.get("hot_load_times", {}).items():
            loads.setdefault(k, []).extend((float(a), float(b), bool(ok)) for a, b, ok in ls)
    life = math.inf if ttl is None else 0.9 * ttl
    needed = duplicates = 0
    for ls in loads.values():
        ls.sort()
        for i, (start, _, _) in enumerate(ls):
            if any((a < start < b) or (ok and b <= start < b + life) for a, b, ok in ls[:i]):
                duplicates += 1
            else:
                needed += 1
    return needed, duplicates


def _latency(lat: list[list[float]]) -> dict[str, float]:
    if not lat:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    v = np.array([x[1] for x in lat]) * 1000
    return {
        "p50": round(float(np.percentile(v, 50)), 1),
        "p99": round(float(np.percentile(v, 99)), 1),
        "max": round(float(v.max()), 1),
    }


def _finding_json(f: Finding, first_seen: float, onset: float) -> dict[str, Any]:
    return {
        "signature": f.signature,
        "severity": f.severity,
        "onset": f.onset,
        "onset_after_driver_s": round(f.onset - onset, 3),
        "detected_after_s": round(first_seen - onset, 3),
        "summary": f.summary,
        "subject": dict(f.subject),
    }


async def run_scenario(
    name: str,
    client: str,
    *,
    redis_url: str,
    dsn: str,
    settings: Mapping[str, Any] | None = None,
    scale: float = 1.0,
    on_tick: Callable[[float, float, Snapshot], None] | None = None,
) -> RunResult:
    """One run of scenario `name` with `client` (naive | herdcache); see the module docstring.
    `scale` shortens (< 1) or lengthens the baseline and the time after the onset."""
    from herdwatch.rules import load_rules
    from herdwatch.sources.postgres_direct import PostgresDirectSource
    from herdwatch.sources.redis_direct import RedisDirectSource

    sc = SCENARIOS[name]
    if client not in ("naive", "herdcache"):
        raise HerdwatchError(f"unknown client {client!r} (naive or herdcache)")
    hc = dict(settings or {})
    if client == "herdcache" and not hc:
        recs = [r for sig in (sc.signature, *sc.also) for r in default_recommendations(sig)]
        # without a finding there is no healthy rate to derive a rate limit from (an empty
        # finding's 1/s would throttle the load itself)
        hc = {k: v for k, v in herdcache_settings(recs).items() if k not in _MEASURED}
    try:
        pool = await _prepare_db(dsn, sc)
        lock_ms = await _lock_timeout(dsn, sc) if sc.mode == "lock" else sc.lock_timeout_ms
    except psycopg.Error as exc:
        raise HerdwatchError(
            f"postgres {redact(dsn)}: {str(exc).strip().splitlines()[0]}"
        ) from None
    src = DriverSource()
    workers = _Workers(expected=sc.processes)
    readers: list[asyncio.Task[None]] = []
    per = sc.rate / sc.processes
    upstream: asyncio.subprocess.Process | None = None
    if sc.mode == "upstream":
        from herdwatch.lab.servers import free_port

        workers.upstream_port = free_port()
    try:
        for i in range(sc.processes):
            cfg = {
                "redis": redis_url, "dsn": dsn, "client": client, "rate": per,
                "hot_keys": sc.hot_keys, "tail_keys": sc.tail_keys, "hot_share": sc.hot_share,
                "pool": pool, "seed": i + 1, "settings": hc, "namespace": NAMESPACE,
                "mode": sc.mode, "lock_timeout_ms": lock_ms, "lock_span": sc.lock_span,
                "retries": sc.retries, "retry_interval": sc.retry_interval,
            }  # fmt: skip
            if sc.mode == "upstream":
                cfg["upstream"] = ["127.0.0.1", workers.upstream_port]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "herdwatch.lab._worker", json.dumps(cfg),
                stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE, limit=1 << 26,
            )  # fmt: skip
            workers.procs.append(proc)
            readers.append(asyncio.create_task(_read_worker(i, proc, src, workers)))
        if sc.mode == "upstream":
            upstream = await _start_upstream(workers)
        # the load starts when every worker has connected (a loaded machine starts them slowly)
        try:
            await asyncio.wait_for(workers.all_ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            raise HerdwatchError(
                f"lab workers not ready after {READY_TIMEOUT:.0f}s "
                f"({len(workers.ready)} of {sc.processes})"
            ) from None
        start = time.time() + 1.0
        expire_at = start + sc.baseline * scale  # the expiry, or the upstream going down
        marks: list[float] = []
        if sc.period:
            # wall-clock boundaries (multiples of the period since the epoch), as cron's
            period = sc.period * scale
            expire_at = math.ceil(expire_at / period) * period
            marks = [expire_at + k * period for k in range(sc.boundaries)]
        onset = expire_at + sc.outage  # the expiry, or the upstream coming back
        if sc.sample_keys:
            onset = time.time()  # a forecast: the warm-up below writes the cliff
        end = (marks[-1] if marks else expire_at + sc.outage) + sc.after * scale
        # the report job ran as the load starts: the report expires at the second boundary
        warm_until = expire_at + (sc.period * scale if sc.period else 0.0)
        await _warm(sc, client, redis_url, warm_until, hc)
        hot_ttl = max(expire_at - time.time(), 1.0) if sc.hot_ttl_from_warm else sc.hot_ttl
        go: dict[str, Any] = {"start_at": start, "duration": end - start}
        if marks:
            hot_ttl = sc.period * scale
            go["cron"] = {"period": hot_ttl, "marks": marks, "jobs": sc.jobs}
        if hot_ttl is not None:
            go["hot_ttl"] = hot_ttl
        if upstream is not None:
            await _send(upstream, {"down_at": expire_at, "up_at": onset})
        for proc in workers.procs[: sc.processes]:
            await _send(proc, go)
    except BaseException:
        for t in readers:
            t.cancel()
        await asyncio.shield(workers.stop())
        raise
    watcher = Watcher(
        [
            RedisDirectSource(RedisConfig(url=redis_url), interval=1.0, sample_keys=sc.sample_keys),
            PostgresDirectSource(PostgresConfig(dsn=dsn, sample_interval=0.1)),
            src,
        ],
        rules=load_rules(rule_overrides(sc, scale)),
        lookback=None,
    )
    history = _Findings()
    snap: Snapshot | None = None
    try:
        await asyncio.sleep(max(0.0, start - time.time()))
        t_next = start
        while t_next <= end + 2.0:
            await asyncio.sleep(max(0.0, t_next - time.time()))
            now = time.time()
            await watcher.poll(now, duration=0.8)
            snap = watcher.tick(now)
            # a finding is known when the tick that shows it is done: after the poll's samples
            # (up to 0.8 s past `now`) and the tick itself, not at the time the poll began
            history.update(snap, time.time())
            if on_tick is not None:
                on_tick(now - start, end + 2.0 - start, snap)
            t_next += 1.0
        await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
    finally:
        for t in readers:
            t.cancel()
        await asyncio.shield(workers.stop())
    res = _result(sc, client, hc, onset, start, end, workers.finals, src, snap, history)
    # a boundary's jobs write the report up to seconds after it: the next boundary's first
    # load is needed if it starts half a period after the last write (0.9 x the TTL otherwise)
    window = hot_ttl / 1.8 if sc.period and hot_ttl is not None else hot_ttl
    res.expiries, res.duplicate_loads = _expiries(workers.finals, window)
    return res


@dataclass(slots=True)
class _Findings:
    """Every finding a run's ticks showed: its latest version while it was not withdrawn (a
    forecast's first), when it was first seen, and when it was withdrawn (if its last state
    was that)."""

    latest: dict[str, TrackedFinding] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    withdrawn: dict[str, float] = field(default_factory=dict)

    def update(self, snap: Snapshot, now: float) -> None:
        for tf in snap.findings:
            if tf.state == "withdrawn":
                self.withdrawn.setdefault(tf.id, now)
                continue
            self.first_seen.setdefault(tf.id, now)
            self.withdrawn.pop(tf.id, None)
            if tf.signature == "ttl_cliff" and tf.id in self.latest:
                continue  # a forecast is reported as it was first made
            self.latest[tf.id] = tf

    def fired(self) -> list[TrackedFinding]:
        """The findings that held: not withdrawn, except a ttl_cliff forecast withdrawn once
        its window had begun (its keys expired: the forecast came true, the sample moved on)."""
        out = []
        for fid, tf in self.latest.items():
            gone = self.withdrawn.get(fid)
            if gone is None or (tf.signature == "ttl_cliff" and gone >= tf.finding.onset):
                out.append(tf)
        return sorted(out, key=lambda tf: (tf.finding.onset, tf.id))


def _result(sc: Scenario, client: str, hc: dict[str, Any], onset: float, start: float,
            end: float, finals: dict[int, dict[str, Any]], src: DriverSource,
            snap: Snapshot | None, history: _Findings) -> RunResult:  # fmt: skip
    res = RunResult(sc.name, client, hc if client == "herdcache" else {}, onset, start, end)
    lat: list[list[float]] = []
    for fin in finals.values():
        lat += fin.get("lat", [])
    for rep in src.latest.values():
        res.requests += sum(int(n) for n in rep.get("req", {}).values())
        res.errors += sum(int(n) for c, n in rep.get("req", {}).items() if c != "200")
        res.loads += int(rep.get("loads", 0))
    res.hot_keys = sc.hot_keys
    res.hot_loads = sum(
        len(ts) for f in finals.values() for ts in f.get("hot_load_times", {}).values()
    )
    res.latency_ms = _latency(lat)
    if snap is not None:
        sigs = snap.result.signals
        conns = sigs.get("db_connections")
        if conns is not None and len(conns.v):
            res.peak_pg_connections = float(np.nanmax(conns.v))
        for name in SIGNALS:
            s = sigs.get(name)
            if s is not None:
                res.signals[name] = [[round(float(t), 3), float(v)] for t, v in zip(s.t, s.v,
                                     strict=True) if np.isfinite(v)]  # fmt: skip
        # what scan recommends for what it found, the scenario's own signature first
        kept = history.fired()
        for tf in kept:
            res.findings.append(_finding_json(tf.finding, history.first_seen[tf.id], onset))
        for tf in sorted(kept, key=lambda tf: tf.finding.signature != sc.signature):
            res.recommendations += tf.finding.recommendations
    return res
