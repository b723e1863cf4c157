"""The pure scan: findings per subject (shards, hosts), not_evaluated, exit 2 when nothing ran."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from herdwatch.engine import scan
from herdwatch.model import RawData, Series
from herdwatch.rules import load_rules
from tests.detect._synth import T0, counter, grid, histogram, step_at
from tests.support.servers import start_prometheus


def _fleet(shards: int, herds: dict[int, float], *, seed: int = 3, step: float = 1.0) -> RawData:
    """`shards` Redis instances behind one flat front end; shard i's keys expire together at
    herds[i] (miss ratio 0.03 -> 0.5 for 90 s), the database p99 rising with every herd."""
    rng = np.random.default_rng(seed)
    t = grid(1800.0, step)
    per_shard = 200.0
    series: list[Series] = []
    lat = np.full(len(t), 0.02)
    extra = np.zeros(len(t))
    for i in range(shards):
        ratio = np.full(len(t), 0.03)
        if i in herds:
            on = herds[i]
            ratio = step_at(t, on, on + 90, 0.03, 0.5)
            lat = np.maximum(lat, step_at(t, on, on + 90, 0.02, 0.3))
            extra += per_shard * (ratio - 0.03)
        inst = {"instance": f"redis-{i}:9121", "job": "redis"}
        series.append(counter("redis_keyspace_hits_total", t, per_shard * (1 - ratio), rng, inst))
        series.append(counter("redis_keyspace_misses_total", t, per_shard * ratio, rng, inst))
    front = np.full(len(t), per_shard * shards / 4)
    series.append(counter("http_requests_total", t, front, rng, {"handler": "/api"}))
    series += histogram("db_query_duration_seconds", t, 0.03 * per_shard * shards + extra, lat, rng)
    return RawData(series=series)


def _stampedes(raw: RawData) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    found = scan(raw, rules=load_rules()).findings
    return [(f.subject, f.onset) for f in found if f.signature == "cache_stampede"]


def test_a_stampede_on_one_shard_of_twenty_is_found_and_named() -> None:
    on = T0 + 1200.4
    found = _stampedes(_fleet(20, {7: on}))
    assert [s for s, _ in found] == [(("instance", "redis-7:9121"),)]
    assert abs(found[0][1] - on) <= 2.0


def test_two_shards_herding_apart_are_two_findings() -> None:
    a, b = T0 + 900.4, T0 + 1400.4
    found = sorted(_stampedes(_fleet(6, {1: a, 4: b})), key=lambda f: f[1])
    assert [s for s, _ in found] == [
        (("instance", "redis-1:9121"),),
        (("instance", "redis-4:9121"),),
    ]
    assert abs(found[0][1] - a) <= 2.0 and abs(found[1][1] - b) <= 2.0


def test_two_shards_herding_together_are_two_findings() -> None:
    on = T0 + 1200.4
    found = _stampedes(_fleet(8, {2: on, 5: on}))
    assert sorted(s for s, _ in found) == [
        (("instance", "redis-2:9121"),),
        (("instance", "redis-5:9121"),),
    ]


def test_a_quiet_fleet_stays_quiet() -> None:
    assert _stampedes(_fleet(20, {})) == []


def test_one_server_names_itself_as_the_subject() -> None:
    found = _stampedes(_fleet(1, {0: T0 + 1200.4}))
    assert [s for s, _ in found] == [(("instance", "redis-0:9121"),)]


def test_rules_without_their_signals_are_listed_with_what_was_looked_for() -> None:
    result = scan(_fleet(2, {}), rules=load_rules())
    why = {n.rule: n.why for n in result.not_evaluated}
    assert set(why) == {"ctx_switch_burst", "lock_timeout_cluster", "pool_exhaustion",
                        "retry_storm", "ttl_cliff"}  # fmt: skip
    assert "node_context_switches_total" in why["ctx_switch_burst"]
    assert "pg_stat_activity_count" in why["pool_exhaustion"]
    assert "http_client_requests_total" in why["retry_storm"]
    assert result.evaluated == 2  # cache_stampede, cron_herd
    assert result.to_json()["not_evaluated"][0].keys() == {"rule", "why"}


def test_a_prometheus_without_the_families_is_exit_2_in_every_format() -> None:
    with start_prometheus([]) as prom:
        for fmt in ("rich", "json"):
            done = subprocess.run(
                [sys.executable, "-m", "herdwatch", "scan", "--prometheus", prom.url,
                 "--since", "1m", "--format", fmt],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("herdwatch: nothing to scan"), lines
            assert "Traceback" not in done.stderr and done.stdout == ""
            assert "redis_keyspace_hits_total" in lines[0]


def test_json_lists_what_was_not_evaluated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_cli import openmetrics

    (tmp_path / "metrics.om").write_text(openmetrics())
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "scan", "--replay", str(tmp_path), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    skipped = {n["rule"] for n in json.loads(done.stdout)["not_evaluated"]}
    assert "lock_timeout_cluster" in skipped and "cache_stampede" not in skipped


def test_connections_without_their_max_say_so() -> None:
    """A pool is full only against its max: connections in use without a max series (and no
    log lines) leave pool_exhaustion not evaluated, and the reason names the missing family."""
    from herdwatch.sources.replay import load_replay
    from tests.engine.test_watch import FIXTURES

    raw = load_replay(FIXTURES / "pool_exhaustion_nolog_10s")
    assert not raw.events and not raw.log_lines
    assert scan(raw, rules=load_rules()).findings
    raw.series = [s for s in raw.series if "max_connections" not in s.name]
    why = {n.rule: n.why for n in scan(raw, rules=load_rules()).not_evaluated}
    assert why["pool_exhaustion"].startswith("db_connections read but no db_connections_max")
    assert "pg_settings_max_connections" in why["pool_exhaustion"]
