"""tests.support.servers starts real servers on free ports, they answer, and stop() ends exactly
their pid."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.servers import (
    PostgresServer,
    Server,
    ServerStartError,
    _version_key,
    free_port,
    pg_bindir,
    start_alertmanager,
    start_node_exporter,
    start_postgres,
    start_postgres_exporter,
    start_prometheus,
    start_redis,
    start_redis_exporter,
)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_redis_server_answers_ping(redis_server: Server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()


def test_postgres_server_answers_select(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW max_connections").fetchone() == ("20",)
        assert conn.execute("SHOW log_line_prefix").fetchone() == ("%m [%p] %q%u@%d ",)
    assert "ready to accept connections" in postgres_server.log_path.read_text()


def test_redis_stop_ends_its_pid_and_frees_port() -> None:
    server = start_redis()
    assert server.alive() and _port_open(server.port)
    server.stop()
    assert not server.alive()
    assert not _port_open(server.port)
    assert not server.workdir.exists()
    server.stop()  # idempotent


def test_postgres_context_manager_stops_cluster() -> None:
    with start_postgres(max_connections=5) as pg:
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT current_setting('max_connections')").fetchone() == ("5",)
        pid = pg.pid
    assert not pg.alive()
    assert not _port_open(pg.port)
    assert pid > 0


def test_prometheus_scrapes_redis_exporter(redis_server: Server) -> None:
    with (
        start_redis_exporter(redis_server.url) as exporter,
        start_prometheus({"redis": exporter.url}, scrape_interval="1s") as prom,
    ):
        body = urllib.request.urlopen(exporter.url, timeout=5).read().decode()
        assert "redis_up 1" in body
        with urllib.request.urlopen(f"{prom.url}/api/v1/status/config", timeout=5) as resp:
            assert exporter.url.split("//")[1].split("/")[0] in resp.read().decode()


def test_taken_port_is_refused(redis_server: Server) -> None:
    # Else the readiness probe would be answered by the session Redis.
    with pytest.raises(ServerStartError, match="already in use"):
        start_redis(port=redis_server.port)


def test_redis_start_failure_shows_log_tail() -> None:
    with pytest.raises(ServerStartError, match=r"(?s)exited before it was ready.*maxmemory-policy"):
        start_redis(extra_args=["--maxmemory-policy", "bogus"])


def test_postgres_start_failure_shows_log_tail() -> None:
    with pytest.raises(ServerStartError, match=r"(?s)pg_ctl start failed.*shared_buffers"):
        start_postgres(settings={"shared_buffers": "lots"})


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_exporters_answer(postgres_server: PostgresServer) -> None:
    with (
        start_postgres_exporter(postgres_server.dsn) as pex,
        start_node_exporter() as nex,
    ):
        pg_body = urllib.request.urlopen(pex.url, timeout=5).read().decode()
        assert "pg_up 1" in pg_body
        assert re.search(r"^pg_settings_max_connections\{.*\} 20$", pg_body, re.M)
        node_body = urllib.request.urlopen(nex.url, timeout=5).read().decode()
        assert "node_context_switches_total" in node_body
    assert not pex.alive() and not nex.alive()


def test_alertmanager_accepts_and_returns_alerts() -> None:
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "cache_stampede", "service": "lab"},
        "annotations": {"summary": "test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }
    with start_alertmanager() as am:
        req = urllib.request.Request(
            f"{am.url}/api/v2/alerts",
            data=json.dumps([alert]).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5) as resp:
            names = [a["labels"]["alertname"] for a in json.loads(resp.read())]
    assert names == ["cache_stampede"]


def test_pg_bindir_is_the_installed_version() -> None:
    bindir = pg_bindir()
    assert all((bindir / name).is_file() for name in ("postgres", "initdb", "pg_ctl"))
    # /usr/lib/postgresql/<version>/bin sorts by version, not as text
    versions = [Path(f"/usr/lib/postgresql/{v}/bin") for v in ("9.6", "16", "15", "x")]
    assert max(versions, key=_version_key) == versions[1]
    assert min(versions, key=_version_key) == versions[3]
