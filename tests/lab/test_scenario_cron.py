"""herdwatch lab compare cron on real servers (a short run): every replica's scheduler fires
refresh_report() at the same wall-clock boundary, 6 boundaries of a 12 s period at --scale 0.2.

A file of its own: a compare takes about 2.5 min, and pytest-xdist hands out whole files, so it
runs beside tests/lab/test_scenarios.py rather than after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.test_scenarios import _compare
from tests.support.servers import PostgresServer, Server, start_postgres

pytestmark = pytest.mark.slow

SCALE = 0.2
PERIOD = 60 * SCALE


@pytest.fixture(scope="module")
def cron_postgres() -> Iterator[PostgresServer]:
    """A Postgres of the test's own (the session's 17 slots are shared and too few for three
    pools of 6 under pool_exhaustion's 90 %)."""
    with start_postgres(max_connections=60) as server:
        yield server


@pytest.mark.timeout(330)
def test_compare_cron(redis_server: Server, cron_postgres: PostgresServer) -> None:
    """The naive jobs recompute the report together at every boundary: cron_herd names the
    period, on the clock's boundary; herdcache (the splay and jitter scan recommended, one load
    per expiry) shows nothing, with no duplicate load."""
    naive, herd = _compare("cron", redis_server.url, cron_postgres.dsn, SCALE, timeout=300)
    (cron,) = [f for f in naive["findings"] if f["signature"] == "cron_herd"]
    assert f"every {PERIOD:g}s, on the clock's boundary" in cron["summary"], cron["summary"]
    # the recurrence needs 4 boundaries at least (p < 0.001 over the periods tried): found at
    # the tick whose poll (the second after it) saw the 4th, at the latest after the 6th
    assert 3 * PERIOD - 1 <= cron["detected_after_s"] < 6 * PERIOD
    assert naive["loads_per_expiry"] > 5 and naive["duplicate_loads"] > 0
    assert herd["findings"] == [] and herd["errors"] == 0 and herd["duplicate_loads"] == 0
    assert herd["settings"]["ttl_jitter"] > 0  # the splay scan recommended for the finding
