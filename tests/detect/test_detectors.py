"""Each detector fires on its herd and stays silent on the look-alike, across resolutions
(1 s, 15 s) and magnitudes (two orders apart), with the onset within one sample step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from herdwatch.engine import scan
from herdwatch.model import RawData, Series
from tests.detect import _synth as s

STEPS = [1.0, 15.0]


def _found(raw: RawData, signature: str) -> list[float]:
    return [f.onset for f in scan(raw).findings if f.signature == signature]


def _assert_onset(onsets: list[float], expected: float, step: float) -> None:
    assert len(onsets) == 1, onsets
    assert abs(onsets[0] - expected) <= step + 1e-6, (onsets[0], expected)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("scale", [20.0, 5000.0])
def test_cache_stampede_fires_with_flat_traffic(step: float, scale: float) -> None:
    raw, onset = s.cache_scenario(
        step,
        scale,
        misses_rise=True,
        traffic_rise=False,
        p99_rise=True,
        duration=1800 * (3 if step > 1 else 1),
    )
    _assert_onset(_found(raw, "cache_stampede"), onset, step)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("scale", [20.0, 5000.0])
def test_traffic_surge_and_slow_query_are_not_stampedes(step: float, scale: float) -> None:
    d = 1800 * (3 if step > 1 else 1)
    surge, _ = s.cache_scenario(
        step, scale, misses_rise=True, traffic_rise=True, p99_rise=True, duration=d
    )
    slow, _ = s.cache_scenario(
        step, scale, misses_rise=False, traffic_rise=False, p99_rise=True, duration=d
    )
    assert _found(surge, "cache_stampede") == []
    assert _found(slow, "cache_stampede") == []


def _headroom_stampede(step: float, busy_during: float) -> tuple[RawData, float]:
    """A stampede on a database with headroom: its p99 stays flat (here it even dips), while
    its connections in use (pg_stat_activity_count, Poisson around 1) go to `busy_during`."""
    raw, onset = s.cache_scenario(
        step, 150.0, misses_rise=True, traffic_rise=False, p99_rise=False, duration=1800
    )
    rng = np.random.default_rng(7)
    kept = [x for x in raw.series if x.family != "db_query_duration_seconds"]
    t = kept[0].timestamps
    t_on, t_off = onset - 0.5 * step, onset + 60.0
    lat = s.step_at(t, t_on, t_off, 0.02, 0.012)
    busy = rng.poisson(s.step_at(t, t_on, t_off, 1.0, busy_during)).astype(float)
    series = [
        *kept,
        *s.histogram("db_query_duration_seconds", t, np.full(len(t), 50.0), lat, rng),
        s.gauge("pg_stat_activity_count", t, busy, {"state": "active", "datname": "app"}),
        s.gauge("pg_stat_activity_count", t, np.full(len(t), 3.0), {"state": "idle"}),
    ]
    return RawData(series=series), onset


@pytest.mark.parametrize("step", STEPS)
def test_stampede_on_a_database_with_headroom_shows_in_connections(step: float) -> None:
    raw, onset = _headroom_stampede(step, busy_during=8.0)
    found = [f for f in scan(raw).findings if f.signature == "cache_stampede"]
    _assert_onset([f.onset for f in found], onset, step)
    (f,) = found
    assert f.evidence["db_latency_p99"] is None
    assert f.evidence["db_connections"]["peak"] >= 5
    assert "db_connections" in f.signals and "connections in use" in f.summary


@pytest.mark.parametrize("step", STEPS)
def test_misses_the_database_never_felt_are_no_stampede(step: float) -> None:
    raw, _ = _headroom_stampede(step, busy_during=1.0)
    assert _found(raw, "cache_stampede") == []


@pytest.mark.parametrize("step", [0.1, *STEPS])
@pytest.mark.parametrize("max_conn", [20, 400])
def test_pool_exhaustion_fast_climb_fires_slow_leak_does_not(step: float, max_conn: int) -> None:
    dur = 300.0 if step < 1 else 3600.0
    herd, onset = s.pool_scenario(step, max_conn, herd=True, with_log=False, duration=dur)
    _assert_onset(_found(herd, "pool_exhaustion"), onset, step)
    for leak_s in (240.0, 4 * 3600.0):  # minutes or hours to fill: a leak, not a herd
        if leak_s / step > 50_000:
            continue
        leak, _ = s.pool_scenario(step, max_conn, herd=False, duration=leak_s)
        assert _found(leak, "pool_exhaustion") == [], leak_s


def test_pool_exhaustion_onset_is_the_first_rejection_when_earlier() -> None:
    raw, _ = s.pool_scenario(15.0, 20, herd=True, with_log=True)
    first = min(e.timestamp for e in raw.events)
    _assert_onset(_found(raw, "pool_exhaustion"), first, 0.0)


def test_pool_exhaustion_from_rejections_alone() -> None:
    raw, _ = s.pool_scenario(15.0, 20, herd=True, with_log=True)
    only_logs = RawData(
        series=[x for x in raw.series if x.name.startswith("node")]
        or [Series("up", (), np.array([s.T0, s.T0 + 3600]), np.ones(2), "up", "gauge")],
        events=raw.events,
    )
    first = min(e.timestamp for e in raw.events)
    _assert_onset(_found(only_logs, "pool_exhaustion"), first, 0.0)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("base", [200.0, 50000.0])
def test_ctx_switch_burst_fires_diurnal_ramp_does_not(step: float, base: float) -> None:
    burst, onset = s.ctx_scenario(step, base, burst=True, diurnal=False)
    _assert_onset(_found(burst, "ctx_switch_burst"), onset, step)
    day, _ = s.ctx_scenario(step, base, burst=False, diurnal=True, duration=86400)
    assert _found(day, "ctx_switch_burst") == []


def _span_series() -> list[Series]:
    return [Series("up", (), np.array([s.T0, s.T0 + 6 * 3600]), np.ones(2), "up", "gauge")]


@pytest.mark.parametrize("n", [8, 60])
def test_lock_timeout_cluster_vs_the_same_count_spread_evenly(n: int) -> None:
    rng = np.random.default_rng(n)
    cluster_at = s.T0 + 10_000
    clustered = np.concatenate(
        [rng.uniform(s.T0, s.T0 + 6 * 3600, 10), cluster_at + rng.uniform(0, 3, n)]
    )
    spread = rng.uniform(s.T0, s.T0 + 6 * 3600, n + 10)
    got = _found(RawData(series=_span_series(), events=s.events(clustered)), "lock_timeout_cluster")
    first = float(np.min(clustered[clustered >= cluster_at]))
    _assert_onset(got, first, 0.0)
    assert (
        _found(RawData(series=_span_series(), events=s.events(spread)), "lock_timeout_cluster")
        == []
    )


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("base", [2.0, 500.0])
def test_retry_storm_onset_is_the_recovery_and_normal_recovery_is_silent(
    step: float, base: float
) -> None:
    storm, onset = s.retry_scenario(step, base, storm=True)
    _assert_onset(_found(storm, "retry_storm"), onset, step)
    normal, _ = s.retry_scenario(step, base, storm=False)
    assert _found(normal, "retry_storm") == []


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("period", [300.0, 3600.0])
def test_cron_herd_recurs_on_the_boundary_one_off_does_not(step: float, period: float) -> None:
    dur = 3600.0 if period == 300 else 6 * 3600.0
    raw, first = s.cron_scenario(step, 30.0, period=period, recurring=True, duration=dur)
    found = [f for f in scan(raw).findings if f.signature == "cron_herd"]
    assert len(found) == 1
    assert abs(found[0].onset - first) <= step
    assert found[0].evidence["period_seconds"] == period
    one, _ = s.cron_scenario(step, 30.0, period=period, recurring=False, duration=dur)
    assert _found(one, "cron_herd") == []


def test_every_finding_carries_evidence_and_ranked_recommendations() -> None:
    raw, _ = s.cache_scenario(1.0, 500.0, misses_rise=True, traffic_rise=False, p99_rise=True)
    (f,) = scan(raw).findings
    assert f.evidence["miss_ratio"]["baseline"] < f.evidence["miss_ratio"]["peak"]
    assert abs(f.evidence["db_latency_p99"]["lag_seconds"]) <= 5
    assert len(f.recommendations) >= 3
    assert "ttl_jitter" in " ".join(r.config for r in f.recommendations)
    assert all(r.action and r.detail for r in f.recommendations)
    assert math.isfinite(f.end) and f.end >= f.onset
