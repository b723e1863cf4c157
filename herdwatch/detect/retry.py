"""retry_storm: after an upstream outage, the request rate to it overshoots on recovery."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from herdwatch.detect._common import excess, grid_step, median, nice, num, rnd
from herdwatch.detect._stats import samples, trailing_baseline
from herdwatch.model import Finding, FloatArray, Recommendation, Signal
from herdwatch.signals import SignalSet

__all__ = ["RetryParams", "RetryStormEvidence", "detect_retry_storm", "recommend_retry_storm"]


@dataclass(frozen=True, slots=True)
class RetryParams:
    baseline: float = 300.0
    outage_fraction: float = 0.5
    error_share: float = 0.5
    overshoot_factor: float = 3.0
    overshoot_window: float = 120.0
    z_enter: float = 6.0


class RequestRates(TypedDict):
    baseline: float | None
    peak: float | None
    factor: float | None
    z: float | None


class Outage(TypedDict):
    start: float
    end: float
    seconds: float | None


class RetryStormEvidence(TypedDict):
    """A retry_storm finding's evidence (JSON-ready; the keys are the contract)."""

    peer: str
    requests_per_second: RequestRates
    outage: Outage
    overshoot_seconds: float | None
    excess_requests: float | None


def _rolling_sum(x: FloatArray, w: int) -> FloatArray:
    """Centred sum over w samples, NaN counted as 0."""
    if w <= 1:
        return np.nan_to_num(x, nan=0.0)
    with np.errstate(over="ignore"):  # a sum past a value near the float limit is inf
        c = np.concatenate([[0.0], np.cumsum(np.nan_to_num(x, nan=0.0))])
    n = len(x)
    lo = np.clip(np.arange(n) - w // 2, 0, n)
    hi = np.clip(lo + w, 0, n)
    with np.errstate(invalid="ignore"):  # inf - inf: unknown, NaN
        out: FloatArray = c[hi] - c[lo]
    return out


def _poisson_cdf_below_mean(k: float, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu) and k below the mean, as scipy.stats.poisson.cdf gives it.

    Summed downward from floor(k): below the mean each term is at most k/mu of the one above,
    so the sum stops after a few dozen terms (k <= outage_fraction * mu) whatever mu is. Only
    when k is within a whisker of a huge mean (more than 10,000 terms) is the normal
    approximation used, which is exact enough there.
    """
    if not k >= 0:  # negative, -inf (a broken counter's rate)
        return 0.0
    j = math.floor(k)
    if not mu > 0:
        return 1.0
    if mu > 1e6:
        # past a million expected events the normal approximation is exact to many digits
        # (and lgamma of counts near the float limit overflows)
        return 0.5 * math.erfc(-(j + 0.5 - mu) / math.sqrt(2 * mu))
    log_mu = math.log(mu)
    terms = []
    while j >= 0:
        term = math.exp(j * log_mu - mu - math.lgamma(j + 1))
        terms.append(term)
        if term == 0.0 or term < 1e-17 * terms[0]:
            break
        if len(terms) > 10_000:
            return 0.5 * math.erfc(-(math.floor(k) + 0.5 - mu) / math.sqrt(2 * mu))
        j -= 1
    return min(1.0, math.fsum(terms))


def _pool_width(base_ok: FloatArray, step: float, n: int) -> int:
    """Samples pooled so that the healthy baseline expects about 20 successes."""
    level = median(base_ok) if np.isfinite(base_ok).any() else 0.0
    return int(np.clip(np.ceil(20.0 / max(level * step, 1e-9)), 1, max(n // 20, 1)))


def _outages(
    ok: FloatArray,
    err: FloatArray | None,
    base_ok: FloatArray,
    step: float,
    w: int,
    p: RetryParams,
) -> npt.NDArray[np.bool_]:
    """Samples where the upstream is down: successes collapse or errors win.

    Counts are pooled over w samples (see `_pool_width`); a collapse must also be improbable
    under Poisson (cdf < 0.001), so a quiet second at 2 req/s is not an outage. `err` holds the
    failures that say the upstream is down: rate-limited answers (429) are not among them, a
    limiter that sheds a client's surge is up. `base_ok` may be one level frozen at an
    outage's start, so an outage longer than the baseline window is not learnt as normal.
    """
    # rates near the float limit overflow to inf when turned into counts: a broken counter,
    # compared like any other (inf is no outage; inf / inf is NaN, never an error share)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ok_w = _rolling_sum(ok * step, w)
        base_w = np.nan_to_num(base_ok, nan=0.0) * step * w
        low = np.flatnonzero((ok_w < p.outage_fraction * base_w) & np.isfinite(base_w))
        down = np.zeros(len(ok_w), dtype=bool)
        # P(X <= k) for X ~ Poisson(base_w), only where successes fell (few samples)
        down[low] = [_poisson_cdf_below_mean(ok_w[i], float(base_w[i])) < 1e-3 for i in low]
        if err is not None:
            err_w = _rolling_sum(err * step, w)
            total = ok_w + err_w
            down |= (total > 0) & (err_w / np.where(total > 0, total, 1) >= p.error_share)
    mask: npt.NDArray[np.bool_] = down & np.isfinite(ok)
    return _through_gaps(mask, ok)


def _recovery(
    ok: FloatArray,
    fail: FloatArray | None,
    s: int,
    b_ok: float,
    step: float,
    w: int,
    p: RetryParams,
) -> int | None:
    """The first sample after the outage starting at s whose successes are back against the
    level frozen before it (`b_ok`); None if they never are. Read in slices that double, so
    the cost is the outage's length, not the recording's."""
    n = len(ok)
    span = max(4 * w, 64)
    lo = max(0, s - w)
    while True:
        hi = min(n, s + span)
        seg_fail = fail[lo:hi] if fail is not None else None
        down = _outages(ok[lo:hi], seg_fail, np.full(hi - lo, b_ok), step, w, p)
        back = np.flatnonzero(~down[s - lo + 1 :])
        # a slice's last w samples pool fewer samples than w: read them again in a longer one
        if len(back) and (s + 1 + int(back[0]) + w < hi or hi == n):
            return s + 1 + int(back[0])
        if hi == n:
            return None
        span *= 2


def _through_gaps(down: npt.NDArray[np.bool_], ok: FloatArray) -> npt.NDArray[np.bool_]:
    """An outage that the series stops reporting during (the client's counters absent, its
    scrapes failing) lasts through the gap: a sample without data keeps the state of the last
    sample with data, so the recovery is the first sample with data and successes back."""
    known = np.isfinite(ok)
    if known.all() or not known.any():
        return down
    idx = np.where(known, np.arange(len(ok)), -1)
    last = np.maximum.accumulate(idx)
    out = down.copy()
    gap = ~known & (last >= 0)
    out[gap] = down[last[gap]]
    return out


def _peer_storms(
    peer: str, tot: Signal, err: Signal | None, throttled: Signal | None, p: RetryParams
) -> list[Finding]:
    x, t, step = tot.v, tot.t, grid_step(tot)
    e = err.v if err is not None else None
    # a broken counter's rate near the float limit overflows a difference (inf) or meets an
    # infinity (NaN): unknown, which every comparison below reads as "not that"
    with np.errstate(over="ignore", invalid="ignore"):
        ok = x - e if e is not None else x
    # a rate-limited answer is no sign of an outage: only the other failures count as such
    fail = e if e is None or throttled is None else np.maximum(e - throttled.v, 0.0)
    nb = samples(p.baseline, step, minimum=5)
    out: list[Finding] = []
    n = len(x)
    base_ok, _ = trailing_baseline(np.where(np.isfinite(ok), ok, np.nan), nb)
    base_tot, sc_tot = trailing_baseline(x, nb)
    w = _pool_width(base_ok, step, n)
    down = _outages(ok, fail, base_ok, step, w, p)
    i = 0
    while i < n:
        hits = np.flatnonzero(down[i:])
        if len(hits) == 0:
            break
        s = i + int(hits[0])
        # the healthy level is frozen as it was before the outage began, and the outage lasts
        # until successes are back against that level, however long it takes (a trailing
        # baseline would learn a long outage as the new normal and end it early)
        b_ok, b_tot = float(base_ok[s]), float(base_tot[s])
        scale = max(float(sc_tot[s]), 0.05 * b_tot, math.sqrt(max(b_tot, 1e-9) / step), 1e-9)
        rec = _recovery(ok, fail, s, b_ok, step, w, p)
        if rec is None:
            break
        r = rec
        i = r + 1
        if s < 3 or not (b_ok > 0 and b_tot > 0):
            continue
        # the overshoot is looked for from the outage start (the pooled mask blurs the edges) in
        # samples whose successes are back: a retry wave against a dead upstream is the outage
        w_end = float(t[r]) + max(p.overshoot_window, 4 * step)
        with np.errstate(invalid="ignore"):
            healthy = ok >= p.outage_fraction * b_ok
        win = (t >= t[s]) & (t <= w_end) & np.isfinite(x) & healthy
        seg = x[win]
        if len(seg) == 0:
            continue
        peak = float(np.max(seg))
        factor = peak / b_tot
        z = (peak - b_tot) / scale
        if factor < p.overshoot_factor or z < p.z_enter:
            continue
        # onset: the first sample of the overshoot, not before the recovery
        thr = b_tot + max(3 * scale, 0.5 * (p.overshoot_factor - 1) * b_tot)
        over = np.flatnonzero(win & (x > thr))
        onset_i = int(over[0]) if len(over) else r
        end_i = onset_i
        while end_i + 1 < n and (not np.isfinite(x[end_i + 1]) or x[end_i + 1] > thr):
            end_i += 1
        evidence: RetryStormEvidence = {
            "peer": peer,
            "requests_per_second": {
                "baseline": rnd(b_tot),
                "peak": rnd(peak),
                "factor": rnd(factor),
                "z": rnd(z),
            },
            "outage": {
                "start": float(t[s]),
                "end": float(t[r]),
                "seconds": rnd(float(t[r] - t[s])),
            },
            "overshoot_seconds": rnd(float(t[end_i] - t[onset_i]) + step),
            "excess_requests": rnd(excess(x[onset_i : end_i + 1], b_tot) * step),
        }
        sev = "critical" if factor >= 2 * p.overshoot_factor else "warning"
        summary = (
            f"requests to {peer or 'upstream'} x{rnd(factor, 2)} "
            f"({rnd(b_tot, 3)}/s -> {rnd(peak, 3)}/s) on recovery from a "
            f"{rnd(float(t[r] - t[s]), 3)}s outage"
        )
        out.append(
            Finding(
                "retry_storm",
                float(t[onset_i]),
                float(t[end_i]) + step,
                sev,
                summary,
                dict(evidence),
                signals=("upstream_requests",),
                # the group is named by the peer label's value; which label that was (peer,
                # upstream, server_address...) the signal does not say
                subject=(("peer", peer),) if peer and peer != "all" else (),
            )
        )
        i = end_i + 1
    return out


def detect_retry_storm(sigs: SignalSet, p: RetryParams) -> list[Finding]:
    groups = sigs.groups.get("upstream_requests", {})
    out: list[Finding] = []
    for peer, tot in groups.items():
        if "#" in peer or len(tot.t) < 5:
            continue
        err = groups.get(peer + "#errors")
        out += _peer_storms(peer, tot, err, groups.get(peer + "#throttled"), p)
    return sorted(out, key=lambda f: f.onset)


def recommend_retry_storm(f: Finding) -> list[Recommendation]:
    """What to change for a retry_storm finding, best first, numbers from its evidence."""
    ev = f.evidence
    base = num(ev, "requests_per_second", "baseline", default=1.0)
    outage = max(num(ev, "outage", "seconds", default=10.0), 1.0)
    cap = nice(max(outage, 10.0))
    return [
        Recommendation(
            "Back off with full jitter, capped near the outage length",
            f"Retries came back as one wave after a {outage:g}s outage. Full jitter "
            f"U(0, min(cap, base*2^n)) with cap ~{cap}s spreads them over the cap.",
            f"HerdCache.from_url(url, retries=3, backoff_mode='full', backoff_base=0.1, "
            f"backoff_cap={cap})",
            "herdwatch.cache.Backoff",
        ),
        Recommendation(
            "Add a retry budget",
            f"Allow retries up to ~10% of the healthy rate ({base:.3g}/s): at most "
            f"{max(base * 0.1, 1):.3g} retries/s, so a recovery never sees a multiple of its load.",
            "HerdCache.from_url(url, retry_budget_ratio=0.1)  # or RetryBudget(ratio=0.1)",
            "herdwatch.cache.RetryBudget",
        ),
        Recommendation(
            "Open a circuit breaker during the outage and probe in half-open",
            "Callers fail fast (or get stale data) while the upstream is down, and only a few "
            "probes go through on recovery.",
            f"HerdCache.from_url(url, breaker_failures=5, breaker_reset={cap})",
            "herdwatch.cache.CircuitBreaker",
        ),
        Recommendation(
            "Rate-limit the upstream's clients at its healthy capacity",
            f"A token bucket at about {base * 1.5:.3g}/s (1.5x healthy) answers 429 to the excess.",
            f"HerdCache.from_url(url, load_rate={base * 1.5:.3g}, "
            f"load_burst={max(int(base * 1.5), 1)})",
            "herdwatch.cache.TokenBucket",
        ),
    ]
