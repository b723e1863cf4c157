"""HerdCache against the session's real Redis with a real Postgres loader."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from random import Random
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import CollectorRegistry

from herdwatch.cache import (
    BytesCodec,
    CircuitOpen,
    CodecError,
    FakeClock,
    HerdCache,
    Overloaded,
    RateLimited,
    Settings,
    SettingsError,
    SyncHerdCache,
    key_fraction,
    publish_settings,
    settings_key,
)
from herdwatch.cache._codec import unpack
from tests.cache.support import PgLoader, sample

MakeCache = Callable[..., Awaitable[HerdCache]]


class ConstRandom(Random):
    """random() always returns ``value`` (0.999999 makes XFetch's U tiny: refresh is due)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


async def stored(cache: HerdCache, key: str) -> Any:
    raw = await cache.redis.get(cache.value_key(key))
    if raw is None:
        return None
    entry = unpack(raw)
    assert entry is not None
    return cache._codec.loads(entry.payload)


async def until(predicate: Callable[[], Awaitable[bool]], limit: float = 5.0) -> None:
    """Wait for a state another task or process produces (bounded; never a fixed sleep)."""
    async with asyncio.timeout(limit):
        # The state lives in Redis or in a background task of the cache: no event to await.
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_cold_key_many_callers_one_postgres_load(
    make_cache: MakeCache, pg_loader: PgLoader, registry: CollectorRegistry
) -> None:
    cache = await make_cache(ttl=60)
    load = pg_loader.loader(sleep=0.1)
    gets_before = await get_calls(cache)
    values = await asyncio.gather(*(cache.get_or_load(pg_loader.key, load) for _ in range(250)))
    assert pg_loader.loads() == 1
    # One GET shared by 250 callers; the lease script and the fenced write GET inside Lua.
    assert await get_calls(cache) - gets_before == 3
    assert values == [{"k": pg_loader.key, "v": "v1"}] * 250
    assert await cache.get_or_load(pg_loader.key, load) == values[0]
    assert pg_loader.loads() == 1
    assert sample(registry, "herdcache_requests_total", result="miss") == 250
    assert sample(registry, "herdcache_requests_total", result="hit") == 1
    assert sample(registry, "herdcache_loads_total") == 1
    assert sample(registry, "herdcache_load_duration_seconds_count") == 1
    assert sample(registry, "herdcache_load_duration_seconds_sum") >= 0.1
    assert sample(registry, "herdcache_waiters") == 0


async def get_calls(cache: HerdCache) -> int:
    stats = await cache.redis.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_shared_get_survives_its_issuer_leaving(make_cache: MakeCache) -> None:
    cache = await make_cache(ttl=60)

    async def load() -> str:
        return "v"

    await cache.get_or_load("k", load)
    await cache.redis.execute_command("CLIENT", "PAUSE", "300", "ALL")  # GETs now stall
    issuer = asyncio.create_task(cache.get_or_load("k", load))
    await until(lambda: _async(cache.value_key("k") in cache._gets))
    others = [asyncio.create_task(cache.get_or_load("k", load)) for _ in range(10)]
    await until(lambda: _async(cache._gets.get(cache.value_key("k")) is not None))
    issuer.cancel()
    assert await asyncio.gather(*others) == ["v"] * 10
    with pytest.raises(asyncio.CancelledError):
        await issuer


async def _async(value: bool) -> bool:
    return value


async def test_cached_decorator_and_invalidate(make_cache: MakeCache) -> None:
    cache = await make_cache(ttl=60)
    calls: list[tuple[int, str]] = []

    @cache.cached(ttl=30)
    async def product(sku: int, *, region: str = "eu") -> dict[str, Any]:
        calls.append((sku, region))
        return {"sku": sku, "region": region, "n": len(calls)}

    assert await product(1) == {"sku": 1, "region": "eu", "n": 1}
    assert await product(1) == {"sku": 1, "region": "eu", "n": 1}
    assert await product(1, region="us") == {"sku": 1, "region": "us", "n": 2}
    await product.invalidate(1)  # type: ignore[attr-defined]
    assert await product(1) == {"sku": 1, "region": "eu", "n": 3}
    assert calls == [(1, "eu"), (1, "us"), (1, "eu")]


async def test_invalidate_during_fill_never_leaves_the_old_value(
    make_cache: MakeCache, pg_loader: PgLoader
) -> None:
    """The memcache stale-set race: a slow fill that read the old row must not write it."""
    a = await make_cache(ttl=60)  # two caches, two pools: two "processes"
    b = await make_cache(ttl=60, registry=CollectorRegistry())
    read_done, gate = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        read_done.set()
        await gate.wait()

    filling = asyncio.create_task(a.get_or_load(pg_loader.key, pg_loader.loader(after_read=hold)))
    await read_done.wait()  # a holds the lease and has read "v1"
    waiting = asyncio.create_task(b.get_or_load(pg_loader.key, pg_loader.loader()))

    async def b_waits() -> bool:
        return b._m.waiters._value.get() == 1

    await until(b_waits)
    pg_loader.set("v2")
    await b.invalidate(pg_loader.key)
    assert (await waiting)["v"] == "v2"  # woken by the invalidation, b loads the new row
    gate.set()
    assert (await filling)["v"] == "v1"  # a's caller gets what a read; a's write is refused
    assert (await stored(a, pg_loader.key))["v"] == "v2"
    assert (await a.get_or_load(pg_loader.key, pg_loader.loader()))["v"] == "v2"
    assert pg_loader.loads() == 2


async def test_invalidate_alone_refuses_the_fill(
    make_cache: MakeCache, pg_loader: PgLoader
) -> None:
    cache = await make_cache(ttl=60)
    read_done, gate = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        read_done.set()
        await gate.wait()

    filling = asyncio.create_task(
        cache.get_or_load(pg_loader.key, pg_loader.loader(after_read=hold))
    )
    await read_done.wait()
    await cache.invalidate(pg_loader.key)
    gate.set()
    await filling
    assert await stored(cache, pg_loader.key) is None
    assert await cache.redis.get(cache.lease_key(pg_loader.key)) is None


async def test_xfetch_refreshes_once_in_background_before_expiry(
    make_cache: MakeCache, registry: CollectorRegistry
) -> None:
    clock = FakeClock()
    cache = await make_cache(ttl=60, clock=clock, rng=ConstRandom(0.999999), beta=1.0)
    versions = iter(range(1, 100))
    refreshed = asyncio.Event()

    async def load() -> int:
        clock.advance(1.0)  # the recompute takes 1 s: delta = 1
        v = next(versions)
        if v == 2:
            refreshed.set()
        return v

    assert await cache.get_or_load("k", load) == 1
    assert sample(registry, "herdcache_early_refresh_total") == 0
    clock.advance(50)  # 10 s before expiry; gap = -1 * 1 * ln(1e-6) = 13.8 s: due
    values = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(100)))
    assert values == [1] * 100  # nobody waited for the refresh
    await refreshed.wait()

    async def landed() -> bool:
        return await stored(cache, "k") == 2

    await until(landed)
    assert sample(registry, "herdcache_early_refresh_total") == 1
    assert sample(registry, "herdcache_loads_total") == 2
    assert sample(registry, "herdcache_requests_total", result="hit") == 100


