"""Several real processes on one cold key: one load across the fleet, even when a leader dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from tests.cache.support import PgLoader

WORKER = Path(__file__).with_name("fleet_worker.py")
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(cfg)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid

    def expect(self, event: str) -> dict[str, Any]:
        """Block until this worker prints ``event`` (its stdout is the event channel)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg: dict[str, Any] = json.loads(line)
            if msg["event"] == event:
                return msg
        raise AssertionError(f"worker {self.pid} exited ({self.proc.wait()}) before {event!r}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def go(redis_url: str, ns: str, n: int) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush(f"{ns}:go", *["go"] * n)
    client.close()


def test_four_processes_250_callers_each_one_load(
    redis_url: str, pg_dsn: str, ns: str, pg_loader: PgLoader
) -> None:
    cfg = {"redis": redis_url, "dsn": pg_dsn, "ns": ns, "key": pg_loader.key,
           "callers": 250, "lease_ttl": 5.0, "poll": 0.2, "load_sleep": 0.1}  # fmt: skip
    workers = [Worker(cfg) for _ in range(4)]
    try:
        for w in workers:
            w.expect("ready")
        go(redis_url, ns, 4)
        done = [w.expect("done") for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [d["n_errors"] for d in done] == [0, 0, 0, 0]
    values = {v for d in done for v in d["values"]}
    assert len(values) == 1  # all 1,000 callers got the same value
    assert pg_loader.loads() == 1  # and Postgres saw exactly one load


def test_leader_killed_mid_load_one_new_leader_after_lease(
    redis_url: str, pg_dsn: str, ns: str, pg_loader: PgLoader
) -> None:
    lease = 1.0
    base = {"redis": redis_url, "dsn": pg_dsn, "ns": ns, "key": pg_loader.key,
            "callers": 50, "lease_ttl": lease, "poll": 0.1}  # fmt: skip
    leader = Worker({**base, "load_sleep": 30.0})
    waiters: list[Worker] = []
    try:
        leader.expect("ready")
        go(redis_url, ns, 1)
        leader.expect("loading")  # it holds the lease, its query is running
        waiters = [Worker({**base, "load_sleep": 0.2}) for _ in range(3)]
        for w in waiters:
            w.expect("ready")
        go(redis_url, ns, 3)
        for w in waiters:
            w.expect("started")
        # A live leader keeps its lease past lease_ttl (heartbeat): nobody takes over.
        time.sleep(2 * lease)
        assert pg_loader.loads() == 1
        killed_at = time.monotonic()
        leader.kill()
        done = [w.expect("done") for w in waiters]
        took = time.monotonic() - killed_at
    finally:
        for w in [leader, *waiters]:
            w.kill()
    assert [d["n_errors"] for d in done] == [0, 0, 0]
    values = {v for d in done for v in d["values"]}
    assert len(values) == 1
    new_leader = json.loads(values.pop())["loader"]
    assert new_leader in {w.pid for w in waiters}
    with redis.Redis.from_url(redis_url) as client:
        assert client.get(f"{ns}:l:{{{pg_loader.key}}}") is None
    assert pg_loader.loads() == 2  # the dead leader's and exactly one new leader's
    assert took < lease + 5.0
