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


def _compare(
    scenario: str, redis_url: str, dsn: str, scale: float, timeout: float = 170
) -> tuple[dict[str, Any], ...]:
    """The naive and the herdcache run of a `lab compare` whose expectations all held."""
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "lab", "compare", scenario, "--redis", redis_url,
         "--postgres", dsn, "--format", "json", "--scale", str(scale)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.stdout, done.stderr
    (sc,) = json.loads(done.stdout)["scenarios"]
    naive, herd = sc["runs"]["naive"], sc["runs"]["herdcache"]
    assert done.returncode == 0, (sc["expectations"], naive["findings"], herd["findings"])
    assert sc["signature"] in {f["signature"] for f in naive["findings"]}
    assert herd["findings"] == []
    return naive, herd


@pytest.fixture(scope="module")
def own_postgres(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """A Postgres of the test's own with `request.param` slots (the session's has 17 and is
    shared): a small one for the pool scenario to fill, one with room for the lock-contention
    pools (3 x 15) and the others."""
    with start_postgres(max_connections=request.param) as server:
        yield server


@pytest.mark.timeout(180)
@pytest.mark.parametrize("own_postgres", [30], indirect=True)
def test_compare_pool(redis_server: Server, own_postgres: PostgresServer) -> None:
    naive, herd = _compare("pool", redis_server.url, own_postgres.dsn, 0.2)
    (pool,) = [f for f in naive["findings"] if f["signature"] == "pool_exhaustion"]
    # seen in pg_stat_activity, or (once the sampler itself is refused) by the rejections
    assert "rejected" in pool["summary"] or "connections in use" in pool["summary"]
    assert 0 < pool["detected_after_s"] < 10 and herd["errors"] == 0
    assert herd["settings"]["max_concurrent_loads"] >= 2  # what scan recommended for the pool
    assert naive["peak_pg_connections"] > 2 * herd["peak_pg_connections"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("own_postgres", [60], indirect=True)
def test_compare_lock_contention(redis_server: Server, own_postgres: PostgresServer) -> None:
    """The naive refreshers time out on the row locks and herdwatch sees the cluster early;
    herdcache's lease leaves one refresher per row: no error, no duplicate load, no finding.
    The lab sets lock_timeout from the summary's measured run time, so the queue times out on a
    fast machine as on a slow one (a fixed 500 ms gave 0-7 timeouts on a quiet machine)."""
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "lab", "compare", "lock-contention", "--redis",
         redis_server.url, "--postgres", own_postgres.dsn, "--format", "json", "--scale", "0.2"],
        capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1) and done.stdout, done.stderr
    (sc,) = json.loads(done.stdout)["scenarios"]
    naive, herd = sc["runs"]["naive"], sc["runs"]["herdcache"]
    assert naive["errors"] >= 5 and "lock timeout" in done.stderr
    assert herd["findings"] == [] and herd["errors"] == 0 and herd["duplicate_loads"] == 0
    (cluster,) = [f for f in naive["findings"] if f["signature"] == "lock_timeout_cluster"]
    assert "lock_timeout" in cluster["summary"] and 0 < cluster["detected_after_s"] < 10


@pytest.mark.timeout(180)
def test_compare_retry_storm(redis_server: Server, postgres_server: PostgresServer) -> None:
    naive, herd = _compare("retry-storm", redis_server.url, postgres_server.dsn, 0.2)
    (storm,) = naive["findings"]
    assert storm["signature"] == "retry_storm" and storm["subject"] == {"peer": "upstream"}
    assert 0 <= storm["onset_after_driver_s"] < 3 and storm["detected_after_s"] < 5
    assert herd["settings"]["breaker_failures"] > 0 and herd["settings"]["retries"] > 0
    assert herd["duplicate_loads"] * 100 <= naive["duplicate_loads"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("own_postgres", [60], indirect=True)
def test_compare_ttl_cliff(redis_server: Server, own_postgres: PostgresServer) -> None:
    naive, herd = _compare("ttl-cliff", redis_server.url, own_postgres.dsn, 0.2)
    cliff = next(f for f in naive["findings"] if f["signature"] == "ttl_cliff")
    # a forecast: seen from the first key samples after the warm-up, before the keys expire
    assert cliff["detected_after_s"] < cliff["onset_after_driver_s"]
    assert "lab:hot:*" in cliff["summary"]
    assert herd["settings"]["ttl_jitter"] > 0 and herd["settings"]["jitter_mode"] == "hash"
