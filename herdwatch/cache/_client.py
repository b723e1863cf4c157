"""HerdCache: cache-aside on Redis that loads each key once per expiry across a fleet."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from random import Random
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio
import redis.exceptions
from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from herdwatch.cache._clock import Clock, SystemClock
from herdwatch.cache._codec import (
    _HEADER_SIZE,
    _TAIL,
    PREFIX,
    Codec,
    Entry,
    JsonCodec,
    pack,
    unpack,
)
from herdwatch.cache._metrics import CacheMetrics, metrics_for
from herdwatch.cache._policy import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    LoadShedder,
    RetryBudget,
    TokenBucket,
    jittered_ttl,
    xfetch_due,
)
from herdwatch.cache._settings import Settings, parse_overrides, settings_channel, settings_key
from herdwatch.cache._singleflight import SingleFlight
from herdwatch.cache.errors import (
    CircuitOpen,
    LeaseLostError,
    Overloaded,
    RateLimited,
    SettingsError,
)

T = TypeVar("T")
P = ParamSpec("P")

log = logging.getLogger("herdwatch.cache")

# Connection refused, reset, timeouts: anything that means "Redis is not answering".
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

# KEYS: value, lease. ARGV: token, px, now, envelope prefix. A fresh value (soft expiry read
# from the envelope header) is returned without touching the lease; otherwise take the lease
# if free. One step: a fill that landed since the caller's first look is seen, not redone.
_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 3) == ARGV[4] and struct.unpack('>d', v, 4) > tonumber(ARGV[3]) then
  return {0, v}
end
local got = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
return {got and 1 or 0, v}
"""
# KEYS: value, lease. ARGV: token, envelope, px, channel, announcement, inline envelope or ''.
# The write happens only while the caller's token still owns the lease: fencing. A small value
# travels in the announcement itself, so waiters in other processes need no extra round trip.
_FILL = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ARGV[6])
return 1
"""
# KEYS: lease. ARGV: token, channel, key.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
# KEYS: lease. ARGV: token, px.
_EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

_SHED = (Overloaded, RateLimited, CircuitOpen)
# Values up to this size ride along in the fill announcement (every subscriber receives it).
_INLINE_MAX = 4096


def _announcement(key: str) -> bytes:
    """``<byte length>:<key>``; a fill appends the envelope when it is small."""
    raw = key.encode()
    return b"%d:%b" % (len(raw), raw)


class _Wakeup:
    """One flight's wait for a fill announcement; the listener may hand it the value."""

    __slots__ = ("envelope", "event")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.envelope = b""


def _parse_announcement(data: bytes) -> tuple[str, bytes]:
    head, _, rest = data.partition(b":")
    n = int(head)
    return rest[:n].decode(), rest[n:]


