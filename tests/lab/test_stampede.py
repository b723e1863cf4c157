"""herdwatch lab compare stampede on the suite's real Redis and Postgres (short runs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import PostgresServer, Server, start_postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def roomy_postgres() -> Iterator[PostgresServer]:
    """A Postgres with slots to spare: the lab's pools (3 x 6) must not fill it, or the naive
    run shows a real pool_exhaustion beside the stampede (the suite's shared server has 17)."""
    with start_postgres(max_connections=60) as server:
        yield server


def test_lab_refuses_a_server_its_pools_would_fill(
    redis_server: Server, postgres_server: PostgresServer
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "lab", "run", "stampede", "--redis",
         redis_server.url, "--postgres", postgres_server.dsn],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "needs 20 free connection slots" in line and "max_connections" in line


@pytest.mark.timeout(300)
def test_compare_stampede(redis_server: Server, roomy_postgres: PostgresServer,
                          tmp_path: Path) -> None:  # fmt: skip
    page = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "lab", "compare", "stampede", "--redis",
         redis_server.url, "--postgres", roomy_postgres.dsn, "--format", "json",
         "--scale", "0.8", "--html", str(page)],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    doc = json.loads(done.stdout)
    (sc,) = doc["scenarios"]
    naive, herd = sc["runs"]["naive"], sc["runs"]["herdcache"]
    assert done.returncode == 0, (sc["expectations"], naive["findings"], herd["findings"])
    assert [f["signature"] for f in naive["findings"]] == ["cache_stampede"]
    assert herd["findings"] == []
    assert naive["duplicate_loads"] > 0 and herd["duplicate_loads"] == 0
    assert 0 < naive["findings"][0]["detected_after_s"] < 10
    assert herd["settings"]["stale_while_revalidate"] > 0  # what scan recommended
    text = page.read_text()
    assert text.count("<svg") >= 4 and "cache_stampede" in text and "http" not in text.lower()
    dom, log = _render_in_chromium(page, tmp_path / "profile")
    assert dom.count('<svg class="chart"') == text.count('<svg class="chart"') >= 4
    assert dom.count("<polyline") >= 8 and 'class="finding"' in dom  # both runs, the finding
    assert "CONSOLE" not in log, log  # no console message at all: the page has no script


def _render_in_chromium(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM headless Chromium (Debian's package) built from `page`, and its log."""
    exe = shutil.which("chromium")
    assert exe is not None, "chromium is not installed: make system-deps"
    done = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr
