"""Two live daemons sharing a Redis lease, both watching one real Postgres: a herd pages once
(the leader); after the leader is SIGKILLed the other takes over within one lease TTL and pages
the next herd."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alert.support import http_receiver
from tests.daemon.support import metrics, start_daemon, stop, wait_for
from tests.support.servers import PostgresServer, Server, free_port, start_postgres

pytestmark = pytest.mark.timeout(150)

TTL = 2.0
#: pool_exhaustion's baseline ends 10 s before the pool is full: a quiet stretch before a herd
QUIET = 11.0


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    with start_postgres(max_connections=20) as server:
        subprocess.run(
            ["pgbench", "-i", "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
             "postgres"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield server


def herd(pg: PostgresServer) -> None:
    """40 clients reconnecting for 3 s against max_connections 20 (pgbench exits 2: refused)."""
    r = subprocess.run(
        ["pgbench", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
         "-C", "-c", "40", "-j", "2", "-T", "3", "postgres"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert r.returncode in (0, 2), r.stderr[-500:]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def leader(port: int) -> float | None:
    m = re.search(r"^herdwatch_leader (\S+)$", metrics(port), re.M)
    return float(m.group(1)) if m else None


def test_one_page_per_herd_and_a_takeover_within_one_ttl(
    tmp_path: Path, pg: PostgresServer, redis_server: Server
) -> None:
    with http_receiver() as hook:
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(
            f"sources:\n  postgres: {{dsn: '{pg.dsn}', sample_interval: 0.1}}\n"
            f"alerts:\n  webhook: {{url: '{hook.url}'}}\n"
            "daemon:\n  interval: 0.5s\n"
            f"  leader: {{redis: '{redis_server.url}', key: 'hw:e2e:{time.time_ns()}',"
            f" ttl: {TTL}s}}\n"
        )
        ports = [free_port(), free_port()]
        procs = [
            start_daemon(
                cfg,
                "--listen",
                f"127.0.0.1:{port}",
                "--outbox",
                str(tmp_path / f"o{i}.db"),
                log=tmp_path / f"d{i}.log",
            )
            for i, port in enumerate(ports)
        ]

        def pages() -> list[str]:
            return [b["key"] for _, b in hook.requests if b.get("status") == "firing"]

        try:
            wait_for(lambda: sorted(leader(p) or 0 for p in ports) == [0, 1], 30, "one leader")
            first = next(i for i, p in enumerate(ports) if leader(p) == 1)
            time.sleep(QUIET)
            herd(pg)
            wait_for(pages, 30, "the first herd's page")
            # the follower keeps its copy two TTLs, then takes it as the leader's: still one;
            # and it holds it without a busy loop
            follower = procs[1 - first].pid
            cpu, wall = cpu_seconds(follower), time.monotonic()
            time.sleep(2 * TTL + 2)
            cpu, wall = cpu_seconds(follower) - cpu, time.monotonic() - wall
            assert len(pages()) == 1, hook.requests
            assert cpu < 0.3 * wall, (cpu, wall)

            assert stop(procs[first], signal.SIGKILL) == -signal.SIGKILL
            other = ports[1 - first]
            killed = time.monotonic()
            wait_for(lambda: leader(other) == 1, 2 * TTL, "the takeover")
            assert time.monotonic() - killed <= TTL + 1.0  # one TTL, plus a renewal's step

            time.sleep(QUIET)
            herd(pg)
            wait_for(lambda: len(pages()) >= 2, 30, "the second herd's page")
            keys = pages()
            assert len(keys) == 2 and keys[0] != keys[1], keys
            assert procs[1 - first].poll() is None
        finally:
            for p in procs:
                stop(p, signal.SIGKILL)