def make_key(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A cache key from a function name and its arguments (JSON, ``repr`` for the rest)."""
    parts = json.dumps([list(args), sorted(kwargs.items())], default=repr, separators=(",", ":"))
    return f"{name}:{parts}"


class HerdCache:
    """Cache-aside on Redis that cannot stampede.

    One load per key per expiry across every process (in-process collapsing, then a Redis lease
    with a fencing token); XFetch refreshes before expiry in the background; stale values are
    served while revalidating and when loads fail; loads are shed, rate-limited and guarded by
    a breaker; a Redis outage degrades to direct, collapsed loads instead of errors.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        namespace: str = "herdcache",
        settings: Settings | None = None,
        codec: Codec | None = None,
        clock: Clock | None = None,
        rng: Random | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        local_size: int = 1024,
        owns_client: bool = False,
    ) -> None:
        if client.get_connection_kwargs().get("decode_responses"):  # type: ignore[no-untyped-call, unused-ignore]
            raise ValueError("HerdCache stores bytes: use a client with decode_responses=False")
        self._redis = client
        self._ns = namespace
        self._base = settings or Settings()
        self._settings = self._base
        self._codec: Codec = codec or JsonCodec()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or Random()
        self._sleep = sleep
        self._owns_client = owns_client
        self._m: CacheMetrics = metrics_for(registry)
        self._flight = SingleFlight()
        self._fill_channel = f"{namespace}:filled"
        self._settings_channel = settings_channel(namespace)
        self._acquire_script = client.register_script(_ACQUIRE)
        self._fill_script = client.register_script(_FILL)
        self._release_script = client.register_script(_RELEASE)
        self._extend_script = client.register_script(_EXTEND)
        self._wakeups: dict[str, _Wakeup] = {}
        self._gets: dict[str, asyncio.Future[bytes | None] | None] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closed = False
        # A small local copy of recent values: served only while Redis is unreachable.
        self._local: OrderedDict[str, Entry] = OrderedDict()
        self._local_size = local_size
        self._last_error: BaseException | None = None
        self._loader_breaker = self._breaker("loader")
        self._redis_breaker = self._breaker("redis")
        self._shedder = LoadShedder(self._settings.max_concurrent_loads)
        self._budget = RetryBudget(self._settings.retry_budget_ratio)
        self._bucket: TokenBucket | None = None
        self._backoff = Backoff(0, 0)
        self._configure(self._settings)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl: float = 3600.0,
        ttl_jitter: float = 0.0,
        namespace: str = "herdcache",
        codec: Codec | None = None,
        clock: Clock | None = None,
        rng: Random | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        max_connections: int = 64,
        socket_timeout: float = 1.0,
        **settings: Any,
    ) -> HerdCache:
        """A HerdCache on its own connection pool to ``url``; other settings by keyword.

        The pool is bounded (callers queue for a connection) and redis-py's own retries are off:
        when Redis is down the cache falls back at once instead of retrying for seconds.
        """
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        client = redis.asyncio.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        client.auto_close_connection_pool = True  # as Redis.from_pool does: the pool is ours
        merged = Settings().replace({"ttl": ttl, "ttl_jitter": ttl_jitter, **settings})
        return cls(
            client,
            namespace=namespace,
            settings=merged,
            codec=codec,
            clock=clock,
            rng=rng,
            registry=registry,
            owns_client=True,
        )

    # -- public API -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force now (constructor values plus pushed overrides)."""
        return self._settings

    @property
    def redis(self) -> redis.asyncio.Redis:
        return self._redis

    def value_key(self, key: str) -> str:
        """The Redis key holding ``key``'s value (hash-tagged with the lease for Cluster)."""
        return f"{self._ns}:v:{{{key}}}"

    def lease_key(self, key: str) -> str:
        """The Redis key holding ``key``'s lease token while a fill runs."""
        return f"{self._ns}:l:{{{key}}}"

    async def start(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Subscribe to fill and settings announcements now (else on first use).

        Waits up to ``timeout`` seconds for the subscription and the stored settings; when
        Redis is down it returns anyway and the cache degrades as documented.
        """
        self._ensure_listener()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()

    async def get_or_load(
        self, key: str, loader: Callable[[], Awaitable[T]], *, ttl: float | None = None
    ) -> T:
        """The cached value of ``key``, calling ``loader`` (once across the fleet) when missing.

        ``ttl`` overrides the default TTL for this key. Raises the loader's error, or
        Overloaded / RateLimited / CircuitOpen, only when no stale value may be served.
        """
        if self._listener is None:
            self._ensure_listener()
        s = self._settings
        stale: Entry | None = None
        vkey = f"{self._ns}:v:{{{key}}}"
        # The hit path is written out flat: it must cost little more than a bare GET.
        if self._redis_breaker.is_closed and vkey not in self._gets:
            gets = self._gets
            gets[vkey] = None  # later concurrent callers of this key share our GET
            try:
                raw = cast("bytes | None", await self._redis.get(vkey))
            except BaseException as exc:
                self._get_failed(vkey, exc)
                if isinstance(exc, _REDIS_ERRORS):
                    return await self._degraded(key, loader)
                raise
            if (shared := gets.pop(vkey, None)) is not None:
                shared.set_result(raw)
            self._redis_breaker.record_success()
        elif not self._redis_breaker.allow():
            return await self._degraded(key, loader)
        else:
            try:
                raw = await self._get(vkey)
            except _REDIS_ERRORS:
                return await self._degraded(key, loader)
        if raw is not None and raw[:3] == PREFIX:
            expiry, delta = _TAIL.unpack_from(raw, 3)
            now = self._clock.time()
            if now < expiry:
                value: T = self._codec.loads(raw[_HEADER_SIZE:])
                known = self._local.get(key)
                if known is None or known.expiry != expiry:
                    self._remember(key, Entry(raw[_HEADER_SIZE:], expiry, delta))
                if s.xfetch and xfetch_due(now, expiry, delta, s.beta, self._rng):
                    self._refresh_later(key, loader, ttl, expiry)
                self._m.hit.inc()
                return value
            entry = Entry(raw[_HEADER_SIZE:], expiry, delta)
            if now - entry.expiry < s.stale_while_revalidate:
                self._refresh_later(key, loader, ttl, entry.expiry)
                self._m.stale.inc()
                return self._codec.loads(entry.payload)  # type: ignore[no-any-return]
            stale = entry
        follower = key in self._flight
        if follower:
            self._m.waiters.inc()
        try:
            value, kind = await self._flight.do(key, lambda: self._fill(key, loader, ttl, stale))
        except _SHED:
            self._m.shed.inc()
            raise
        except Exception:
            self._m.error.inc()
            raise
        finally:
            if follower:
                self._m.waiters.dec()
        (self._m.stale if kind == "stale" else self._m.miss).inc()
        return value

    def cached(
        self,
        ttl: float | None = None,
        *,
        key: Callable[..., str] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate an async function so its results are cached per argument list.

        ``key(*args, **kwargs)`` builds the cache key (default: qualified name + JSON of args).
        The wrapper has ``await wrapper.invalidate(*args, **kwargs)``.
        """

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            prefix = name or f"{fn.__module__}.{fn.__qualname__}"

            def key_of(*args: Any, **kwargs: Any) -> str:
                return key(*args, **kwargs) if key else make_key(prefix, args, kwargs)

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self.get_or_load(
                    key_of(*args, **kwargs), lambda: fn(*args, **kwargs), ttl=ttl
                )

            async def invalidate(*args: Any, **kwargs: Any) -> None:
                await self.invalidate(key_of(*args, **kwargs))

            wrapper.invalidate = invalidate  # type: ignore[attr-defined]
            wrapper.cache_key = key_of  # type: ignore[attr-defined]
            return wrapper

        return decorate

    async def invalidate(self, key: str) -> None:
        """Delete ``key`` and its lease: a fill already running cannot write its (older) value."""
        self._flight.forget(key)
        self._local.pop(key, None)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.value_key(key), self.lease_key(key))
            pipe.publish(self._fill_channel, _announcement(key))
            await pipe.execute()

    async def aclose(self) -> None:
        """Stop the listener and background refreshes; close the pool if this cache made it."""
        self._closed = True
        tasks = [*self._tasks, *([self._listener] if self._listener else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._owns_client:
            await self._redis.aclose()

    async def __aenter__(self) -> HerdCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- settings -----------------------------------------------------------------------------

    def _breaker(self, name: str) -> CircuitBreaker:
        gauge = self._m.breaker_state.labels(name)

        def on_change(state: BreakerState) -> None:
            gauge.set(int(state))
            why = f" ({self._last_error!r})" if state is BreakerState.OPEN else ""
            log.warning(
                "herdcache %s breaker %s%s", name, state.name.lower().replace("_", "-"), why
            )

        return CircuitBreaker(
            name,
            clock=self._clock,
            failure_threshold=self._settings.breaker_failures,
            reset_timeout=self._settings.breaker_reset,
            on_change=on_change,
        )

    def _configure(self, s: Settings) -> None:
        self._settings = s
        self._shedder.limit = s.max_concurrent_loads
        self._budget.ratio = s.retry_budget_ratio
        self._backoff = Backoff(min(s.backoff_base, s.backoff_cap), s.backoff_cap, s.backoff_mode)  # type: ignore[arg-type]
        for breaker in (self._loader_breaker, self._redis_breaker):
            breaker.failure_threshold = s.breaker_failures
            breaker.reset_timeout = s.breaker_reset
        if s.load_rate <= 0:
            self._bucket = None
        elif self._bucket is None or (self._bucket.rate, self._bucket.burst) != (
            s.load_rate,
            s.load_burst,
        ):
            self._bucket = TokenBucket(s.load_rate, s.load_burst, clock=self._clock)

    def apply_overrides(self, data: bytes | str) -> bool:
        """Apply a pushed settings document over the constructor's settings.

        An invalid document is logged and rejected; the settings in force stay. Returns
        whether it was applied.
        """
        try:
            overrides = parse_overrides(data)
            new = self._base.replace(overrides)
        except SettingsError as exc:
            log.warning("herdcache %s: rejected pushed settings: %s", self._ns, exc)
            return False
        self._configure(new)
        log.info("herdcache %s: settings applied: %s", self._ns, overrides)
        return True

    # -- pub/sub listener ---------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        if self._listener is None and not self._closed:
            self._listener = asyncio.create_task(self._listen(), name=f"herdcache:{self._ns}")

    async def _listen(self) -> None:
        delay = 0.0
        backoff = Backoff(0.05, 2.0, "decorrelated")
        down_logged = False
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._fill_channel, self._settings_channel)
                # Confirmations arrive as messages: only after both are we sure to miss nothing.
                confirmed = 0
                while confirmed < 2 and not self._closed:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None and msg["type"] == "subscribe":
                        confirmed += 1
                for script in (self._acquire_script, self._fill_script, self._release_script):
                    await self._redis.script_load(script.script)  # no NOSCRIPT on a cold key
                stored = await self._redis.get(settings_key(self._ns))
                if stored is not None:
                    self.apply_overrides(stored)
                self._subscribed.set()
                delay, down_logged = 0.0, False
                # redis-py can turn a cancellation into a read timeout (None): check _closed too.
                while not self._closed:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg["type"] != "message":
                        continue
                    channel, data = msg["channel"], msg["data"]
                    if channel == self._fill_channel.encode():
                        key, envelope = _parse_announcement(data)
                        wakeup = self._wakeups.pop(key, None)
                        if wakeup is not None:
                            wakeup.envelope = envelope
                            wakeup.event.set()
                    else:
                        self.apply_overrides(data)
            except _REDIS_ERRORS as exc:
                self._subscribed.clear()
                if not down_logged:
                    log.warning("herdcache %s: pub/sub lost (%s); polling", self._ns, exc)
                    down_logged = True
                # Waiters stop waiting for a message that cannot come: they poll instead.
                for wakeup in self._wakeups.values():
                    wakeup.event.set()
                self._wakeups.clear()
            finally:
                with contextlib.suppress(BaseException):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            delay = backoff.delay(0, delay, self._rng)
            if not self._closed:
                await asyncio.sleep(delay)

    # -- loading ------------------------------------------------------------------------------

    async def _get(self, vkey: str) -> bytes | None:
        """GET, shared by concurrent callers of the same key in this process.

        A cold key hit by hundreds of callers costs one round trip and one connection, not
        hundreds (which, on a busy host, time out together and trip the Redis breaker). Only
        the caller that issued the GET reports its outcome to the breaker. The future that
        others wait on is made only when a second caller arrives: a lone hit pays a dict entry.
        """
        gets = self._gets
        while vkey in gets:
            pending = gets[vkey]
            if pending is None:
                pending = gets[vkey] = asyncio.get_running_loop().create_future()
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    continue  # the caller who issued it left; we did not: ask again
                raise
        gets[vkey] = None
        try:
            raw = cast("bytes | None", await self._redis.get(vkey))
        except BaseException as exc:
            self._get_failed(vkey, exc)
            raise
        self._redis_breaker.record_success()
        if (fut := gets.pop(vkey, None)) is not None:
            fut.set_result(raw)
        return raw

    def _get_failed(self, vkey: str, exc: BaseException) -> None:
        """The GET this caller issued failed: tell the breaker and whoever shared it."""
        if isinstance(exc, _REDIS_ERRORS):
            self._redis_failed(exc)
        fut = self._gets.pop(vkey, None)
        if fut is None:
            return
        if isinstance(exc, Exception):
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning if all waiters left
        else:
            fut.cancel()

    def _remember(self, key: str, entry: Entry) -> None:
        local = self._local
        known = local.get(key)
        if known is not None and known.expiry == entry.expiry:
            return  # the hit path's common case: nothing new to keep
        local[key] = entry
        if len(local) > self._local_size:
            local.popitem(last=False)

    def _usable_stale(self, entry: Entry | None) -> bool:
        return entry is not None and self._clock.time() - entry.expiry <= self._settings.max_stale

    def _redis_failed(self, exc: BaseException) -> None:
        log.debug("herdcache %s: redis error: %s", self._ns, exc)
        self._last_error = exc
        self._redis_breaker.record_failure()

    async def _load(self, loader: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        """Run the loader behind shedding, the breaker, the bucket and budgeted retries."""
        s = self._settings
        self._shedder.enter()
        try:
            self._loader_breaker.check()
            if self._bucket is not None:
                self._bucket.acquire()
            self._budget.deposit()
            attempt, previous = 0, s.backoff_base
            while True:
                self._m.loads.inc()
                started = self._clock.monotonic()
                try:
                    async with asyncio.timeout(s.load_timeout):
                        value = await loader()
                except Exception as exc:
                    self._last_error = exc
                    self._loader_breaker.record_failure()
                    if (
                        attempt < s.retries
                        and self._budget.try_withdraw()
                        and self._loader_breaker.allow()
                    ):
                        previous = self._backoff.delay(attempt, previous, self._rng)
                        attempt += 1
                        await self._sleep(previous)
                        continue
                    raise
                took = self._clock.monotonic() - started
                self._m.load_duration.observe(took)
                self._loader_breaker.record_success()
                return value, took
        finally:
            self._shedder.leave()

    async def _load_or_stale(
        self, loader: Callable[[], Awaitable[T]], stale: Entry | None
    ) -> tuple[T, str]:
        try:
            value, _ = await self._load(loader)
        except Exception:
            if stale is not None and self._usable_stale(stale):
                return self._codec.loads(stale.payload), "stale"
            raise
        return value, "miss"

    async def _degraded(self, key: str, loader: Callable[[], Awaitable[T]]) -> T:
        """Redis is unreachable: serve the local copy, else one collapsed direct load."""
        entry = self._local.get(key)
        if entry is not None and self._clock.time() < entry.expiry:
            self._m.hit.inc()
            return self._codec.loads(entry.payload)  # type: ignore[no-any-return]
        try:
            value, kind = await self._flight.do(
                ("direct", key), lambda: self._load_or_stale(loader, entry)
            )
        except _SHED:
            self._m.shed.inc()
            raise
        except Exception:
            self._m.error.inc()
            raise
        (self._m.stale if kind == "stale" else self._m.miss).inc()
        return value

    async def _fill(
        self, key: str, loader: Callable[[], Awaitable[T]], ttl: float | None, stale: Entry | None
    ) -> tuple[T, str]:
        """Take the lease and load, or wait for the holder's value (pub/sub, then polling)."""
        s = self._settings
        lkey, vkey = self.lease_key(key), self.value_key(key)
        stale = stale or self._local.get(key)
        deadline = self._clock.monotonic() + s.wait_timeout
        waited_since: float | None = None
        wakeup: _Wakeup | None = None
        try:
            while True:
                landed = wakeup.envelope if wakeup is not None else b""
                entry = unpack(landed) if landed else None
                if entry is not None and self._clock.time() < entry.expiry:
                    # The fill's announcement carried the value: no round trip.
                    if waited_since is not None:
                        self._m.lease_wait.observe(self._clock.monotonic() - waited_since)
                    self._remember(key, entry)
                    return self._codec.loads(entry.payload), "miss"
                token = secrets.token_hex(16)
                # Register for the wake-up before looking, so a fill landing in between is seen.
                wakeup = self._wakeups[key] = _Wakeup()
                try:
                    got, raw = await self._acquire_script(
                        keys=[vkey, lkey],
                        args=[token, int(s.lease_ttl * 1000), repr(self._clock.time()), PREFIX],
                    )
                except _REDIS_ERRORS as exc:
                    self._redis_failed(exc)
                    return await self._load_or_stale(loader, stale)
                entry = None if raw is None else unpack(raw)
                if entry is not None and self._clock.time() < entry.expiry:
                    # Another process filled the key since our first look: use its value.
                    if got:
                        await self._release(key, token)
                    if waited_since is not None:
                        self._m.lease_wait.observe(self._clock.monotonic() - waited_since)
                    self._remember(key, entry)
                    return self._codec.loads(entry.payload), "miss"
                if got:
                    if waited_since is not None:
                        self._m.lease_wait.observe(self._clock.monotonic() - waited_since)
                    return await self._lead(key, loader, ttl, token, stale)
                if waited_since is None:
                    waited_since = self._clock.monotonic()
                    self._m.waiters.inc()
                if self._clock.monotonic() >= deadline:
                    # nginx proxy_cache_lock semantics: after the wait, load without caching.
                    log.warning("herdcache %s: lease wait on %r timed out", self._ns, key)
                    return await self._load_or_stale(loader, stale)
                pause = s.poll_interval * (0.5 + self._rng.random())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await wakeup.event.wait()
        finally:
            if wakeup is not None and self._wakeups.get(key) is wakeup:
                del self._wakeups[key]  # a later announcement is not for this flight
            if waited_since is not None:
                self._m.waiters.dec()

    async def _lead(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl: float | None,
        token: str,
        stale: Entry | None,
    ) -> tuple[T, str]:
        """Load while holding the lease (kept alive), then write only if it is still ours."""
        heartbeat = asyncio.create_task(self._heartbeat(key, token))
        try:
            try:
                value, delta = await self._load(loader)
            finally:
                heartbeat.cancel()
            payload = self._codec.dumps(value)
        except BaseException as exc:
            await self._release(key, token)
            if isinstance(exc, Exception) and stale is not None and self._usable_stale(stale):
                return self._codec.loads(stale.payload), "stale"
            raise
        try:
            await self._store(key, token, payload, delta, ttl)
        except LeaseLostError as exc:
            # The caller still gets what it loaded; only the cache write was refused.
            log.debug("herdcache %s: %s", self._ns, exc)
        return value, "miss"

    async def _heartbeat(self, key: str, token: str) -> None:
        lease_ms = int(self._settings.lease_ttl * 1000)
        while True:
            await asyncio.sleep(self._settings.lease_ttl / 3)
            try:
                if not await self._extend_script(
                    keys=[self.lease_key(key)], args=[token, lease_ms]
                ):
                    return  # invalidated or taken over: the fill's write will be refused
            except _REDIS_ERRORS as exc:
                self._redis_failed(exc)

    async def _release(self, key: str, token: str) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._release_script(
                keys=[self.lease_key(key)], args=[token, self._fill_channel, _announcement(key)]
            )

    async def _store(
        self, key: str, token: str, payload: bytes, delta: float, ttl: float | None
    ) -> None:
        """Write the value only while ``token`` holds the lease; LeaseLostError otherwise."""
        s = self._settings
        life = jittered_ttl(
            s.ttl if ttl is None else ttl,
            s.ttl_jitter,
            key=key,
            mode=s.jitter_mode,  # type: ignore[arg-type]
            rng=self._rng,
        )
        entry = Entry(payload, self._clock.time() + life, delta)
        keep_ms = int((life + max(s.stale_while_revalidate, s.max_stale)) * 1000)
        self._remember(key, entry)
        envelope = pack(payload, entry.expiry, delta)
        inline = envelope if len(envelope) <= _INLINE_MAX else b""
        try:
            written = await self._fill_script(
                keys=[self.value_key(key), self.lease_key(key)],
                args=[token, envelope, keep_ms, self._fill_channel, _announcement(key), inline],
            )
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return
        if not written:
            # memcache's stale-set fix: an invalidation (or a newer leader) owns the key now.
            self._local.pop(key, None)
            raise LeaseLostError(key)

    def _refresh_later(
        self, key: str, loader: Callable[[], Awaitable[Any]], ttl: float | None, seen: float
    ) -> None:
        if key in self._refreshing or self._closed:
            return
        self._refreshing.add(key)
        task = asyncio.create_task(self._refresh(key, loader, ttl, seen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(
        self, key: str, loader: Callable[[], Awaitable[Any]], ttl: float | None, seen: float
    ) -> None:
        """Background refresh behind the lease: at most one across the fleet per expiry.

        ``seen`` is the expiry of the value that prompted it; if a newer one is stored by now,
        another process refreshed first and there is nothing to do.
        """
        try:
            token = secrets.token_hex(16)
            lease_ms = int(self._settings.lease_ttl * 1000)
            # "Fresh" here means newer than the value we saw: then someone refreshed already.
            got, _ = await self._acquire_script(
                keys=[self.value_key(key), self.lease_key(key)],
                args=[token, lease_ms, repr(seen), PREFIX],
            )
            if not got:
                return
            self._m.early_refresh.inc()
            await self._lead(key, loader, ttl, token, None)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
        except Exception as exc:
            log.warning("herdcache %s: background refresh of %r failed: %s", self._ns, key, exc)
        finally:
            self._refreshing.discard(key)
