"""cache_stampede: the miss ratio rises while traffic stays flat, and the database feels it.

The database's load is confirmed by its p99 rising with the misses, or, where the database has
the headroom to keep its latency (its p99 flat or even lower), by its connections in use rising:
by Little's law the connections busy are the query rate times the latency, so a stampede's query
rate shows in one or the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from herdwatch.detect._common import (
    excess,
    grid_step,
    median,
    nice,
    num,
    quantile,
    rnd,
    window,
    window_values,
)
from herdwatch.detect._stats import find_excursions, robust_level, samples, trailing_mean
from herdwatch.model import Finding, FloatArray, Recommendation, Signal
from herdwatch.signals import SignalSet

__all__ = ["StampedeParams", "detect_cache_stampede", "recommend_cache_stampede"]


@dataclass(frozen=True, slots=True)
class StampedeParams:
    baseline: float = 300.0
    z_enter: float = 6.0
    min_ratio_rise: float = 0.05
    min_factor: float = 2.0
    p99_factor: float = 1.25
    p99_z: float = 4.0
    align_steps: int = 2
    max_traffic_ratio: float = 1.5
    min_duration: float = 0.0
    p99_strong_factor: float = 5.0
    min_hit_loss: float = 0.3
    max_load_share: float = 0.5


def _traffic(sigs: SignalSet) -> Signal | None:
    return sigs.get("requests") or sigs.get("cache_requests")


def _quiet_before(
    p99: Signal, pre_end: float, width: float, busy: list[tuple[float, float]], horizon: float
) -> FloatArray:
    """The p99 over `width` before `pre_end`, leaving out the spans of earlier herds (`busy`):
    a second herd soon after a first is measured against the level before the first. Where
    that leaves fewer than three samples, the last `width` worth of quiet samples within
    `horizon` before."""
    sl = window(p99, pre_end - horizon, pre_end)
    t, v = p99.t[sl], p99.v[sl]
    quiet = np.isfinite(v)
    for a, b in busy:
        quiet &= ~((t >= a) & (t <= b))
    recent = quiet & (t >= pre_end - width)
    if recent.sum() < 3 and busy and quiet.any():
        recent = quiet & (t >= t[quiet][-1] - width)
    out: FloatArray = v[recent]
    return out


def _p99_rise(
    p99: Signal,
    t_onset: float,
    t_end: float,
    p: StampedeParams,
    lag: float,
    scrape: float,
    busy: list[tuple[float, float]],
    counts: bool = False,
) -> dict[str, object] | None:
    """Did the database p99 step up at the miss onset? Evidence, or None.

    A two-sample comparison anchored at the known change point: the level of the p99 in the
    five steps just before (median, MAD, floored at 5 %) against its peak from `lag` before the
    miss onset to the end of the excursion. The window is short because real databases have
    slow spells of their own; one that ended seconds before the herd must not hide it. The miss
    ratio excursion and flat traffic already carry the evidence; this only confirms the load.
    With `counts` the signal is a count (connections in use): its noise is at least Poisson's.
    """
    # five scrapes: `scrape` is the miss ratio's step, which may be longer than the p99's
    # (several app instances on their own phases put the p99 on a finer grid than each scrapes)
    step = max(p99.step if p99.step > 0 else 1.0, scrape)
    width = min(p.baseline, max(5.0, 5 * step))
    pre_end = t_onset - lag
    before = _quiet_before(p99, pre_end - 0.5 * step, width - 0.5 * step, busy, p.baseline)
    lo, hi = t_onset - lag, max(t_end, t_onset + lag)
    sl = window(p99, lo, hi)
    t_after, v_after = p99.t[sl], p99.v[sl]
    ok = np.isfinite(v_after)
    if not ok.any():
        return None
    if len(before) < 3 and t_onset - lag - width < p99.t[0]:
        # the herd began in the window's first samples: the level it returns to is the reference
        after = window_values(p99, t_end + lag, t_end + lag + width)
        if len(after) >= 3:
            got = _p99_against(before_level=after, t_after=t_after, v_after=v_after, ok=ok,
                               t_onset=t_onset, p=p, counts=counts)  # fmt: skip
            if got is not None:
                got["note"] = "baseline taken after the excursion (it began with the window)"
            return got
    if len(before) < 3:
        # a cache that hits almost always leaves the database idle: no p99 before, one during
        n_pre = int(np.sum((p99.t >= pre_end - width) & (p99.t < pre_end)))
        if n_pre >= 3:
            first = float(t_after[ok][0])
            return {
                "onset": first,
                "lag_seconds": rnd(first - t_onset),
                "baseline": None,
                "peak": rnd(float(np.max(v_after[ok]))),
                "factor": None,
                "z": None,
                "end": float(t_after[ok][-1]),
                "note": "no database queries before the onset",
            }
        return None
    return _p99_against(before, t_after, v_after, ok, t_onset, p, counts)


def _p99_against(
    before_level: FloatArray,
    t_after: FloatArray,
    v_after: FloatArray,
    ok: npt.NDArray[np.bool_],
    t_onset: float,
    p: StampedeParams,
    counts: bool = False,
) -> dict[str, object] | None:
    """The p99's rise over a reference level (median, MAD floored at 5 %), or None. A count's
    scale is floored at Poisson's sqrt(level), at least 1: one more connection is no rise."""
    b, mad = robust_level(before_level)
    sc = max(mad, 0.05 * abs(b), 1e-9)
    if counts:
        sc = max(sc, math.sqrt(max(b, 1.0)))
    peak = float(np.max(v_after[ok]))
    factor = peak / b if b > 0 else np.inf
    z = (peak - b) / sc
    if factor < p.p99_factor or z < p.p99_z:
        return None
    thr = b + max(3 * sc, 0.5 * (p.p99_factor - 1) * b)
    above = np.flatnonzero(ok & (v_after > thr))
    if len(above) == 0:
        return None  # only where the level overflows (thr inf): no rise can be told from it
    i0 = int(above[0])
    i1 = i0
    while i1 + 1 < len(v_after) and (not ok[i1 + 1] or v_after[i1 + 1] > thr):
        i1 += 1
    return {
        "onset": float(t_after[i0]),
        "lag_seconds": rnd(float(t_after[i0]) - t_onset),
        "baseline": rnd(b),
        "peak": rnd(peak),
        "factor": rnd(factor),
        "z": rnd(z),
        "end": float(t_after[i1]),
    }