async def test_xfetch_fires_exactly_at_its_gap(
    make_cache: MakeCache, registry: CollectorRegistry
) -> None:
    clock = FakeClock()
    cache = await make_cache(ttl=60, clock=clock, rng=ConstRandom(0.5))
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        clock.advance(1.0)  # delta = 1 s
        return calls

    await cache.get_or_load("k", load)  # expiry = now + 60
    clock.advance(59.2)  # 0.8 s left; U = 0.5, gap = ln 2 = 0.69 s: not due
    assert await cache.get_or_load("k", load) == 1
    assert not cache._refreshing and calls == 1
    clock.advance(0.2)  # 0.6 s left: due
    assert await cache.get_or_load("k", load) == 1

    async def refreshed() -> bool:
        return await stored(cache, "k") == 2

    await until(refreshed)
    assert sample(registry, "herdcache_early_refresh_total") == 1


async def test_stale_while_revalidate_serves_old_value_and_refreshes(
    make_cache: MakeCache, registry: CollectorRegistry
) -> None:
    clock = FakeClock()
    cache = await make_cache(ttl=60, clock=clock, xfetch=False, stale_while_revalidate=30)
    versions = iter(range(1, 100))
    gate = asyncio.Event()

    async def load() -> int:
        v = next(versions)
        if v > 1:
            await gate.wait()
        return v

    assert await cache.get_or_load("k", load) == 1
    clock.advance(70)  # expired 10 s ago, inside the 30 s window
    assert await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(20))) == [1] * 20
    gate.set()

    async def landed() -> bool:
        return await stored(cache, "k") == 2

    await until(landed)
    assert await cache.get_or_load("k", load) == 2
    assert sample(registry, "herdcache_requests_total", result="stale") == 20
    assert sample(registry, "herdcache_loads_total") == 2


