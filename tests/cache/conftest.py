"""Fixtures for the cache client: the session's real Redis and Postgres, a Postgres loader."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from herdwatch.cache import HerdCache
from herdwatch.lab.servers import PostgresServer, Server

SCHEMA = """
CREATE TABLE IF NOT EXISTS herdcache_items (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE IF NOT EXISTS herdcache_loads (
    id serial PRIMARY KEY, k text NOT NULL, pid int NOT NULL, at timestamptz DEFAULT now());
"""


@pytest.fixture(scope="session")
def redis_url(redis_server: Server) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def pg_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    yield postgres_server.dsn


@pytest.fixture
def ns() -> str:
    """A namespace of its own per test: no flushing, no cross-talk."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


class PgLoader:
    """A real Postgres loader: records each load in herdcache_loads, then reads the item."""

    def __init__(self, dsn: str, key: str, value: str = "v1") -> None:
        self.dsn, self.key = dsn, key
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO herdcache_items (k, v) VALUES (%s, %s)"
                " ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (key, value),
            )

    def set(self, value: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("UPDATE herdcache_items SET v = %s WHERE k = %s", (value, self.key))

    def loads(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM herdcache_loads WHERE k = %s", (self.key,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def loader(
        self,
        *,
        sleep: float = 0.0,
        after_read: Callable[[], Awaitable[None]] | None = None,
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def load() -> dict[str, Any]:
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                await conn.execute(
                    "INSERT INTO herdcache_loads (k, pid) VALUES (%s, %s)", (self.key, os.getpid())
                )
                cur = await conn.execute(
                    "SELECT v, pg_sleep(%s) FROM herdcache_items WHERE k = %s", (sleep, self.key)
                )
                row = await cur.fetchone()
            assert row is not None
            if after_read is not None:
                await after_read()
            return {"k": self.key, "v": row[0]}

        return load

    def sync_loader(self) -> Callable[[], dict[str, Any]]:
        def load() -> dict[str, Any]:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO herdcache_loads (k, pid) VALUES (%s, %s)", (self.key, os.getpid())
                )
                row = conn.execute(
                    "SELECT v FROM herdcache_items WHERE k = %s", (self.key,)
                ).fetchone()
            assert row is not None
            return {"k": self.key, "v": row[0]}

        return load


@pytest.fixture
def pg_loader(pg_dsn: str, ns: str) -> PgLoader:
    return PgLoader(pg_dsn, f"{ns}:item")


@pytest.fixture
async def make_cache(
    redis_url: str, ns: str, registry: CollectorRegistry
) -> AsyncIterator[Callable[..., Awaitable[HerdCache]]]:
    made: list[HerdCache] = []

    async def make(**kwargs: Any) -> HerdCache:
        kwargs.setdefault("namespace", ns)
        kwargs.setdefault("registry", registry)
        cache = HerdCache.from_url(kwargs.pop("url", redis_url), **kwargs)
        made.append(cache)
        await cache.start()
        return cache

    yield make
    for cache in made:
        await cache.aclose()