def _binomial_noise(ratio: Signal, requests: Signal | None, p: StampedeParams) -> FloatArray | None:
    """Sampling sd of a miss ratio of n requests: sqrt(p0 (1 - p0) / n), p0 the trailing mean.

    At a few requests per sample the ratio moves in steps of 1/n; this keeps one stray miss
    from looking like a stampede. p0 is floored at half a miss per baseline window.
    """
    if requests is None or len(requests.t) != len(ratio.t):
        return None
    step = grid_step(ratio)
    with np.errstate(over="ignore", invalid="ignore"):  # a rate near the float limit: inf
        n = np.maximum(np.nan_to_num(requests.v * step, nan=0.0), 1.0)
    nb = samples(p.baseline, step, minimum=5)
    p0 = np.nan_to_num(trailing_mean(ratio.v, nb), nan=0.0)
    n_window = max(median(n) * nb, 1.0)
    p0 = np.clip(p0, 0.5 / n_window, 0.5)
    return np.sqrt(p0 * (1 - p0) / n)


def _hit_loss(r0: float, r1: float) -> float:
    """The share of the baseline's hits that turned into misses (r0 -> r1)."""
    return (r1 - r0) / (1.0 - r0) if r0 < 1 else 0.0


def _ratio_rose_enough(
    r0: float, r1: float, rise: dict[str, object] | None, p: StampedeParams
) -> bool:
    """A miss ratio `min_factor` x its baseline, or one that lost `min_hit_loss` of its hits
    (a baseline above 0.5 cannot double), or any rise (z and min_ratio_rise already hold)
    that comes with the database p99 at `p99_strong_factor` x its level: a partial stampede
    (0.10 -> 0.18 with p99 x20)."""
    if r1 >= p.min_factor * r0 or _hit_loss(r0, r1) >= p.min_hit_loss:
        return True
    fac = rise.get("factor") if rise is not None else None
    return isinstance(fac, float) and fac >= p.p99_strong_factor


