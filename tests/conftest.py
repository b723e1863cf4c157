"""Shared pytest fixtures: real servers on free loopback ports, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import PostgresServer, Server, start_postgres, start_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    """A real redis-server (no persistence) for the whole session; ``.url`` is redis://..."""
    with start_redis() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 cluster (max_connections 20, trust auth) for the whole session."""
    with start_postgres(max_connections=20) as server:
        yield server
