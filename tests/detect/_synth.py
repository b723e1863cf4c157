"""Synthetic raw data for detector unit tests: noisy counters, gauges and histograms.

Pure numpy; each builder takes the grid and a seeded Generator so tests are exact and varied
(resolution, magnitude and label sets are parameters, never constants of the detectors).
"""

from __future__ import annotations

import numpy as np

from herdwatch.model import FloatArray, LogEvent, RawData, Series

T0 = 1_764_000_000.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


def grid(duration: float, step: float, jitter: float = 0.0, seed: int = 0) -> FloatArray:
    t = T0 + np.arange(0.0, duration, step)
    if jitter:
        t = t + np.random.default_rng(seed).uniform(-jitter, jitter, len(t)) * step
    return np.round(t, 3)


def counter(
    name: str,
    t: FloatArray,
    rate: FloatArray,
    rng: np.random.Generator,
    labels: dict[str, str] | None = None,
    family: str | None = None,
) -> Series:
    dt = np.diff(t, prepend=t[0] - (t[1] - t[0]))
    inc = rng.poisson(np.maximum(rate, 0) * dt).astype(float)
    fam = family or name.removesuffix("_total")
    return Series(name, tuple(sorted((labels or {}).items())), t, np.cumsum(inc), fam, "counter")


def gauge(name: str, t: FloatArray, v: FloatArray, labels: dict[str, str] | None = None) -> Series:
    return Series(
        name, tuple(sorted((labels or {}).items())), t, np.asarray(v, float), name, "gauge"
    )


def histogram(
    name: str,
    t: FloatArray,
    rate: FloatArray,
    median: FloatArray,
    rng: np.random.Generator,
    labels: dict[str, str] | None = None,
) -> list[Series]:
    """Observations ~ lognormal(median, sigma 0.5), `rate` per second, as cumulative buckets."""
    dt = np.diff(t, prepend=t[0] - (t[1] - t[0]))
    n = rng.poisson(np.maximum(rate, 0) * dt)
    counts = np.zeros((len(BUCKETS), len(t)))
    sums = np.zeros(len(t))
    for i, k in enumerate(n):
        if k:
            obs = np.exp(np.log(median[i]) + 0.5 * rng.standard_normal(k))
            counts[:, i] = [(obs <= b).sum() for b in BUCKETS]
            sums[i] = obs.sum()
    cum = np.cumsum(counts, axis=1)
    base = dict(labels or {})
    out = [
        Series(
            f"{name}_bucket",
            tuple(sorted({**base, "le": _le(b)}.items())),
            t,
            cum[j],
            name,
            "histogram",
        )
        for j, b in enumerate(BUCKETS)
    ]
    out.append(Series(f"{name}_count", tuple(sorted(base.items())), t, cum[-1], name, "histogram"))
    out.append(
        Series(f"{name}_sum", tuple(sorted(base.items())), t, np.cumsum(sums), name, "histogram")
    )
    return out


def _le(b: float) -> str:
    return "+Inf" if np.isinf(b) else f"{b:g}"


def step_at(t: FloatArray, t_on: float, t_off: float, before: float, during: float) -> FloatArray:
    return np.where((t > t_on) & (t <= t_off), during, before)


def cache_scenario(
    step: float,
    scale: float,
    *,
    misses_rise: bool,
    traffic_rise: bool,
    p99_rise: bool,
    seed: int = 1,
    duration: float = 1800.0,
) -> tuple[RawData, float]:
    """Redis hits/misses, db histogram, http requests; the event starts at 60 % of the window.

    Returns the raw data and the expected onset (first sample whose interval holds the change).
    """
    rng = np.random.default_rng(seed)
    t = grid(duration, step)
    t_on = T0 + 0.6 * duration + 0.37 * step
    t_off = t_on + max(60.0, 4 * step)
    req = scale * step_at(t, t_on, t_off, 1.0, 3.0 if traffic_rise else 1.0)
    req = req * (1 + 0.03 * np.sin(2 * np.pi * (t - T0) / 3600))
    miss_ratio = step_at(t, t_on, t_off, 0.03, 0.6 if misses_rise else 0.03)
    hits_r, miss_r = req * (1 - miss_ratio), req * miss_ratio
    lat = step_at(t, t_on, t_off, 0.02, 0.4 if (p99_rise or misses_rise) else 0.02)
    inst = {"instance": "cache-1:9121", "job": "redis"}
    series = [
        counter("redis_keyspace_hits_total", t, hits_r, rng, inst),
        counter("redis_keyspace_misses_total", t, miss_r, rng, inst),
        counter("http_requests_total", t, req, rng, {"code": "200", "handler": "/api"}),
        *histogram("db_query_duration_seconds", t, np.maximum(miss_r, 2.0), lat, rng),
    ]
    onset = float(t[np.searchsorted(t, t_on)])
    return RawData(series=series), onset


def events(times: FloatArray, kind: str = "lock_timeout") -> list[LogEvent]:
    return [
        LogEvent(
            float(x), kind, f"app.log:{i + 1}", "ERROR: canceling statement due to lock timeout"
        )
        for i, x in enumerate(np.sort(times))
    ]