def _load_share(sigs: SignalSet, t0: float, t1: float, p: StampedeParams) -> float | None:
    """Extra cache requests over extra misses during [t0, t1] against the baseline before.

    In a stampede hits turn into misses and the request rate stays put (share ~0); when one
    service of ten surges the extra misses come with extra lookups of their own (share ~1 or
    more) even where the fleet's front-door traffic looks flat. None without both signals.
    """
    req, miss = sigs.get("cache_requests"), sigs.get("cache_misses")
    if req is None or miss is None:
        return None
    step = grid_step(req)
    deltas = []
    for sig in (req, miss):
        # the minute before against the herd's first minute (at least five samples each): an
        # earlier herd in the window stays out of the one, the long tail of reloads (retries,
        # page views resuming) out of the other
        span = max(5 * step, 60.0)
        base = window_values(sig, t0 - span, t0 - step)
        during = window_values(sig, t0, t0 + span)
        if not len(base) or not len(during):
            return None
        deltas.append(median(during) - median(base))
    d_req, d_miss = deltas
    if not d_miss > 0:
        return None
    return max(d_req, 0.0) / d_miss


def _level_txt(what: str, ev: object, unit: str) -> str:
    """`, db p99 0.01s -> 0.5s` from a level's evidence; '' without a peak; a level not
    measured before is said in words, never printed as None."""
    if not isinstance(ev, dict) or ev.get("peak") is None:
        return ""
    before = ev.get("baseline")
    if before is None:
        return f", {what} up to {ev['peak']}{unit} (no level before)"
    return f", {what} {before}{unit} -> {ev['peak']}{unit}"


_CONNECTIONS_NOTE = (
    "the database p99 did not rise (headroom): its load shows as connections in use (Little's "
    "law: in use = query rate x latency)"
)
_MEDIAN_NOTE = (
    "the database p99 did not move (it sits inside one wide histogram bucket before and "
    "during): the median query slowed down"
)


