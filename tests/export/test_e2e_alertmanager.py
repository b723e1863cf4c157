"""End to end for the exported rules: `herdwatch rules export --format prometheus` loaded into a
real Prometheus that scrapes real exporters during a driven cache stampede, alerting to a real
Alertmanager, which must receive HerdwatchCacheStampede for the Redis that herded.

The stack: Redis + redis_exporter, PostgreSQL 15, and the load driver of
fixtures/capture/stampede_load.py as the app (open-loop cache-aside readers at a flat rate whose
hot keys share one expiry; a miss runs a real aggregate on Postgres), all scraped every second;
the rules are exported for that interval (`--interval 1s`), evaluated every second.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.servers import (
    Server,
    _spawn,
    free_port,
    start_alertmanager,
    start_postgres,
    start_redis,
    start_redis_exporter,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "fixtures" / "capture" / "stampede_load.py"
RATE = 300.0  # requests per second, flat
#: hot keys sharing one expiry: at 150 req/s each is read every few seconds, so the misses
#: last several scrapes (rate windows are four of them)
HOT_KEYS = 800
#: a load is a sequential scan of this many rows; the driver's pool lets this many run at once:
#: the stampede's loads contend for the CPU, so the database p99 rises far above its noise on
#: a loaded machine (the driver times the query itself, not the wait for a connection)
ROWS = 150_000
POOL = 24
BASELINE = 20.0  # seconds of steady traffic scraped before the expiry
DEADLINE = 40.0  # seconds after the expiry for the alert to reach Alertmanager


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _exported_rules(path: Path) -> None:
    """The rules as a user exports them, for a 1 s scrape and evaluation interval."""
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "rules", "export", "--format", "prometheus",
         "--interval", "1s"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path.write_text(done.stdout)


def _prometheus(workdir: Path, rules: Path, targets: dict[str, str], alertmanager: str) -> Server:
    """Prometheus scraping `targets` (job -> host:port) and evaluating `rules` every second,
    sending its alerts to `alertmanager` (host:port)."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    base = f"http://127.0.0.1:{port}"
    cmd = [
        "prometheus",
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return _spawn("prometheus", cmd, port, base, f"{base}/-/ready", workdir, False)


@contextlib.contextmanager
def _driver(args: list[str], log: Path) -> Iterator[float]:
    """stampede_load.py running; yields the time it said it was ready."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), *args], stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"driver exited: {log.read_text()[-2000:]}"
        yield float(json.loads(line)["ready"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _stampede_alerts(alertmanager: str) -> list[dict[str, Any]]:
    try:
        alerts = _get_json(f"{alertmanager}/api/v2/alerts")
    except OSError:
        return []
    return [a for a in alerts if a["labels"].get("alertname") == "HerdwatchCacheStampede"]


#: the recording rules the cache_stampede alert reads, shown when it did not fire
SHOWN = [
    "herdwatch:cache_miss_ratio",
    "herdwatch:cache_miss_ratio:median300s",
    "herdwatch:cache_miss_ratio:sigma300s",
    "herdwatch:cache_hits:rate",
    "herdwatch:cache_requests:rate",
    "herdwatch:cache_requests:rate:median300s",
    "herdwatch:requests:rate",
    "herdwatch:db_latency:p99",
    "herdwatch:db_latency:p99:median300s",
]


def _around(prometheus: str, expire_at: float) -> str:
    """The recorded signals from 5 s before the expiry on, one line each."""
    lines = []
    for name in SHOWN:
        q = urllib.parse.urlencode(
            {"query": name, "start": expire_at - 5, "end": time.time(), "step": 1}
        )
        data = _get_json(f"{prometheus}/api/v1/query_range?{q}")["data"]["result"]
        for r in data:
            pts = " ".join(f"{float(t) - expire_at:+.0f}:{float(v):.3g}" for t, v in r["values"])
            lines.append(f"{name}: {pts}")
    return "\n".join(lines)


def _rfc3339(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_alertmanager_receives_the_exported_cache_stampede_alert(tmp_path: Path) -> None:
    rules = tmp_path / "herdwatch.rules.yml"
    _exported_rules(rules)
    app_port = free_port()
    with contextlib.ExitStack() as es:
        redis = es.enter_context(start_redis())
        # one backend per query (no parallel workers): the loads queue on the driver's pool
        pg = es.enter_context(
            start_postgres(max_connections=50, settings={"max_parallel_workers_per_gather": 0})
        )
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE items AS SELECT g AS id, g %% 500 AS grp, random() AS v "
                "FROM generate_series(1, %s) g",
                (ROWS,),
            )
            conn.execute("ANALYZE items")
        rex = es.enter_context(start_redis_exporter(redis.url))
        am = es.enter_context(start_alertmanager())
        expire_at = time.time() + BASELINE + 3
        ready = es.enter_context(
            _driver(
                ["--redis", redis.url, "--dsn", pg.dsn, "--port", str(app_port),
                 "--rate", str(RATE), "--hot-keys", str(HOT_KEYS), "--pool", str(POOL),
                 "--expire-at", f"{expire_at:.3f}",
                 "--duration", f"{BASELINE + DEADLINE + 10:.0f}"],
                tmp_path / "driver.log",
            )
        )  # fmt: skip
        assert ready < expire_at - BASELINE / 2, "the driver took too long to start"
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        prom = es.enter_context(
            _prometheus(
                workdir,
                rules,
                {"redis": rex.url.split("//")[1].split("/")[0], "app": f"127.0.0.1:{app_port}"},
                am.url.split("//")[1],
            )
        )
        deadline = expire_at + DEADLINE
        while not (got := _stampede_alerts(am.url)) and time.time() < deadline:
            time.sleep(0.5)
        if not got:
            fired = _get_json(f"{prom.url}/api/v1/alerts")["data"]["alerts"]
            pytest.fail(
                f"no HerdwatchCacheStampede in Alertmanager; Prometheus alerts: {fired}\n"
                + _around(prom.url, expire_at)
            )
        alert = got[0]
        assert alert["labels"]["signature"] == "cache_stampede"
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["instance"] == rex.url.split("//")[1].split("/")[0]
        assert "recommendations" in alert["annotations"]
        # it fired for the stampede, not on the steady traffic before it
        assert _rfc3339(alert["startsAt"]) >= expire_at - 1.0, (alert, expire_at)
        others = {a["labels"]["alertname"] for a in _get_json(f"{am.url}/api/v2/alerts")}
        assert others == {"HerdwatchCacheStampede"}, others