async def test_stale_if_error_up_to_max_stale(
    make_cache: MakeCache, registry: CollectorRegistry
) -> None:
    clock = FakeClock()
    cache = await make_cache(ttl=60, clock=clock, xfetch=False, max_stale=30)

    async def good() -> str:
        return "old"

    async def broken() -> str:
        raise ConnectionError("database down")

    assert await cache.get_or_load("k", good) == "old"
    clock.advance(70)
    assert await cache.get_or_load("k", broken) == "old"
    assert sample(registry, "herdcache_requests_total", result="stale") == 1
    clock.advance(25)  # 35 s past expiry: beyond max_stale
    with pytest.raises(ConnectionError):
        await cache.get_or_load("k", broken)
    assert sample(registry, "herdcache_requests_total", result="error") == 1


async def test_shedding_fails_fast(make_cache: MakeCache, registry: CollectorRegistry) -> None:
    cache = await make_cache(ttl=60, max_concurrent_loads=1)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        entered.set()
        await gate.wait()
        return "a"

    async def fast() -> str:
        return "b"

    first = asyncio.create_task(cache.get_or_load("a", slow))
    await entered.wait()
    with pytest.raises(Overloaded):
        await cache.get_or_load("b", fast)
    gate.set()
    assert await first == "a"
    assert await cache.get_or_load("b", fast) == "b"
    assert sample(registry, "herdcache_requests_total", result="shed") == 1


async def test_breaker_opens_then_half_opens(
    make_cache: MakeCache, registry: CollectorRegistry
) -> None:
    clock = FakeClock()
    cache = await make_cache(ttl=60, clock=clock, breaker_failures=2, breaker_reset=5.0)
    calls = 0

    async def broken() -> str:
        nonlocal calls
        calls += 1
        raise TimeoutError("slow db")

    for key in ("a", "b"):
        with pytest.raises(TimeoutError):
            await cache.get_or_load(key, broken)
    with pytest.raises(CircuitOpen):
        await cache.get_or_load("c", broken)
    assert calls == 2
    assert sample(registry, "herdcache_breaker_state", breaker="loader") == 2
    clock.advance(5.0)

    async def good() -> str:
        return "ok"

    assert await cache.get_or_load("c", good) == "ok"
    assert sample(registry, "herdcache_breaker_state", breaker="loader") == 0
    assert sample(registry, "herdcache_requests_total", result="shed") == 1
    assert sample(registry, "herdcache_requests_total", result="error") == 2


async def test_load_rate_limit(make_cache: MakeCache) -> None:
    cache = await make_cache(ttl=60, clock=FakeClock(), load_rate=1.0, load_burst=1)

    async def load() -> int:
        return 1

    assert await cache.get_or_load("a", load) == 1
    with pytest.raises(RateLimited) as info:
        await cache.get_or_load("b", load)
    assert info.value.retry_after == pytest.approx(1.0)


async def test_retries_back_off_with_jitter(redis_url: str, ns: str) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = redis.asyncio.Redis.from_url(redis_url)
    cache = HerdCache(
        client,
        namespace=ns,
        registry=None,
        sleep=sleep,
        rng=Random(7),
        settings=Settings(ttl=60, retries=3, backoff_base=0.1, backoff_cap=1.0),
    )
    failures = 2

    async def flaky() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("blip")
        return "ok"

    try:
        assert await cache.get_or_load("k", flaky) == "ok"
    finally:
        await cache.aclose()
        await client.aclose()
    retry_sleeps = [s for s in slept if s <= 1.0]
    assert len(retry_sleeps) == 2
    assert 0 <= retry_sleeps[0] <= 0.1 and 0 <= retry_sleeps[1] <= 0.2


async def test_codecs(make_cache: MakeCache) -> None:
    cache = await make_cache(ttl=60)

    async def not_json() -> object:
        return object()

    with pytest.raises(CodecError):
        await cache.get_or_load("k", not_json)
    assert await cache.redis.get(cache.lease_key("k")) is None  # lease released on failure
    raw = await make_cache(ttl=60, codec=BytesCodec(), registry=None)

    async def blob() -> bytes:
        return b"\x00\xffbinary"

    assert await raw.get_or_load("b", blob) == b"\x00\xffbinary"
    assert await raw.get_or_load("b", blob) == b"\x00\xffbinary"


async def test_runtime_settings_pushed_rejected_and_picked_up(
    make_cache: MakeCache, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = await make_cache(ttl=60, ttl_jitter=5, max_concurrent_loads=64)
    assert await publish_settings(cache.redis, ns, {"beta": 2.5, "xfetch": False}) == {
        "beta": 2.5,
        "xfetch": False,
    }

    async def applied() -> bool:
        return cache.settings.beta == 2.5 and not cache.settings.xfetch

    await until(applied)
    assert cache.settings.ttl_jitter == 5  # constructor values stay unless overridden
    with pytest.raises(SettingsError, match="max_concurrent_loads"):
        await publish_settings(cache.redis, ns, {"max_concurrent_loads": 0})
    with caplog.at_level(logging.WARNING, logger="herdwatch.cache"):
        await cache.redis.publish(f"{ns}:settings", b'{"beta": -1}')
        await cache.redis.publish(f"{ns}:settings", b"not json")
        await publish_settings(cache.redis, ns, {"max_concurrent_loads": 3})

        async def limit_applied() -> bool:
            return cache.settings.max_concurrent_loads == 3

        await until(limit_applied)
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 2 and "beta" in rejected[0]
    assert cache.settings.beta == 2.5 and cache._shedder.limit == 3
    assert await cache.redis.get(settings_key(ns)) is not None
    late = await make_cache(ttl=60, registry=None)  # started after the push: reads the key
    assert late.settings.max_concurrent_loads == 3 and late.settings.beta == 2.5


async def test_redis_stopped_mid_run_degrades_never_hangs(
    pg_dsn: str, ns: str, registry: CollectorRegistry
) -> None:
    from tests.support.servers import start_redis

    clock = FakeClock()
    server = start_redis()
    port = server.port
    fresh = PgLoader(pg_dsn, f"{ns}:fresh")
    cold = PgLoader(pg_dsn, f"{ns}:cold")
    cache = HerdCache.from_url(
        server.url,
        namespace=ns,
        registry=registry,
        clock=clock,
        ttl=60,
        max_stale=120,
        breaker_failures=2,
        breaker_reset=1.0,
        socket_timeout=0.5,
    )
    try:
        await cache.start()

        async def broken() -> dict[str, Any]:
            raise ConnectionError("database down too")

        warm = await cache.get_or_load(fresh.key, fresh.loader())
        old = await cache.get_or_load("stale-one", _const("kept"))
        server.stop()
        async with asyncio.timeout(10):
            # Fresh local copy: served without Redis or Postgres.
            got = await asyncio.gather(*(cache.get_or_load(fresh.key, broken) for _ in range(50)))
            assert got == [warm] * 50
            # A cold key: one collapsed direct load behind the open breaker.
            got = await asyncio.gather(
                *(cache.get_or_load(cold.key, cold.loader(sleep=0.05)) for _ in range(100))
            )
            assert got == [{"k": cold.key, "v": "v1"}] * 100 and cold.loads() == 1
            assert sample(registry, "herdcache_breaker_state", breaker="redis") == 2
            clock.advance(90)  # every value expired; stale-if-error still within max_stale
            assert await cache.get_or_load("stale-one", broken) == old
            assert (await cache.get_or_load(fresh.key, fresh.loader()))["v"] == "v1"
        assert fresh.loads() == 2
        server = start_redis(port=port)
        clock.advance(1.0)  # breaker half-open: the next call tries Redis again
        assert (await cache.get_or_load(fresh.key, fresh.loader()))["v"] == "v1"
        assert sample(registry, "herdcache_breaker_state", breaker="redis") == 0
        assert await stored(cache, fresh.key) == {"k": fresh.key, "v": "v1"}
    finally:
        await cache.aclose()
        server.stop()


def _const(value: str) -> Callable[[], Awaitable[str]]:
    async def load() -> str:
        return value

    return load


def test_sync_twin_threads_share_one_load(redis_url: str, ns: str, pg_loader: PgLoader) -> None:
    registry = CollectorRegistry()
    with SyncHerdCache.from_url(redis_url, ttl=60, namespace=ns, registry=registry) as cache:
        barrier = threading.Barrier(40)
        results: list[Any] = []
        lock = threading.Lock()
        load = pg_loader.sync_loader()

        def call() -> None:
            barrier.wait()
            value = cache.get_or_load(pg_loader.key, load)
            with lock:
                results.append(value)

        threads = [threading.Thread(target=call) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [{"k": pg_loader.key, "v": "v1"}] * 40
        assert pg_loader.loads() == 1

        @cache.cached(ttl=30)
        def square(n: int) -> int:
            return n * n + len(results)

        assert square(3) == 49 and square(3) == 49
        results.append(None)
        square.invalidate(3)  # type: ignore[attr-defined]
        assert square(3) == 50


async def test_metric_names_are_the_contract(
    make_cache: MakeCache, registry: CollectorRegistry
) -> None:
    await make_cache()
    names = {m.name for m in registry.collect()}
    assert names == {
        "herdcache_requests",
        "herdcache_loads",
        "herdcache_load_duration_seconds",
        "herdcache_waiters",
        "herdcache_lease_wait_seconds",
        "herdcache_early_refresh",
        "herdcache_breaker_state",
    }  # prometheus_client strips _total from counter family names
    exposed = {s.name for m in registry.collect() for s in m.samples}
    assert {
        "herdcache_requests_total",
        "herdcache_loads_total",
        "herdcache_early_refresh_total",
        "herdcache_load_duration_seconds_bucket",
        "herdcache_lease_wait_seconds_bucket",
        "herdcache_waiters",
        "herdcache_breaker_state",
    } <= exposed


@pytest.mark.parametrize(("size", "scripts"), [(100, 3), (10_000, 4)])
async def test_waiter_in_another_process_gets_small_values_from_the_announcement(
    make_cache: MakeCache, size: int, scripts: int
) -> None:
    """A's lease script and fenced write, B's lease script; a large value costs B one more."""
    a = await make_cache(ttl=60)
    # No polling fallback in the way: only the announcement may wake b.
    b_registry = CollectorRegistry()
    b = await make_cache(ttl=60, registry=b_registry, poll_interval=60.0)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        entered.set()
        await gate.wait()
        return "x" * size

    async def never() -> str:
        raise AssertionError("b must not load")

    before = await evalsha_calls(a)
    filling = asyncio.create_task(a.get_or_load("k", slow))
    await entered.wait()
    waiting = asyncio.create_task(b.get_or_load("k", never))
    await until(lambda: _async(b._m.waiters._value.get() == 1))
    gate.set()
    assert await waiting == await filling == "x" * size
    assert await evalsha_calls(a) - before == scripts
    assert sample(b_registry, "herdcache_lease_wait_seconds_count") == 1
    assert sample(b_registry, "herdcache_waiters") == 0


async def evalsha_calls(cache: HerdCache) -> int:
    stats = await cache.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_ttl_jitter_spreads_stored_expiry(make_cache: MakeCache) -> None:
    clock = FakeClock()
    uniform = await make_cache(ttl=100, ttl_jitter=20, clock=clock, rng=Random(3), xfetch=False)
    hashed = await make_cache(
        ttl=100, ttl_jitter=20, jitter_mode="hash", clock=clock, registry=None, xfetch=False
    )
    offsets = []
    for i in range(20):
        await uniform.get_or_load(f"u{i}", _const("v"))
        raw = await uniform.redis.get(uniform.value_key(f"u{i}"))
        entry = unpack(raw)
        assert entry is not None
        offsets.append(entry.expiry - clock.time())
        pttl = await uniform.redis.pttl(uniform.value_key(f"u{i}"))
        assert 99_000 < pttl <= 120_000  # Redis keeps it as long as the soft expiry (no stale)
    assert all(100 <= o < 120 for o in offsets) and len(set(offsets)) == 20
    await hashed.get_or_load("same", _const("v"))
    entry = unpack(await hashed.redis.get(hashed.value_key("same")))
    assert entry is not None
    assert entry.expiry - clock.time() == pytest.approx(100 + 20 * key_fraction("same"))


async def test_lease_wait_times_out_into_an_uncached_load(make_cache: MakeCache) -> None:
    """nginx proxy_cache_lock: after wait_timeout the waiter loads itself and does not write."""
    a = await make_cache(ttl=60)
    registry = CollectorRegistry()
    b = await make_cache(ttl=60, registry=registry, wait_timeout=0.05, poll_interval=0.02)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        entered.set()
        await gate.wait()
        return "from a"

    filling = asyncio.create_task(a.get_or_load("k", slow))
    await entered.wait()
    assert await b.get_or_load("k", _const("from b")) == "from b"
    assert await stored(a, "k") is None  # b did not write: a still holds the lease
    gate.set()
    assert await filling == "from a"
    assert await stored(a, "k") == "from a"
    assert sample(registry, "herdcache_loads_total") == 1


async def test_load_timeout(make_cache: MakeCache, registry: CollectorRegistry) -> None:
    cache = await make_cache(ttl=60, load_timeout=0.05)

    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(TimeoutError):
        await cache.get_or_load("k", hangs)
    assert sample(registry, "herdcache_requests_total", result="error") == 1
    assert await cache.redis.get(cache.lease_key("k")) is None
