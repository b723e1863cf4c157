"""RedisDirectSource against a real redis-server: INFO named as redis_exporter names it (values as
`redis-cli INFO` reports them), a bounded SCAN + PTTL profile that never runs KEYS, one-line
errors without passwords; and the key pattern normalizer."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from herdwatch.config import RedisConfig
from herdwatch.errors import ConfigError, SourceError
from herdwatch.model import RawData, Series
from herdwatch.signals import derive
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.redis_direct import RedisDirectSource, key_pattern
from tests.support.servers import Server, free_port, start_redis

PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with start_redis() as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server.url)
    c.flushall()
    c.config_resetstat()
    yield c
    c.close()


def _fill(c: redis.Redis, n: int, *, ttl: int | None, fmt: str = "user:{}:profile") -> None:
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        pipe.set(fmt.format(i), b"v", ex=ttl)
    pipe.execute()


def _series(raw: RawData, name: str, db: str | None = None) -> Series:
    found = [s for s in raw.series if s.name == name and (db is None or s.label("db") == db)]
    assert len(found) == 1, [s.name for s in raw.series]
    return found[0]


def _redis_cli_info(port: int) -> dict[str, str]:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    info: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not key.startswith("#"):
            info[key] = value
    return info


# ------------------------------------------------------------------ key patterns (pure)


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ("user:123:profile", "user:*:profile"),
        ("user:9:profile", "user:*:profile"),
        ("session:550e8400-e29b-41d4-a716-446655440000", "session:*"),
        ("session:550E8400E29B41D4A716446655440000:data", "session:*:data"),
        ("obj:5f1d7a3c9b2e4d6f8a0b1c2d", "obj:*"),
        ("sha:da39a3ee5e6b4b0d3255bfef95601890afd80709", "sha:*"),
        ("cache:v2:product:sku-88231", "cache:v2:product:sku-*"),
        ("img_42.png", "img_*.png"),
        ("tok:aB3dE5fG7hJ9kL1mN", "tok:*"),
        ("rate/2024-11-26/10.0.0.1", "rate/*-*-*/*.*.*.*"),
        ("{user1000}:cart", "{user1000}:cart"),
        ("{1000}:cart", "{*}:cart"),
        ("config", "config"),
        ("feature-flags:beta", "feature-flags:beta"),
        ("deadbeef:x", "deadbeef:x"),  # hex letters only: a word, not an id
        ("", ""),
    ],
)
def test_key_pattern(key: str, pattern: str) -> None:
    assert key_pattern(key) == pattern


def test_key_pattern_is_bounded() -> None:
    long = "a" * 5000
    assert len(key_pattern(long)) == 200
    assert key_pattern(long).endswith("*")


# ------------------------------------------------------------------ INFO against a real Redis


async def test_info_maps_to_exporter_names_with_redis_cli_values(
    server: Server, client: redis.Redis
) -> None:
    _fill(client, 300, ttl=600)
    _fill(client, 200, ttl=None, fmt="plain:{}")
    client.select(1)  # a second database shows up as its own db label
    client.set("other", b"v")
    client.select(0)
    for i in range(40):
        client.get(f"user:{i}:profile")
    for i in range(7):
        client.get(f"missing:{i}")
    # avg_ttl is an estimate the expire cycle fills in a moment after keys get a TTL
    for _ in range(150):
        if client.info("keyspace")["db0"]["avg_ttl"] > 0:
            break
        await asyncio.sleep(0.02)
    source = RedisDirectSource(RedisConfig(server.url), sample_keys=50)
    raw = await source.collect(CollectWindow(duration=0.0))
    info = _redis_cli_info(server.port)

    inst = ("instance", f"127.0.0.1:{server.port}")
    counters = {
        "redis_keyspace_hits_total": "keyspace_hits",
        "redis_keyspace_misses_total": "keyspace_misses",
        "redis_expired_keys_total": "expired_keys",
        "redis_evicted_keys_total": "evicted_keys",
        "redis_rejected_connections_total": "rejected_connections",
    }
    for name, field in counters.items():
        s = _series(raw, name)
        assert (s.type, s.family, s.labels) == ("counter", name.removesuffix("_total"), (inst,))
        assert len(s.values) == 1
        assert s.values[0] == float(info[field]), name
    # 40 GETs hit, and each of the 50 sampled keys' PTTL counts as a hit in Redis
    assert _series(raw, "redis_keyspace_hits_total").values[0] == 40 + 50
    assert _series(raw, "redis_keyspace_misses_total").values[0] == 7
    # INFO clients and INFO keyspace ran after our INFO stats; redis-cli's INFO reports them
    cmds = _series(raw, "redis_commands_processed_total")
    assert cmds.type == "counter"
    assert 0 < float(info["total_commands_processed"]) - cmds.values[0] <= 5
    assert _series(raw, "redis_blocked_clients").values[0] == float(info["blocked_clients"])
    connected = _series(raw, "redis_connected_clients")
    assert connected.type == "gauge"
    assert abs(connected.values[0] - float(info["connected_clients"])) <= 1

    for db in ("db0", "db1"):
        fields = dict(kv.split("=") for kv in info[db].split(","))
        keys = _series(raw, "redis_db_keys", db)
        assert keys.type == "gauge" and keys.labels == (("db", db), inst)
        assert keys.values[0] == float(fields["keys"])
        assert _series(raw, "redis_db_keys_expiring", db).values[0] == float(fields["expires"])
        avg = _series(raw, "redis_db_avg_ttl_seconds", db).values[0]
        assert abs(avg - float(fields["avg_ttl"]) / 1000) <= 2.0
    assert _series(raw, "redis_db_keys", "db0").values[0] == 500
    assert _series(raw, "redis_db_keys_expiring", "db0").values[0] == 300
    assert 590 <= _series(raw, "redis_db_avg_ttl_seconds", "db0").values[0] <= 600
    assert raw.sources[0].name == source.name == f"redis {server.url}"
    assert raw.sources[0].ok


async def test_samples_every_interval_for_the_duration(server: Server, client: redis.Redis) -> None:
    _fill(client, 100, ttl=600)
    source = RedisDirectSource(RedisConfig(server.url), interval=0.2, sample_keys=10)
    raw = await source.collect(CollectWindow(duration=1.0))
    hits = _series(raw, "redis_keyspace_hits_total")
    assert len(hits.timestamps) == 6  # 0, 0.2, ..., 1.0
    steps = np.diff(hits.timestamps)
    assert np.all(steps > 0.1) and np.all(steps < 0.4), steps
    assert all(len(s.timestamps) == 6 for s in raw.series)
    sigs = derive(raw)
    assert {"cache_hits", "cache_misses", "cache_requests", "miss_ratio"} <= set(sigs.signals)
    assert sigs.signals["cache_hits"].step == pytest.approx(0.2, abs=0.1)


async def test_empty_database_still_reports_its_db(server: Server, client: redis.Redis) -> None:
    raw = await RedisDirectSource(RedisConfig(server.url)).collect(CollectWindow())
    assert _series(raw, "redis_db_keys", "db0").values[0] == 0
    (sample,) = raw.key_expiry
    assert (sample.keys_total, sample.sampled, len(sample.ttls)) == (0, 0, 0)


# ------------------------------------------------------------------ key-expiry profile


async def test_profile_is_a_bounded_scan_with_pipelined_pttl_and_no_keys(
    server: Server, client: redis.Redis
) -> None:
    _fill(client, 3000, ttl=600)
    _fill(client, 3000, ttl=None, fmt="plain:{}")
    client.config_resetstat()
    source = RedisDirectSource(RedisConfig(server.url), sample_keys=500, scan_count=100)
    raw = await source.collect(CollectWindow())
    (sample,) = raw.key_expiry
    assert sample.source == source.name
    assert sample.keys_total == 6000
    assert sample.sampled == 500
    # about half the keys have a TTL; SCAN order is independent of the key names
    assert 150 <= len(sample.ttls) <= 350
    assert len(sample.patterns) == len(sample.ttls)
    assert set(sample.patterns) == {"user:*:profile"}
    assert np.all((sample.ttls > 598) & (sample.ttls <= 600.5)), sample.ttls
    stats = client.info("commandstats")
    assert "cmdstat_keys" not in stats
    assert stats["cmdstat_pttl"]["calls"] == 500  # one PTTL per sampled key, none repeated
    assert 5 <= stats["cmdstat_scan"]["calls"] <= 10  # COUNT 100: a few batches, not the keyspace


async def test_profile_stops_at_its_time_budget(server: Server, client: redis.Redis) -> None:
    _fill(client, 5000, ttl=600)
    client.config_resetstat()
    source = RedisDirectSource(
        RedisConfig(server.url), sample_keys=5000, scan_count=50, time_budget=0.0
    )
    (sample,) = (await source.collect(CollectWindow())).key_expiry
    assert client.info("commandstats")["cmdstat_scan"]["calls"] == 1
    assert 0 < sample.sampled <= 100


async def test_profile_covers_small_databases_whole(server: Server, client: redis.Redis) -> None:
    _fill(client, 30, ttl=100, fmt="a:{}")
    _fill(client, 20, ttl=None, fmt="b:{}")
    (sample,) = (
        await RedisDirectSource(RedisConfig(server.url)).collect(CollectWindow())
    ).key_expiry
    assert (sample.keys_total, sample.sampled, len(sample.ttls)) == (50, 50, 30)
    assert set(sample.patterns) == {"a:*"}


# ------------------------------------------------------------------ errors and secrets


async def test_unreachable_server_is_one_line_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    source = RedisDirectSource(RedisConfig(url), timeout=2.0)
    assert "hunter2" not in source.name
    with pytest.raises(SourceError) as err:
        await source.collect(CollectWindow())
    text = str(err.value)
    assert text.startswith("source redis redis://:***@127.0.0.1:") and "\n" not in text
    assert "hunter2" not in text
    assert err.value.source == source.name


async def test_auth_from_environment_or_file(tmp_path: Path) -> None:
    with start_redis() as srv:
        # the lab's readiness probe pings without a password: require one once it is up
        setup = redis.Redis.from_url(srv.url)
        setup.config_set("requirepass", PASSWORD)
        setup.close()
        with pytest.raises(SourceError) as err:
            await RedisDirectSource(RedisConfig(srv.url)).collect(CollectWindow())
        assert "\n" not in str(err.value) and str(err.value).startswith(f"source redis {srv.url}")

        wrong = RedisDirectSource(
            RedisConfig(srv.url, password_env="HW_PW"), environ={"HW_PW": "nope"}
        )
        with pytest.raises(SourceError) as err:
            await wrong.collect(CollectWindow())
        assert "nope" not in str(err.value)

        ok = RedisDirectSource(
            RedisConfig(srv.url, password_env="HW_PW"), environ={"HW_PW": PASSWORD}
        )
        raw = await ok.collect(CollectWindow())
        assert raw.sources[0].ok and PASSWORD not in ok.name

        secret = tmp_path / "pw"
        secret.write_text(PASSWORD + "\n")
        by_file = RedisDirectSource(RedisConfig(srv.url, password_file=str(secret)))
        assert (await by_file.collect(CollectWindow())).sources[0].ok

    with pytest.raises(ConfigError, match="HW_MISSING"):
        RedisDirectSource(
            RedisConfig("redis://127.0.0.1:1/0", password_env="HW_MISSING"), environ={}
        )


async def test_a_url_redis_cannot_parse_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="not a Redis URL"):
        await RedisDirectSource(RedisConfig("http://127.0.0.1:1/")).collect(CollectWindow())


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/notanumber", "redis://127.0.0.1:1/?db=x",
                                 "redis://127.0.0.1:1/-1", "redis://127.0.0.1:1/%31x"])  # fmt: skip
def test_a_database_that_is_no_number_is_refused_not_read_as_0(url: str) -> None:
    """redis-py reads `/notanumber` as database 0 without a word (issue 9)."""
    with pytest.raises(SourceError, match=r"database '.*' is not a number from 0 to"):
        RedisDirectSource(RedisConfig(url))
    RedisDirectSource(RedisConfig("redis://127.0.0.1:1/15"))
    RedisDirectSource(RedisConfig("unix:///tmp/redis.sock?db=2"))
