"""Shared pytest fixtures: real servers on free loopback ports, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support.servers import PostgresServer, Server, start_postgres, start_redis

# Hypothesis: CI (CI set, as `.ci/run` runs) replays the same examples every run, from a seed
# derived from each test, and keeps no example database, so a landing never depends on luck.
# Local runs explore new examples each time and keep failures in .hypothesis/ (ignored by git);
# HYPOTHESIS_PROFILE=deep explores many more (e.g. before landing a detector change).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.register_profile("deep", max_examples=2000)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


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


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """Each test starts with the secrets it registers (herdwatch.config.register_secret, which
    resolving a password does) forgotten afterwards: a process-wide registry would otherwise
    hide one test's fake password, wherever it appears, in every later test's output."""
    from herdwatch.config import _secrets

    with _secrets._lock:
        before = set(_secrets._secrets)
    yield
    with _secrets._lock:
        _secrets._secrets.intersection_update(before)
