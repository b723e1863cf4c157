"""Fixtures for the cache client: the session's real Redis and Postgres, a Postgres loader."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from herdwatch.cache import HerdCache
from tests.cache.support import SCHEMA, PgLoader
from tests.support.servers import PostgresServer, Server


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
