"""The threaded twin of HerdCache: the same algorithm, driven from blocking code."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from herdwatch.cache._client import HerdCache, make_key
from herdwatch.cache._settings import Settings

T = TypeVar("T")
P = ParamSpec("P")


class SyncHerdCache:
    """Blocking HerdCache for threaded code (WSGI, Celery, scripts).

    It runs one :class:`HerdCache` on a private event loop thread and calls the blocking
    loaders in a thread pool, so threads and processes share the same collapsing, leases,
    fencing, XFetch and metrics. Safe to call from any number of threads.
    """

    def __init__(self, make: Callable[[], HerdCache], *, loader_threads: int = 32) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="herdcache-loop", daemon=True
        )
        self._thread.start()
        self._pool = ThreadPoolExecutor(loader_threads, thread_name_prefix="herdcache-load")

        async def build() -> HerdCache:
            cache = make()
            await cache.start()
            return cache

        self._cache = self._run(build())

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SyncHerdCache:
        """Like :meth:`HerdCache.from_url` (same keywords), for blocking callers."""
        return cls(lambda: HerdCache.from_url(url, **kwargs))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def settings(self) -> Settings:
        return self._cache.settings

    @property
    def async_cache(self) -> HerdCache:
        """The HerdCache underneath (lives on the private loop: do not await it elsewhere)."""
        return self._cache

    def get_or_load(self, key: str, loader: Callable[[], T], *, ttl: float | None = None) -> T:
        """The cached value of ``key``, calling the blocking ``loader`` once when missing."""

        async def aload() -> T:
            return await self._loop.run_in_executor(self._pool, loader)

        return self._run(self._cache.get_or_load(key, aload, ttl=ttl))

    def cached(
        self,
        ttl: float | None = None,
        *,
        key: Callable[..., str] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a blocking function so its results are cached per argument list."""

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            prefix = name or f"{fn.__module__}.{fn.__qualname__}"

            def key_of(*args: Any, **kwargs: Any) -> str:
                return key(*args, **kwargs) if key else make_key(prefix, args, kwargs)

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return self.get_or_load(
                    key_of(*args, **kwargs), lambda: fn(*args, **kwargs), ttl=ttl
                )

            def invalidate(*args: Any, **kwargs: Any) -> None:
                self.invalidate(key_of(*args, **kwargs))

            wrapper.invalidate = invalidate  # type: ignore[attr-defined]
            wrapper.cache_key = key_of  # type: ignore[attr-defined]
            return wrapper

        return decorate

    def invalidate(self, key: str) -> None:
        """Delete ``key``; a fill already running cannot write its older value."""
        self._run(self._cache.invalidate(key))

    def close(self) -> None:
        """Stop the cache, its loop thread and its loader threads."""
        if self._loop.is_closed():
            return
        self._run(self._cache.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> SyncHerdCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
