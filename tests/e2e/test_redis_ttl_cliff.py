"""End to end on a real Redis: 10,000 keys written with one TTL are a `ttl_cliff` forecast, found
through `RedisDirectSource` and `engine.scan`; the same keys with spread TTLs are not, and neither
are they once re-spread as the finding itself recommends.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

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