def pool_scenario(
    step: float,
    max_conn: int,
    *,
    herd: bool,
    seed: int = 2,
    duration: float = 3600.0,
    with_log: bool = True,
) -> tuple[RawData, float]:
    """pg_stat_activity_count by state; a herd fills the pool within one second at 60 % of the
    window, a leak (herd=False) creeps to the max over the whole window."""
    rng = np.random.default_rng(seed)
    t = grid(duration, step)
    normal = 0.25 * max_conn
    if herd:
        t_on = T0 + 0.6 * duration + 0.4 * step
        active = np.where((t >= t_on) & (t < t_on + 90), max_conn - 2, normal)
    else:
        t_on = T0 + duration
        active = normal + (max_conn - 2 - normal) * (t - T0) / duration
    active = np.clip(np.round(active + rng.normal(0, 0.6, len(t))), 0, max_conn - 2)
    idle = np.full(len(t), 2.0)
    lab = {"datname": "app", "instance": "db-1:9187", "server": "db-1:5432"}
    series = [
        gauge("pg_stat_activity_count", t, active, {**lab, "state": "active"}),
        gauge("pg_stat_activity_count", t, idle, {**lab, "state": "idle"}),
        gauge(
            "pg_stat_activity_count", t, np.zeros(len(t)), {**lab, "state": "idle in transaction"}
        ),
        gauge(
            "pg_settings_max_connections",
            t,
            np.full(len(t), float(max_conn)),
            {"instance": "db-1:9187", "server": "db-1:5432"},
        ),
    ]
    ev = []
    if herd and with_log:
        ev = events(t_on + rng.uniform(0, 5, 30), "too_many_clients")
    onset = float(t[np.searchsorted(t, t_on)]) if herd else float("nan")
    return RawData(series=series, events=ev), onset


def ctx_scenario(
    step: float, base: float, *, burst: bool, diurnal: bool, seed: int = 3, duration: float = 7200.0
) -> tuple[RawData, float]:
    rng = np.random.default_rng(seed)
    t = grid(duration, step)
    level = base * (
        1 + (4 * (0.5 - 0.5 * np.cos(2 * np.pi * (t - T0) / duration)) if diurnal else 0)
    )
    t_on = T0 + 0.6 * duration + 0.3 * step
    k = step_at(t, t_on, t_on + max(30, 3 * step), 1.0, 8.0 if burst else 1.0)
    series = [counter("node_context_switches_total", t, level * k, rng, {"instance": "h:9100"})]
    for cpu in ("0", "1"):
        sys_share = 0.05 * np.where(k > 1, 6, 1)
        series.append(
            counter(
                "node_cpu_seconds_total",
                t,
                np.full(len(t), 1000 * sys_share),
                rng,
                {"cpu": cpu, "mode": "system"},
            )
        )
        series.append(
            counter(
                "node_cpu_seconds_total",
                t,
                1000 * (1 - sys_share),
                rng,
                {"cpu": cpu, "mode": "idle"},
            )
        )
    # cpu seconds are counted in ms here: scale to seconds
    series = [
        s
        if s.name != "node_cpu_seconds_total"
        else Series(s.name, s.labels, s.timestamps, s.values / 1000, s.family, s.type)
        for s in series
    ]
    return RawData(series=series), float(t[np.searchsorted(t, t_on)])


def retry_scenario(
    step: float, base: float, *, storm: bool, seed: int = 4, duration: float = 3600.0
) -> tuple[RawData, float]:
    rng = np.random.default_rng(seed)
    t = grid(duration, step)
    t_out = T0 + 0.5 * duration + 0.2 * step
    t_rec = t_out + max(60.0, 4 * step)
    up = (t <= t_out) | (t > t_rec)
    after = (t > t_rec) & (t <= t_rec + max(60.0, 4 * step))
    ok_rate = np.where(up, base, 0.0) * np.where(after, 10.0 if storm else 1.1, 1.0)
    err_rate = np.where(up, 0.001 * base, base * 1.2)
    lab = {"peer": "payments", "instance": "api-1:8080"}
    series = [
        counter("http_client_requests_total", t, ok_rate, rng, {**lab, "code": "200"}),
        counter("http_client_requests_total", t, err_rate, rng, {**lab, "code": "503"}),
    ]
    return RawData(series=series), float(t[np.searchsorted(t, t_rec)])


def cron_scenario(
    step: float,
    base: float,
    *,
    period: float,
    recurring: bool,
    seed: int = 5,
    duration: float = 6 * 3600.0,
) -> tuple[RawData, float]:
    rng = np.random.default_rng(seed)
    t0 = T0 - (T0 % 86400) + 7 * 3600 - 750  # 06:47:30 UTC: a baseline before the first boundary
    t = np.round(t0 + np.arange(0.0, duration, step), 3)
    phase = np.mod(t - step * 0.5, period)
    spike = (phase < max(20.0, 2 * step)) & (t > t0 + step)
    if not recurring:
        spike = (t > t0 + 0.5 * duration) & (t <= t0 + 0.5 * duration + max(20.0, 2 * step))
    rate = base * np.where(spike, 6.0, 1.0)
    series = [counter("http_requests_total", t, rate, rng, {"code": "200"})]
    first = float(t[np.flatnonzero(spike)[0]])
    return RawData(series=series), first
