"""pool_exhaustion: connections in use go from their normal level to the max within seconds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from herdwatch.detect._common import group_labels, median, num, rnd
from herdwatch.detect._rolling import median_filter
from herdwatch.detect._stats import fill_nan, poisson_clusters, robust_level
from herdwatch.model import Finding, FloatArray, Labels, LogEvent, Recommendation, Signal
from herdwatch.signals import SignalSet

__all__ = ["PoolParams", "detect_pool_exhaustion", "recommend_pool_exhaustion"]


@dataclass(frozen=True, slots=True)
class PoolParams:
    fill_fraction: float = 0.9
    max_climb: float = 10.0
    climb_steps: int = 1
    min_jump_fraction: float = 0.25
    min_jump_z: float = 3.0
    baseline: float = 300.0
    min_rejections: int = 3
    alpha: float = 0.001


@dataclass(frozen=True, slots=True)
class _Episode:
    onset: float
    end: float
    evidence: dict[str, object]
    signals: tuple[str, ...]
    #: the database server whose pool filled (its group's labels); () for the log-only kind
    subject: Labels = ()


def _max_for(group: str, conns: Signal, sigs: SignalSet) -> tuple[FloatArray, str] | None:
    maxes = sigs.groups.get("db_connections_max", {})
    mx = maxes.get(group)
    if mx is None and len(maxes) == 1:
        mx = next(iter(maxes.values()))
    if mx is None and maxes:
        # label sets differ between the two families: take the largest, the conservative choice
        mx = max(maxes.values(), key=lambda s: float(np.nanmax(s.v, initial=0.0)))
    if mx is None:
        return None
    idx = np.searchsorted(mx.t, conns.t, side="right") - 1
    vals = np.where(idx >= 0, mx.v[np.clip(idx, 0, None)], np.nan)
    # the setting rarely changes; fill the gaps where the exporter could not connect
    if np.isfinite(mx.v).any():
        vals = np.where(np.isfinite(vals), vals, median(mx.v))
    return vals, mx.derived_from


def _first_below(x: FloatArray, level: float, start: int, stop: int) -> int | None:
    """The first index in [start, stop) where x < level (NaN never is), searched in doubling
    chunks: the cost is the distance to it, not the series' length."""
    width = 64
    a = start
    while a < stop:
        b = min(stop, a + width)
        hit = np.flatnonzero(x[a:b] < level)
        if len(hit):
            return a + int(hit[0])
        a, width = b, 2 * width
    return None


def _last_at_most(x: FloatArray, level: float, start: int, stop: int) -> int | None:
    """The last index in [start, stop) where x <= level (doubling chunks back from `stop`)."""
    width = 64
    b = stop
    while b > start:
        a = max(start, b - width)
        hit = np.flatnonzero(x[a:b] <= level)
        if len(hit):
            return a + int(hit[-1])
        b, width = a, 2 * width
    return None


