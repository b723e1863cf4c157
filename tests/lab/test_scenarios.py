"""herdwatch lab compare SCENARIO for the scenarios beyond stampede, on real servers (short runs).

Each compare runs the naive client, then herdcache with the settings scan recommended for the
naive run's findings: the naive run must show the scenario's signature, the herdcache run none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.servers import PostgresServer, Server, start_postgres

pytestmark = pytest.mark.slow


def _compare(scenario: str, redis_url: str, dsn: str, scale: float) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "lab", "compare", scenario, "--redis", redis_url,
         "--postgres", dsn, "--format", "json", "--scale", str(scale)],
        capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert done.stdout, done.stderr
    (sc,) = json.loads(done.stdout)["scenarios"]
    return done.returncode, sc


@pytest.fixture
def small_postgres() -> Iterator[PostgresServer]:
    """A Postgres of its own for a scenario that fills it (the session's is shared)."""
    with start_postgres(max_connections=30) as server:
        yield server


@pytest.mark.timeout(180)
def test_compare_pool(redis_server: Server, small_postgres: PostgresServer) -> None:
    code, sc = _compare("pool", redis_server.url, small_postgres.dsn, 0.3)
    naive, herd = sc["runs"]["naive"], sc["runs"]["herdcache"]
    assert code == 0, (sc["expectations"], naive["findings"], herd["findings"])
    pool = [f for f in naive["findings"] if f["signature"] == "pool_exhaustion"]
    assert pool and "rejected" in pool[0]["summary"]
    assert herd["findings"] == [] and herd["errors"] == 0
    assert herd["settings"]["max_concurrent_loads"] >= 2  # what scan recommended for the pool
    assert naive["peak_pg_connections"] > 2 * herd["peak_pg_connections"]
