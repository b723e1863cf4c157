"""Sources stopped and restarted under a running `herdwatch daemon` (real servers, a child
process): no crash, the source unhealthy then healthy in /metrics, and a herd driven after the
restart is found and notified."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.alert.support import http_receiver
from tests.daemon.support import metrics, start_daemon, stop, wait_for
from tests.support.servers import (
    _as_root_user,
    free_port,
    pg_bindir,
    start_postgres,
    start_prometheus,
    start_redis,
    start_redis_exporter,
)

pytestmark = pytest.mark.timeout(120)


def healthy(port: int, source: str) -> float | None:
    """herdwatch_source_healthy of the source whose name starts with `source`, if exported."""
    m = re.search(
        rf'^herdwatch_source_healthy{{source="{source}[^"]*"}} (\S+)$', metrics(port), re.M
    )
    return float(m.group(1)) if m else None


def daemon_cfg(tmp_path: Path, sources: str, alerts: str = "") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"sources:\n{sources}daemon:\n  interval: 0.5s\n" + alerts)
    return cfg


def test_redis_stopped_and_restarted(tmp_path: Path) -> None:
    redis = start_redis()
    port = free_port()
    cfg = daemon_cfg(tmp_path, f"  redis: {{url: '{redis.url}'}}\n")
    log = tmp_path / "d.log"
    p = start_daemon(
        cfg, "--listen", f"127.0.0.1:{port}", "--outbox", str(tmp_path / "o.db"), log=log
    )
    try:
        wait_for(lambda: healthy(port, "redis") == 1, 30, "redis healthy")
        redis.stop()
        wait_for(lambda: healthy(port, "redis") == 0, 20, "redis unhealthy")
        redis = start_redis(port=redis.port)
        # the retry backoff (decorrelated jitter from 1 s) brings it back within seconds
        wait_for(lambda: healthy(port, "redis") == 1, 30, "redis healthy again")
        assert p.poll() is None, log.read_text()[-2000:]
        assert re.search(r'herdwatch_poll_errors_total{source="redis[^"]*"} [1-9]', metrics(port))
        assert stop(p) == 0
    finally:
        stop(p, signal.SIGKILL)
        redis.stop()


def pg_ctl(server: object, *args: str) -> None:
    data_dir = server.data_dir  # type: ignore[attr-defined]
    log_path = server.log_path  # type: ignore[attr-defined]
    cmd = [str(pg_bindir() / "pg_ctl"), "-D", str(data_dir), "-l", str(log_path), "-w", *args]
    subprocess.run(_as_root_user(cmd, "postgres"), check=True, capture_output=True, timeout=60)


def test_postgres_restarted_then_a_herd_is_found_and_notified(tmp_path: Path) -> None:
    pg = start_postgres(max_connections=20)
    bench = ["pgbench", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    subprocess.run([*bench, "-i", "-q", "postgres"], check=True, capture_output=True, timeout=60)
    port = free_port()
    with http_receiver() as hook:
        cfg = daemon_cfg(
            tmp_path,
            f"  postgres: {{dsn: '{pg.dsn}', sample_interval: 0.1}}\n",
            f"alerts:\n  webhook: {{url: '{hook.url}'}}\n",
        )
        log = tmp_path / "d.log"
        p = start_daemon(
            cfg, "--listen", f"127.0.0.1:{port}", "--outbox", str(tmp_path / "o.db"), log=log
        )
        try:
            wait_for(lambda: healthy(port, "postgres") == 1, 30, "postgres healthy")
            pg_ctl(pg, "stop", "-m", "fast")
            wait_for(lambda: healthy(port, "postgres") == 0, 20, "postgres unhealthy")
            pg_ctl(pg, "start")
            wait_for(lambda: healthy(port, "postgres") == 1, 30, "postgres healthy again")
            # pool_exhaustion's baseline ends 10 s before the pool is full: a quiet stretch first
            time.sleep(11)
            herd = subprocess.run(
                [*bench, "-C", "-c", "40", "-j", "2", "-T", "5", "postgres"],
                capture_output=True,
                timeout=60,
            )
            assert herd.returncode in (0, 2), herd.stderr[-500:]  # 2: clients refused, the herd

            def paged() -> bool:
                return any(
                    a.get("signature") == "pool_exhaustion"
                    for _, body in hook.requests
                    for a in body.get("alerts", [])
                )

            wait_for(paged, 30, "the pool_exhaustion notification")
            assert p.poll() is None, log.read_text()[-2000:]
            assert stop(p) == 0
        finally:
            stop(p, signal.SIGKILL)
            # the restarted postmaster has a new pid: stop it by its data dir, then clean up
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_ctl(pg, "stop", "-m", "immediate")
            pg.stop()


def test_prometheus_stopped_and_restarted(tmp_path: Path) -> None:
    redis = start_redis()
    exporter = start_redis_exporter(redis.url)
    prom = start_prometheus({"redis": exporter.url}, scrape_interval="1s")
    port = free_port()
    cfg = daemon_cfg(tmp_path, f"  prometheus: {{url: '{prom.url}'}}\n")
    log = tmp_path / "d.log"
    p = start_daemon(
        cfg, "--listen", f"127.0.0.1:{port}", "--outbox", str(tmp_path / "o.db"), log=log
    )
    try:
        wait_for(lambda: healthy(port, "prometheus") == 1, 30, "prometheus healthy")
        prom.stop()
        wait_for(lambda: healthy(port, "prometheus") == 0, 20, "prometheus unhealthy")
        prom = start_prometheus({"redis": exporter.url}, scrape_interval="1s", port=prom.port)
        wait_for(lambda: healthy(port, "prometheus") == 1, 30, "prometheus healthy again")
        assert p.poll() is None, log.read_text()[-2000:]
        assert stop(p) == 0
    finally:
        stop(p, signal.SIGKILL)
        for server in (prom, exporter, redis):
            server.stop()
