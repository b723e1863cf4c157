"""Issue 8, "Speed holds at scale": no detector is quadratic in episodes or events. A recording
eight times longer, with eight times the herds, costs about eight times as much (the bound
allows 2.5x that for noise; a quadratic detector costs 64x), and every herd is still found.
The whole-scan figure for a week of 500 series is benchmarks/fleet_week.py."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from herdwatch.detect.locks import LockClusterParams, detect_lock_timeout_cluster
from herdwatch.detect.pool import PoolParams, detect_pool_exhaustion
from herdwatch.model import Finding, RawData
from herdwatch.signals import SignalSet, derive
from tests.detect import _synth as s

DAY = 86_400.0
EVERY = 1800.0  # a herd each half hour: 48 a day
MAX_RATIO = 20.0


def _pool(days: float) -> RawData:
    """A pool at 25 % that fills within a scrape every half hour, for 90 s, with rejections."""
    rng = np.random.default_rng(int(days))
    t = s.grid(days * DAY, 15.0)
    on = s.T0 + EVERY * (np.arange(int(days * DAY / EVERY)) + 0.5) + 3.0
    k = np.searchsorted(on, t, side="right") - 1
    herd = (k >= 0) & (t - on[np.clip(k, 0, None)] < 90.0)
    active = np.clip(np.round(np.where(herd, 98.0, 25.0) + rng.normal(0, 0.6, len(t))), 0, 98)
    lab = {"datname": "app", "instance": "db-1:9187", "server": "db-1:5432"}
    series = [
        s.gauge("pg_stat_activity_count", t, active, {**lab, "state": "active"}),
        s.gauge("pg_stat_activity_count", t, np.full(len(t), 2.0), {**lab, "state": "idle"}),
        s.gauge(
            "pg_settings_max_connections",
            t,
            np.full(len(t), 100.0),
            {"instance": "db-1:9187", "server": "db-1:5432"},
        ),
    ]
    times = (on[:, None] + rng.uniform(0, 5, (len(on), 10))).ravel()
    return RawData(series=series, events=s.events(times, "too_many_clients"))


def _locks(days: float) -> RawData:
    """Background lock timeouts (one a minute) and a burst of 200 within 2 s each half hour."""
    rng = np.random.default_rng(int(days))
    span = days * DAY
    background = s.T0 + rng.uniform(0, span, int(span / 60))
    on = s.T0 + EVERY * (np.arange(int(span / EVERY)) + 0.5)
    bursts = (on[:, None] + rng.uniform(0, 2, (len(on), 200))).ravel()
    t = s.grid(span, 15.0)
    # a series gives the scan its window; the events are the data
    series = [s.gauge("up", t, np.ones(len(t)), {"instance": "app-1:8080"})]
    return RawData(series=series, events=s.events(np.concatenate([background, bursts])))


def _cost(detect: Callable[[SignalSet], list[Finding]], sigs: SignalSet) -> tuple[float, int]:
    best = float("inf")
    found = 0
    for _ in range(3):
        t0 = time.process_time()
        found = len(detect(sigs))
        best = min(best, time.process_time() - t0)
    return best, found


def _holds(make: Callable[[float], RawData], detect: Callable[[SignalSet], list[Finding]]) -> None:
    short, long = derive(make(1.0)), derive(make(8.0))
    (a, found_short), (b, found_long) = _cost(detect, short), _cost(detect, long)
    assert found_short == DAY / EVERY and found_long == 8 * DAY / EVERY
    assert b / max(a, 1e-3) < MAX_RATIO, f"1 day {a:.3f} s, 8 days {b:.3f} s"


def test_pool_exhaustion_is_linear_in_its_episodes() -> None:
    _holds(_pool, lambda sigs: detect_pool_exhaustion(sigs, PoolParams()))


def test_lock_timeout_cluster_is_linear_in_its_events() -> None:
    _holds(_locks, lambda sigs: detect_lock_timeout_cluster(sigs, LockClusterParams()))
