"""`capture` writes a replay directory whose replay finds what the live scan found."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from herdwatch.capture import capture
from herdwatch.config import PrometheusConfig
from herdwatch.engine import scan
from herdwatch.errors import ConfigError, SourceError
from herdwatch.model import ScanResult
from herdwatch.sources.prometheus import PrometheusSource, scan_overrides
from herdwatch.sources.replay import load_replay
from tests.sources.prometheus_lab import INCIDENTS, backfilled_prometheus
from tests.support.servers import Server

FIXTURES = ("real_cache_stampede", "stampede_checkout_15s")


@pytest.fixture(scope="module")
def prom() -> Iterator[Server]:
    with backfilled_prometheus([INCIDENTS / name for name in FIXTURES]) as server:
        yield server


def _window(name: str) -> tuple[float, float]:
    w = load_replay(INCIDENTS / name).window()
    assert w is not None
    return w


def _findings(result: ScanResult) -> list[tuple[str, float]]:
    return [(f.signature, round(f.onset, 3)) for f in result.findings]


def _replay_config(d: Path) -> dict[str, str]:
    doc = yaml.safe_load((d / "herdwatch.yaml").read_text()) or {}
    return dict(doc.get("signals") or {})


@pytest.mark.parametrize(
    ("fixture", "signals"),
    [
        ("real_cache_stampede", {}),
        ("stampede_checkout_15s", {"db_latency": "checkout_db_query_seconds"}),
        # PromQL overrides: a counter summed over instances, buckets summed by le
        (
            "stampede_checkout_15s",
            {
                "cache_misses": "sum without (instance) (redis_keyspace_misses_total)",
                "db_latency": "sum by (le) (checkout_db_query_seconds_bucket)",
            },
        ),
    ],
)
def test_capture_then_replay_finds_what_the_live_scan_found(
    prom: Server, tmp_path: Path, fixture: str, signals: dict[str, str]
) -> None:
    lo, hi = _window(fixture)
    cfg = PrometheusConfig(url=prom.url)
    live = PrometheusSource(cfg, signals).fetch(lo, hi)
    live_result = scan(live, signal_overrides=scan_overrides(signals))
    assert any(f.signature == "cache_stampede" for f in live_result.findings)

    out = tmp_path / "incident"
    config_used = {"signals": signals, "rules": {"cron_herd": {"enabled": False}}}
    res = capture(cfg, lo, hi, out, config_used)
    assert res.metrics.parent == out and res.samples > 0 and res.series == len(live.series)
    replay = load_replay(out)
    replay_signals = _replay_config(out)
    assert replay_signals == scan_overrides(signals)
    doc = yaml.safe_load(res.config.read_text())
    assert doc["rules"] == {"cron_herd": {"enabled": False}} and "sources" not in doc
    replay_result = scan(replay, signal_overrides=replay_signals)
    assert _findings(replay_result) == _findings(live_result)
    # the very same samples
    by_key = {(s.name, s.labels): s for s in replay.series}
    for s in live.series:
        r = by_key[(s.name, s.labels)]
        np.testing.assert_array_equal(r.timestamps, s.timestamps)
        np.testing.assert_array_equal(r.values, s.values)
        assert (r.family, r.type) == (s.family, s.type)


def test_capture_refuses_a_directory_with_a_recording(prom: Server, tmp_path: Path) -> None:
    lo, hi = _window("real_cache_stampede")
    cfg = PrometheusConfig(url=prom.url)
    capture(cfg, lo, hi, tmp_path, {})
    with pytest.raises(ConfigError, match="already holds a recording"):
        capture(cfg, lo, hi, tmp_path, {})
    res = capture(cfg, lo, hi, tmp_path, {}, overwrite=True)
    assert res.samples > 0


def test_capture_of_an_empty_range_is_a_source_error(prom: Server, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no herdwatch metric families") as exc:
        capture(PrometheusConfig(url=prom.url), 1_000_000.0, 1_003_600.0, tmp_path / "x", {})
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "x").exists()