def _metric_episodes(
    group: str,
    conns: Signal,
    sigs: SignalSet,
    p: PoolParams,
    rejections: list[LogEvent],
    slots: bool = False,
) -> list[_Episode]:
    """The pool's herds in its connections series. Each step costs what its own episode
    spans (searches are bounded by the baseline, the climb or the episode), so a week of
    episodes is linear in the samples, not quadratic. `rejections` are sorted by time."""
    got = _max_for(group, conns, sigs)
    if got is None:
        return []
    mx, _ = got
    x, t, step = conns.v, conns.t, conns.step
    raw = conns.v
    window = 1
    if 0 < step < 1.0:
        # sampled faster than a second (the direct sampler): connections in the active state
        # come and go between samples; a 1 s running median keeps a flicker from looking like a
        # climb and delays a real one by half a second at most
        window = max(1, round(1.0 / step))
        x = median_filter(fill_nan(x), window, origin=(window - 1) // 2)
        x = np.where(np.isfinite(conns.v), x, np.nan)
    allowed = max(p.max_climb, p.climb_steps * step) + 0.25 * step
    finite = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        full = finite & (x >= p.fill_fraction * mx)
    full_at = np.flatnonzero(full)
    rt = np.array([ev.timestamp for ev in rejections], dtype=np.float64)
    out: list[_Episode] = []
    i = 0
    n = len(x)
    while True:
        pos = int(np.searchsorted(full_at, i))
        if pos == len(full_at):
            break
        s = int(full_at[pos])
        ts = float(t[s])
        lo = int(np.searchsorted(t, ts - p.baseline, side="left"))
        ref_vals = x[lo:s][finite[lo:s]]
        if len(ref_vals) < 3:
            i = s + 1
            continue
        ref, mad = robust_level(ref_vals)
        spread = max(mad, 1.0)
        # the episode lasts until the pool is back below halfway (hysteresis, so noise around
        # the threshold does not split it); gaps, when the exporter itself could not get a
        # connection, do not end it
        exit_level = ref + 0.5 * (p.fill_fraction * float(mx[s]) - ref)
        below = _first_below(x, exit_level, s + 1, n)
        e = (n if below is None else below) - 1
        while e > s and not finite[e]:
            e -= 1
        i = e + 1
        m = float(mx[s])
        jump = float(x[s]) - ref
        # at the wall: the server refused connections during the climb, or every usable slot
        # is taken (it refuses the next one)
        walled = float(np.nanmax(x[s : e + 1])) >= m - 0.5 or bool(
            np.searchsorted(rt, float(t[e]) + step, side="right")
            > np.searchsorted(rt, ts - allowed - step, side="left")
        )
        # a jump within the pool's own spread before it is no climb (a creeping leak's window
        # spreads with its trend; noise around the threshold is not a herd)
        if jump < p.min_jump_z * spread:
            continue
        # it was already nearly full: a leak or a steady high load, not a herd; unless the
        # pool rose to the wall (a busy pool at 80 %, or 75 idle connections holding their
        # slots: the climb test below still tells it from a leak)
        if jump < p.min_jump_fraction * m and not walled:
            continue
        # how fast: the time since the pool was last below halfway between its normal level
        # and this peak (a leak crosses halfway minutes or hours before it is full); only a
        # climb within `allowed` counts, so the search goes no further back
        xs = float(x[s])
        mid = ref + 0.5 * (xs - ref)
        since = int(np.searchsorted(t, ts - allowed - step, side="left"))
        found = _last_at_most(x, mid, since, s)
        if found is None:
            continue
        j_mid = found
        climb = float(t[s] - t[j_mid])
        # the onset is the first sample after the last one at the normal level
        level = ref + max(2 * spread, 0.1 * (xs - ref))
        normal = _last_at_most(x, level, 0, j_mid + 1)
        onset_i = normal + 1 if normal is not None else j_mid + 1
        # the running median lags a real climb by up to window/2 samples: step back on the
        # raw samples
        back = 0
        while (
            back < window
            and onset_i - 1 >= 0
            and np.isfinite(raw[onset_i - 1])
            and (raw[onset_i - 1] > level)
        ):
            onset_i -= 1
            back += 1
        onset = float(t[onset_i])
        end = float(t[e])
        first = int(np.searchsorted(rt, onset - allowed, side="left"))
        last = int(np.searchsorted(rt, end + step, side="right"))
        if last > first:
            # rejections that run into the climb belong to it, even when the pool filled and
            # drained between two scrapes before the exporter saw it full
            while first > 0 and rt[first] - rt[first - 1] <= max(allowed, 2 * step):
                first -= 1
        near = rejections[first:last] if last > first else []
        evidence: dict[str, object] = {
            "group": group or "all",
            "counted": "all connections, idle ones included" if slots else "connections in use",
            "connections": {
                "baseline": rnd(ref),
                "peak": rnd(float(np.nanmax(x[s : e + 1]))),
                "max": rnd(m),
                "climb_seconds": rnd(climb),
                "onset": onset,
                "full_at": ts,
            },
            "saturated_seconds": rnd(end - ts + step),
            "rejections": len(near),
        }
        if near and near[0].timestamp < onset:
            evidence["first_rejection"] = near[0].where
            onset = near[0].timestamp
        out.append(
            _Episode(
                onset,
                max(end, near[-1].timestamp if near else end),
                evidence,
                ("db_connections",),
                group_labels(group),
            )
        )
    return out


def detect_pool_exhaustion(sigs: SignalSet, p: PoolParams) -> list[Finding]:
    rejections = sorted(
        (ev for ev in sigs.events if ev.kind == "too_many_clients"), key=lambda ev: ev.timestamp
    )
    episodes: list[_Episode] = []
    groups = sigs.groups.get("db_connections", {})
    for group, conns in groups.items():
        if "#" in group:
            continue
        found = _metric_episodes(group, conns, sigs, p, rejections)
        every = groups.get(group + "#slots")
        if every is not None:
            # idle connections hold slots too: a pool full of them is full
            found += [
                ep
                for ep in _metric_episodes(group, every, sigs, p, rejections, slots=True)
                if not any(ep.onset <= f.end and f.onset <= ep.end for f in found)
            ]
        episodes += found
    # rejections the metrics did not explain: a burst of "too many clients" is the herd itself
    if rejections and sigs.window is not None:
        times = np.array([ev.timestamp for ev in rejections])
        conns_all = sigs.get("db_connections")
        for c in poisson_clusters(
            times,
            sigs.window,
            widths=(1.0, 5.0, 30.0, 120.0),
            alpha=p.alpha,
            min_count=p.min_rejections,
        ):
            t0, t1 = float(times[c.first]), float(times[c.last])
            if any(ep.onset - 30 <= t0 <= ep.end + 30 for ep in episodes):
                continue
            if conns_all is not None and _slow_fill(conns_all, sigs, t0, p):
                continue
            evidence: dict[str, object] = {
                "rejections": c.count,
                "window_seconds": rnd(c.window),
                "expected": rnd(c.expected),
                "p_value": rnd(c.p_corrected),
                "first_rejection": rejections[c.first].where,
                "connections": None,
            }
            episodes.append(_Episode(t0, t1, evidence, ("error_logs",)))
    findings = []
    for ep in sorted(episodes, key=lambda ep: ep.onset):
        conn = ep.evidence.get("connections")
        n_rej = ep.evidence.get("rejections", 0)
        if isinstance(conn, dict):
            summary = (
                f"connections in use {conn['baseline']} -> {conn['peak']} of "
                f"{conn['max']} in {conn['climb_seconds']}s"
            )
        else:
            summary = "burst of 'too many clients' rejections"
        if n_rej:
            summary += f"; {n_rej} connection(s) rejected"
        findings.append(
            Finding(
                "pool_exhaustion",
                ep.onset,
                ep.end,
                "critical",
                summary,
                ep.evidence,
                signals=ep.signals,
                subject=ep.subject,
            )
        )
    return findings


def _slow_fill(conns: Signal, sigs: SignalSet, t0: float, p: PoolParams) -> bool:
    """True when the pool was already near full long before t0 (a leak, not a herd)."""
    mx = sigs.get("db_connections_max")
    if mx is None:
        return False
    m = median(mx.v)
    before = conns.v[(conns.t >= t0 - p.baseline) & (conns.t < t0 - p.max_climb)]
    before = before[np.isfinite(before)]
    return bool(len(before) and np.isfinite(m) and median(before) >= p.fill_fraction * m * 0.8)


def recommend_pool_exhaustion(f: Finding) -> list[Recommendation]:
    """What to change for a pool_exhaustion finding, best first, numbers from its evidence."""
    ev = f.evidence
    mx = num(ev, "connections", "max")
    base = num(ev, "connections", "baseline")
    climb = num(ev, "connections", "climb_seconds", default=1.0)
    rej = int(num(ev, "rejections", default=0.0))
    pool_size = max(math.ceil(base * 2), 5) if math.isfinite(base) else 10
    max_txt = f"{mx:g}" if math.isfinite(mx) else "max_connections"
    return [
        Recommendation(
            "Put a pooler with a queue in front of the database",
            f"The pool went to {max_txt} in {climb:g}s; {rej} connection(s) were refused. A "
            f"transaction pooler queues excess clients instead of refusing them: pool_size "
            f"~{pool_size} (2x the normal {base:g} in use) and a bounded wait.",
            f"[pgbouncer]\npool_mode = transaction\ndefault_pool_size = {pool_size}\n"
            f"max_client_conn = {max(pool_size * 20, 200)}\nquery_wait_timeout = 5",
            "pgbouncer default_pool_size / query_wait_timeout",
        ),
        Recommendation(
            "Bound concurrent loads in the application and shed the rest fast",
            f"Cap concurrent database loads per process below {max_txt} / processes; excess "
            f"callers get Overloaded (503) at once instead of holding a connection slot.",
            f"HerdCache.from_url(url, max_concurrent_loads={max(pool_size // 2, 2)})",
            "herdwatch.cache.Settings.max_concurrent_loads",
        ),
        Recommendation(
            "Reconnect with backoff and full jitter",
            "Clients that retry connecting on a fixed schedule come back as one wave; full "
            "jitter U(0, min(cap, base*2^n)) spreads them (AWS: 0.43x the calls of no jitter).",
            "Backoff(base=0.1, cap=10, mode='full')",
            "herdwatch.cache.Backoff",
        ),
    ]
