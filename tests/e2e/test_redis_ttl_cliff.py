"""End to end on a real Redis: 10,000 keys written with one TTL are a `ttl_cliff` forecast, found
through `RedisDirectSource` and `engine.scan`; the same keys with spread TTLs are not, and neither
are they once re-spread as the finding itself recommends. Sliding TTLs (re-armed by readers) are
no cliff through `herdwatch scan --redis`; the same keys written together are.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from herdwatch import engine
from herdwatch.config import RedisConfig
from herdwatch.model import Finding, ScanResult
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.redis_direct import RedisDirectSource
from tests.support.servers import Server, start_redis

KEYS = 10_000
TTL = 600


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with start_redis() as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server.url)
    c.flushall()
    yield c
    c.close()


def _write(c: redis.Redis, ttl_of: dict[str, int]) -> None:
    pipe = c.pipeline(transaction=False)
    for key, ttl in ttl_of.items():
        pipe.set(key, b"payload", ex=ttl)
    pipe.execute()


def _keys() -> list[str]:
    # two kinds of key, written in one warm-up
    return [f"user:{i}:profile" if i % 4 else f"product:{i:08x}ab" for i in range(KEYS)]


async def _scan(server: Server) -> ScanResult:
    source = RedisDirectSource(RedisConfig(server.url), interval=0.5)
    raw = await source.collect(CollectWindow(duration=1.0))
    assert [s.name for s in raw.sources] == [source.name] and raw.sources[0].ok
    return engine.scan(raw)


def _cliffs(result: ScanResult) -> list[Finding]:
    return [f for f in result.findings if f.signature == "ttl_cliff"]


async def test_keys_with_one_ttl_are_a_cliff(server: Server, client: redis.Redis) -> None:
    keys = _keys()
    before = time.time()
    _write(client, dict.fromkeys(keys, TTL))
    after = time.time()
    result = await _scan(server)
    (f,) = _cliffs(result)
    assert result.findings == [f]  # nothing else in a quiet Redis
    ev = f.evidence
    # the forecast window is when the warm-up's keys expire: its write time + the TTL
    assert before + TTL - 1.0 <= f.onset <= f.end <= after + TTL + 1.0
    assert f.end - f.onset <= after - before + 0.5
    assert f.onset > time.time() + TTL - 30  # a forecast, well before it happens
    assert ev["keys_total"] == KEYS and ev["sampled"] == 2000 and ev["with_ttl"] == 2000
    assert ev["share"] >= 0.95 and f.severity == "critical"
    assert abs(ev["keys_expiring_estimate"] - KEYS) <= 0.05 * KEYS
    counts = {p["pattern"]: p["count"] for p in ev["patterns"]}
    assert set(counts) == {"user:*:profile", "product:*"}
    assert counts["user:*:profile"] > counts["product:*"] > 0  # 3 : 1 in the keyspace
    assert ev["p_value"] < 1e-6
    assert "cmdstat_keys" not in client.info("commandstats")

    # the finding's own advice, applied to the live keys, removes the cliff
    m = re.search(r"RANDOM \* (\d+) \* 1000", f.recommendations[0].config)
    assert m, f.recommendations[0].config
    spread_ms = int(m.group(1)) * 1000
    rng = random.Random(1)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pexpire(key, TTL * 1000 + rng.randrange(spread_ms))
    pipe.execute()
    assert _cliffs(await _scan(server)) == []


@pytest.mark.parametrize("spread", ["steady", "jitter"])
async def test_the_same_keys_with_spread_ttls_are_not(
    server: Server, client: redis.Redis, spread: str
) -> None:
    rng = random.Random(spread)
    if spread == "steady":  # what a cache written at a steady rate holds: uniform on (0, TTL]
        ttls = {k: rng.randint(1, TTL) for k in _keys()}
    else:  # one warm-up with ttl_jitter of 10 % of the TTL
        ttls = {k: TTL + rng.randrange(TTL // 10) for k in _keys()}
    _write(client, ttls)
    result = await _scan(server)
    assert _cliffs(result) == []
    assert result.findings == []
    assert client.dbsize() >= 0.99 * KEYS  # a few 1-2 s TTLs may be gone already


# ----------------------------------------------- sliding TTLs, through `herdwatch scan --redis`
# Issue 8, "TTLs": keys re-armed on every access (GETEX ... EX) are no cliff; the same keys
# written together are. The scan samples the TTLs at the start and at the end of its
# --duration, and ttl_cliff tells the two apart by whether the bunch moved with the clock.

SESSIONS = 400
SESSION_TTL = 60


def _steady_and_sessions(c: redis.Redis) -> None:
    """Keys written at a steady rate over the TTL (what every cache holds), and sessions
    written together."""
    ttls = {f"steady:{i}": 1 + (SESSION_TTL - 1) * i // SESSIONS for i in range(SESSIONS)}
    _write(c, ttls | {f"session:{i}": SESSION_TTL for i in range(SESSIONS)})


class _Readers(threading.Thread):
    """Readers re-arming the TTL of the session they read (GETEX EX), each about twice a second."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.reads = 0

    def run(self) -> None:
        c = redis.Redis.from_url(self.url)
        rng = random.Random(7)
        while not self.stop.wait(0.05):
            with c.pipeline(transaction=False) as pipe:
                for _ in range(SESSIONS // 10):  # 20 batches/s: each key every ~0.5 s
                    pipe.getex(f"session:{rng.randrange(SESSIONS)}", ex=SESSION_TTL)
                pipe.execute()
            self.reads += SESSIONS // 10
        c.close()


def _scan_cli(url: str) -> dict[str, Any]:
    args = ["scan", "--redis", url, "--duration", "4s", "--format", "json"]
    proc = subprocess.run(
        [sys.executable, "-m", "herdwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _cli_cliffs(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["signature"] == "ttl_cliff"]


def test_sliding_ttls_are_no_cliff(server: Server, client: redis.Redis) -> None:
    _steady_and_sessions(client)
    readers = _Readers(server.url)
    readers.start()
    try:
        report = _scan_cli(server.url)
    finally:
        readers.stop.set()
        readers.join(5)
    # the keys were read (and re-armed) all along: at most 800 reads/s over the scan's 4 s and
    # its start-up (about 4.8 s in all: 3,840 reads); each key read five times at the least
    assert readers.reads > 5 * SESSIONS
    assert _cli_cliffs(report) == []


def test_sessions_written_together_are_a_cliff(server: Server, client: redis.Redis) -> None:
    _steady_and_sessions(client)
    (f,) = _cli_cliffs(_scan_cli(server.url))
    ev = f["evidence"]
    assert ev["patterns"][0]["pattern"] == "session:*"
    assert ev["count"] >= 0.9 * SESSIONS
    # compared with the scan's first sample: the same keys expired at the same time then
    seen = ev["earlier_sample"]
    assert seen is not None and seen["seconds_before"] >= 4.0
    assert seen["share_same_expiry"] >= 0.4 and seen["share_same_ttls"] < 0.05