def detect_cache_stampede(sigs: SignalSet, p: StampedeParams) -> list[Finding]:
    ratio = sigs.get("miss_ratio")
    if ratio is None or len(ratio.t) < 5:
        return []
    misses = sigs.get("cache_misses")
    p99 = sigs.get("db_latency_p99")
    p50 = sigs.get("db_latency_p50")
    conns = sigs.get("db_connections")
    traffic = _traffic(sigs)
    step = grid_step(ratio)
    findings: list[Finding] = []
    busy: list[tuple[float, float]] = []  # earlier excursions (their p99 is no baseline)
    for e in find_excursions(
        ratio,
        baseline_s=p.baseline,
        z_enter=p.z_enter,
        min_factor=1.0,  # the factor is checked below, where a strong p99 rise may stand in
        min_delta=p.min_ratio_rise,
        min_duration_s=p.min_duration,
        abs_floor=0.002,
        noise=_binomial_noise(ratio, sigs.get("cache_requests"), p),
    ):
        t0, t1 = float(ratio.t[e.onset]), float(ratio.t[e.end]) + step
        # the p99 of this herd lasts its load time past the miss ratio's end
        tail = float(np.nanmax(window_values(p99, t0, t1), initial=0.0)) if p99 else 0.0
        busy.append((t0 - step, t1 + 2 * step + tail))
        # traffic must stay flat: an upper quantile over the excursion against the baseline
        tr_ratio = None
        if traffic is not None:
            base = window_values(traffic, t0 - p.baseline, t0 - step)
            during = window_values(traffic, t0, max(t1, t0 + 2 * step))
            if len(base) and len(during) and median(base) > 0:
                tr_ratio = quantile(during, 0.75) / median(base)
                if tr_ratio > p.max_traffic_ratio:
                    continue
        load = _load_share(sigs, t0, t1, p)
        if load is not None and load > p.max_load_share:
            continue  # the extra misses came with extra cache requests: load, not expiry
        evidence: dict[str, object] = {
            "miss_ratio": {
                "baseline": rnd(e.baseline),
                "peak": rnd(e.peak_value),
                "onset": t0,
                "z": rnd(e.peak_z),
            },
            "traffic_ratio": rnd(tr_ratio) if tr_ratio is not None else None,
            "traffic_signal": traffic.name if traffic is not None else None,
            "step_seconds": rnd(step),
        }
        severity = "critical"
        involved = ["miss_ratio"]
        if p99 is not None:
            lag = max(p.align_steps * max(step, p99.step), p.align_steps * 1.0)
            peak_lat = np.nanmax(window_values(p99, t0, t1 + lag), initial=0.0)
            rise = _p99_rise(p99, t0, t1, p, lag + float(peak_lat), step, busy[:-1])
            conn_rise = None
            if rise is None and conns is not None:
                # a database with headroom keeps its latency: the load shows as concurrency
                lag_c = max(p.align_steps * max(step, conns.step), p.align_steps * 1.0)
                conn_rise = _p99_rise(conns, t0, t1, p, lag_c + float(peak_lat), step,
                                      busy[:-1], counts=True)  # fmt: skip
            mid_rise = None
            if rise is None and conn_rise is None and p50 is not None:
                # a p99 inside one wide bucket (a client's default 0.1-0.25 s) cannot move when
                # most queries slow down within it; their median crosses buckets
                mid_rise = _p99_rise(p50, t0, t1, p, lag + float(peak_lat), step, busy[:-1])
            if rise is None and conn_rise is None and mid_rise is None:
                continue
            if not _ratio_rose_enough(e.baseline, e.peak_value, rise, p):
                continue
            if rise is not None:
                evidence["db_latency_p99"] = rise
                involved.append("db_latency_p99")
                t1 = max(t1, float(rise["end"]))  # type: ignore[arg-type]
                fac = rise.get("factor")
                if isinstance(fac, float) and fac < 3 and e.peak_value < 0.5:
                    severity = "warning"
            else:
                # the load confirmed by a stand-in for the p99 (module doc): which, and why
                name, stand_in, why = (
                    ("db_connections", conn_rise, _CONNECTIONS_NOTE)
                    if conn_rise is not None
                    else ("db_latency_p50", mid_rise, _MEDIAN_NOTE)
                )
                evidence["db_latency_p99"] = None
                evidence[name] = stand_in
                evidence["note"] = why
                involved.append(name)
                if e.peak_value < 0.5:
                    severity = "warning"
        else:
            if not _ratio_rose_enough(e.baseline, e.peak_value, None, p):
                continue
            evidence["db_latency_p99"] = None
            evidence["note"] = "no database latency histogram: rise of p99 not confirmed"
            severity = "warning"
        evidence["hit_loss"] = rnd(_hit_loss(e.baseline, e.peak_value))
        evidence["load_share"] = rnd(load) if load is not None else None
        if misses is not None:
            base_m = window_values(misses, t0 - p.baseline, t0 - step)
            dur_m = window_values(misses, t0, t1)
            bm = median(base_m) if len(base_m) else 0.0
            excess_m = excess(dur_m, bm) * step
            evidence["misses_per_second"] = {
                "baseline": rnd(bm),
                "peak": rnd(float(np.max(dur_m, initial=0.0))),
            }
            evidence["excess_misses"] = rnd(excess_m)
            involved.append("cache_misses")
        if traffic is not None:
            involved.append(traffic.name)
        evidence["burst_seconds"] = rnd(t1 - t0)
        # the p99 when it confirmed the load, else the stand-in that did
        lat_txt = (
            _level_txt("db p99", evidence.get("db_latency_p99"), "s")
            or _level_txt("db connections in use", evidence.get("db_connections"), "")
            or _level_txt("db p50", evidence.get("db_latency_p50"), "s")
        )
        summary = (
            f"miss ratio {rnd(e.baseline, 2)} -> {rnd(e.peak_value, 2)}{lat_txt} "
            f"while traffic stayed flat (x{rnd(tr_ratio, 2) if tr_ratio else '?'})"
        )
        findings.append(
            Finding("cache_stampede", t0, t1, severity, summary, evidence, signals=tuple(involved))
        )
    return findings


