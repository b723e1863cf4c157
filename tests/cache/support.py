"""Helpers of the cache client's tests: a real Postgres loader and metric reading."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

SCHEMA = """
CREATE TABLE IF NOT EXISTS herdcache_items (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE IF NOT EXISTS herdcache_loads (
    id serial PRIMARY KEY, k text NOT NULL, pid int NOT NULL, at timestamptz DEFAULT now());
"""


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