def recommend_cache_stampede(f: Finding) -> list[Recommendation]:
    """What to change for a cache_stampede finding, best first, numbers from its evidence."""
    ev = f.evidence
    load = num(ev, "db_latency_p99", "peak")
    if not math.isfinite(load):
        load = 1.0
    burst = max(num(ev, "burst_seconds", default=1.0), 1.0)
    base_misses = num(ev, "misses_per_second", "baseline", default=0.0)
    excess = num(ev, "excess_misses", default=0.0)
    # spread the keys that expired together so their reloads arrive at the rate the database
    # already serves in the baseline: window = excess reloads / baseline reload rate
    spread = excess / base_misses if base_misses > 0 else 10 * burst
    jitter = nice(max(spread, 2 * burst, 10.0))
    stale = nice(max(3 * burst, 60.0))
    lease = nice(max(3 * load, 1.0))
    return [
        Recommendation(
            "Collapse concurrent loads of one key (one load per key per expiry, fleet-wide)",
            f"Only one caller reloads an expired key; the others wait on a Redis lease (token, "
            f"SET NX PX) and are woken when the value lands. Lease TTL ~3x the observed load "
            f"p99 ({load:g}s). Fenced writes keep a slow loader from overwriting a newer value.",
            f"HerdCache.from_url(url, ttl=TTL, lease_ttl={lease})",
            "herdwatch.cache.Settings.lease_ttl",
        ),
        Recommendation(
            "Add TTL jitter so keys written together do not expire together",
            f"About {excess:.0f} extra misses arrived within {burst:g}s; at the baseline reload "
            f"rate ({base_misses:.3g}/s) they need a window of about {jitter}s. Use a "
            f"deterministic per-key jitter so every node agrees.",
            f"HerdCache.from_url(url, ttl=TTL, ttl_jitter={jitter}, jitter_mode='hash')",
            "herdwatch.cache.Settings.ttl_jitter",
            f"herdwatch mitigate client --redis URL --set ttl_jitter={jitter}",
        ),
        Recommendation(
            "Refresh hot keys early with XFetch (probabilistic early expiration)",
            f"A reader refreshes when now - delta*beta*ln(U) >= expiry; delta is the measured "
            f"load time (p99 {load:g}s here). beta=1.0 is the paper's default; raise to 2 for "
            f"keys whose reload is expensive.",
            "HerdCache.from_url(url, ttl=TTL, xfetch=True, beta=1.0)",
            "herdwatch.cache.Settings.xfetch / beta",
        ),
        Recommendation(
            "Serve stale while revalidating, and stale on loader errors",
            f"Callers get the current value while one background refresh runs; if the database "
            f"fails they get data up to max_stale old instead of an error (RFC 5861). "
            f"max_stale of {stale}s (3x this burst) covers a repeat.",
            f"HerdCache.from_url(url, ttl=TTL, stale_while_revalidate={stale}, max_stale={stale})",
            "herdwatch.cache.Settings.stale_while_revalidate / max_stale",
        ),
    ]
