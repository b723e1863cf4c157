"""ttl_cliff: a large share of the sampled keys will expire inside one narrow window (a forecast).

The null model is "spread". Keys written at a steady rate with TTL T have remaining TTLs uniform
on (0, T]; any mix of TTLs (and of jitter) gives a mix of such uniforms, whose density is
non-increasing in the remaining TTL. So the spread that best explains the sample is the
Grenander estimate: the least concave majorant G of the empirical distribution of the TTLs
(for keys that all share one TTL it is the uniform over (0, max TTL]). A cliff is a bump that
no non-increasing density explains.

Scan statistic: every window [t_i, t_i + w] that starts at a sampled TTL, for widths doubling
from `min_width` up to `max_width` x the TTL range, is tested with the binomial tail
P(X >= K), X ~ Bin(n, q), q = G(t_i + w) - G(t_i); the p-value is Bonferroni-corrected by the
number of windows, sum over w of range / w. A cliff must also hold `min_share` of the keys and
`min_factor` times what the spread puts there. Cliffs are found strongest first, never share
keys, and cliffs closer than the widest window are reported as one.

Sliding TTLs (re-armed on every access) also bunch just under the full TTL, and one sample
cannot tell them from a batch written a moment ago. Two samples can: a cliff's keys expire at
a fixed time, so an earlier sample finds them `d` seconds further away, while a re-armed bunch
stays at the same remaining TTLs as the clock moves and its keys never reach their expiry. A
cliff of the latest sample is dropped as re-armed when the sample of the same Redis taken `d`
seconds before it (the oldest one with the tested width < d <= the window's start: the longer
apart, the more of a re-armed bunch has been touched since) held a bunch at the same remaining
TTLs (at least `min_share` of its keys, `min_factor` x the spread's share there) and the
latest sample holds less than 1/`min_factor` of that where the earlier bunch would now be if it
were waiting to expire. Without such a sample the cliff stands (a one-shot scan takes one at
the start and one at the end of its `--duration`).
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from herdwatch.detect._common import nice, num, rnd
from herdwatch.model import Finding, FloatArray, KeyExpirySample, Recommendation
from herdwatch.signals import SignalSet

__all__ = ["TtlCliffEvidence", "TtlCliffParams", "detect_ttl_cliff", "recommend_ttl_cliff"]

_MAX_PATTERNS = 10
#: the longest TTL Redis can hold (PTTL is a signed 64-bit count of milliseconds); a longer one
#: is no sample of a real key, and near the float limit the window arithmetic would overflow
_MAX_TTL = (2**63 - 1) / 1000


@dataclass(frozen=True, slots=True)
class TtlCliffParams:
    min_keys: int = 20
    min_count: int = 10
    min_share: float = 0.2
    min_factor: float = 5.0
    alpha: float = 0.001
    min_width: float = 1.0
    max_width: float = 0.01
    max_cliffs: int = 3


@dataclass(frozen=True, slots=True)
class _Cliff:
    first: int
    last: int
    width: float
    expected_share: float
    log_p: float


class ExpiryWindow(TypedDict):
    start: float
    end: float
    seconds: float | None
    ttl_from: float | None
    ttl_to: float | None
    tested_width: float | None


class PatternCount(TypedDict):
    pattern: str
    count: int


class EarlierSample(TypedDict):
    """The sample that told a cliff from a re-armed bunch: `share_same_expiry`, its keys that
    expire inside the cliff's window (the cliff already waiting then); `share_same_ttls`, its
    keys with the cliff's remaining TTLs (a bunch moving with the clock); and
    `share_now_where_they_were`, the latest sample's keys where those would now be if they
    were waiting to expire."""

    taken_at: float
    seconds_before: float | None
    share_same_expiry: float | None
    share_same_ttls: float | None
    share_now_where_they_were: float | None


class TtlCliffEvidence(TypedDict):
    """A ttl_cliff finding's evidence (JSON-ready; the keys are the contract)."""

    source: str
    taken_at: float
    window: ExpiryWindow
    share: float | None
    count: int
    with_ttl: int
    sampled: int
    share_of_sampled: float | None
    expected_share: float | None
    factor: float | None
    p_value: float | None
    log10_p_value: float | None
    windows_tested: int
    patterns: list[PatternCount]
    other_patterns: int
    keys_total: int
    keys_expiring_estimate: int
    ttl_range_seconds: float | None
    max_window_seconds: float | None
    min_share: float
    earlier_sample: EarlierSample | None


class _Spread:
    """G(x): the share of keys the best non-increasing TTL density expires within x seconds
    (least concave majorant of the empirical CDF through (0, 0); module doc)."""

    def __init__(self, t: FloatArray) -> None:
        n = len(t)
        # the CDF at each distinct TTL is the share of keys up to and including it
        xs, last = np.unique(t[::-1], return_index=True)
        ys = (n - last) / n
        hx: list[float] = [0.0]
        hy: list[float] = [0.0]
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            # drop hull points that fall under the chord to the new point (monotone chain)
            while len(hx) >= 2 and (hy[-1] - hy[-2]) * (x - hx[-2]) <= (y - hy[-2]) * (
                hx[-1] - hx[-2]
            ):
                hx.pop()
                hy.pop()
            hx.append(x)
            hy.append(y)
        self.x = np.array(hx)
        self.y = np.array(hy)
        self.range = float(xs[-1])

    def cdf(self, x: FloatArray) -> FloatArray:
        out: FloatArray = np.interp(x, self.x, self.y, left=0.0, right=1.0)
        return out


def _log_tail(k: npt.NDArray[np.int_], n: int, q: FloatArray) -> FloatArray:
    """log P(X >= k), X ~ Bin(n, q). Far in the tail, where the exact value underflows, the
    first term bounds it: pmf(k) <= P(X >= k) <= pmf(k) / (1 - r), r = (n-k) q / ((k+1)(1-q))."""
    from scipy import stats  # ~0.6 s to import: only when this test runs

    q = np.clip(q, 1e-300, 1.0)
    out: FloatArray = np.asarray(stats.binom.logsf(k - 1, n, q), dtype=np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        kb, qb = k[bad], q[bad]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (n - kb) * qb / ((kb + 1) * np.maximum(1 - qb, 1e-300))
        out[bad] = stats.binom.logpmf(kb, n, qb) - np.log1p(-np.minimum(r, 0.5))
    return out


def _widths(rng: float, p: TtlCliffParams) -> list[float]:
    top = max(p.min_width, p.max_width * rng)
    out = []
    w = p.min_width
    while w < top * (1 - 1e-9):
        out.append(w)
        w *= 2
    out.append(top)
    return out


def _find(t: FloatArray, null: _Spread, p: TtlCliffParams) -> tuple[list[_Cliff], float]:
    n = len(t)
    widths = _widths(null.range, p)
    n_tests = sum(max(1.0, null.range / w) for w in widths)
    log_alpha = math.log(p.alpha) - math.log(n_tests)
    need = max(p.min_count, math.ceil(p.min_share * n))
    taken: npt.NDArray[np.bool_] = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    cliffs: list[_Cliff] = []
    # search past max_cliffs: pieces of one wave merge below, then the strongest are kept
    while len(cliffs) < 4 * p.max_cliffs:
        ctaken = np.concatenate([[0], np.cumsum(taken)])
        best: _Cliff | None = None
        for w in widths:
            ends = np.searchsorted(t, t + w, side="right")
            k = ends - idx
            ok = (k >= need) & ((ctaken[ends] - ctaken[idx]) == 0)
            if not ok.any():
                continue
            i = idx[ok]
            q = null.cdf(t[i] + w) - null.cdf(t[i])
            kk = k[ok]
            with np.errstate(divide="ignore"):
                strong = kk >= p.min_factor * n * q
            if not strong.any():
                continue
            i, q, kk = i[strong], q[strong], kk[strong]
            log_p = _log_tail(kk, n, q)
            j = int(np.lexsort((-kk, log_p))[0])  # smallest p, then the most keys
            if best is None or log_p[j] < best.log_p:
                best = _Cliff(int(i[j]), int(i[j] + kk[j] - 1), w, float(q[j]), float(log_p[j]))
        if best is None or best.log_p >= log_alpha:
            break
        cliffs.append(best)
        taken[best.first : best.last + 1] = True
    return _merge(cliffs, t, null, p, widths[-1])[: p.max_cliffs], n_tests


def _merge(
    cliffs: list[_Cliff], t: FloatArray, null: _Spread, p: TtlCliffParams, gap: float
) -> list[_Cliff]:
    """Cliffs less than `gap` apart are one cliff (one wave of expiries cut into windows)."""
    n = len(t)
    out: list[_Cliff] = []
    for c in sorted(cliffs, key=lambda c: c.first):
        if not out or t[c.first] - t[out[-1].last] > gap:
            out.append(c)
            continue
        first, last = out[-1].first, c.last
        a = float(t[first])
        b = max(float(t[last]), a + p.min_width)
        q = float(null.cdf(np.array([b]))[0] - null.cdf(np.array([a]))[0])
        log_p = float(_log_tail(np.array([last - first + 1]), n, np.array([q]))[0])
        out[-1] = _Cliff(first, last, b - a, q, log_p)
    return sorted(out, key=lambda c: c.log_p)


def _finding(
    s: KeyExpirySample,
    t: FloatArray,
    pats: list[str],
    c: _Cliff,
    n_tests: float,
    p: TtlCliffParams,
    rng: float,
    earlier: EarlierSample | None,
) -> Finding:
    n = len(t)
    count = c.last - c.first + 1
    share = count / n
    t0, t1 = float(t[c.first]), float(t[c.last])
    in_window = Counter(pats[c.first : c.last + 1]).most_common()
    patterns: list[PatternCount] = [
        {"pattern": k, "count": v} for k, v in in_window[:_MAX_PATTERNS]
    ]
    p_log10 = (c.log_p + math.log(n_tests)) / math.log(10)
    p_corr = 10**p_log10 if p_log10 > -300 else 0.0
    estimate = round(count / s.sampled * s.keys_total) if s.sampled else count
    evidence: TtlCliffEvidence = {
        "source": s.source,
        "taken_at": s.taken_at,
        "window": {
            "start": s.taken_at + t0,
            "end": s.taken_at + t1,
            "seconds": rnd(t1 - t0),
            "ttl_from": rnd(t0, 6),
            "ttl_to": rnd(t1, 6),
            "tested_width": rnd(c.width),
        },
        "share": rnd(share),
        "count": count,
        "with_ttl": n,
        "sampled": s.sampled,
        "share_of_sampled": rnd(count / s.sampled) if s.sampled else None,
        "expected_share": rnd(c.expected_share),
        "factor": rnd(share / c.expected_share) if c.expected_share > 0 else None,
        "p_value": rnd(min(1.0, p_corr)),
        "log10_p_value": rnd(min(0.0, p_log10)),
        "windows_tested": round(n_tests),
        "patterns": patterns,
        "other_patterns": len(in_window) - len(patterns),
        "keys_total": s.keys_total,
        "keys_expiring_estimate": estimate,
        "ttl_range_seconds": rnd(rng),
        "max_window_seconds": rnd(max(p.min_width, p.max_width * rng)),
        "min_share": p.min_share,
        "earlier_sample": earlier,
    }
    names = ", ".join(f"{x['pattern']} ({x['count']})" for x in patterns[:3])
    span = f"{t1 - t0:.3g}s" if t1 - t0 >= 0.001 else "the same instant"
    summary = (
        f"{share:.0%} of sampled keys with a TTL ({count}/{n}, ~{estimate} of {s.keys_total} "
        f"keys) expire within {span}, {t0:.0f}s after the sample; {names}"
    )
    return Finding(
        "ttl_cliff",
        s.taken_at + t0,
        s.taken_at + t1,
        "critical" if share >= 0.5 else "warning",
        summary,
        dict(evidence),
        subject=(("source", s.source),),  # one sample per Redis: the server whose keys expire
    )


def _by_source(samples: list[KeyExpirySample]) -> list[list[KeyExpirySample]]:
    """Each Redis's samples, oldest first."""
    by_source: dict[str, list[KeyExpirySample]] = {}
    for s in samples:
        by_source.setdefault(s.source, []).append(s)
    return [sorted(v, key=lambda s: s.taken_at) for v in by_source.values()]


def _valid(s: KeyExpirySample) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """The sample's usable TTLs, sorted, and their indexes in `s.ttls`."""
    ttls = np.asarray(s.ttls, dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(ttls) & (ttls > 0) & (ttls <= _MAX_TTL))
    order = np.argsort(ttls[keep], kind="stable")
    return ttls[keep][order], keep[order]


def _share(t: FloatArray, lo: float, hi: float) -> float:
    """The share of the sorted TTLs `t` in [lo, hi]."""
    k = np.searchsorted(t, hi, side="right") - np.searchsorted(t, lo, side="left")
    return float(k) / len(t) if len(t) else 0.0


def _earlier(
    history: list[KeyExpirySample],
    last: KeyExpirySample,
    t: FloatArray,
    c: _Cliff,
    p: TtlCliffParams,
) -> tuple[EarlierSample | None, bool]:
    """The earlier sample that tells the cliff from a re-armed bunch (module doc), and whether
    the bunch was re-armed."""
    # the window at least as wide as the one tested: two samples' clocks differ by the time
    # their PTTLs took, and a batch written in one pipeline fits in milliseconds
    pad = max(0.0, c.width - (float(t[c.last]) - float(t[c.first]))) / 2
    t0, t1 = float(t[c.first]) - pad, float(t[c.last]) + pad
    for e in history:  # oldest first: the longer apart, the more re-armed keys have moved
        d = last.taken_at - e.taken_at
        if not (t1 - t0 < d <= t0):
            continue
        te, _ = _valid(e)
        if not len(te):
            continue
        same = _share(te, t0, t1)
        now = _share(t, t0 - d, t1 - d)
        seen: EarlierSample = {
            "taken_at": e.taken_at,
            "seconds_before": rnd(d),
            "share_same_expiry": rnd(_share(te, t0 + d, t1 + d)),
            "share_same_ttls": rnd(same),
            "share_now_where_they_were": rnd(now),
        }
        bunch = same >= max(p.min_share, p.min_factor * c.expected_share)
        return seen, bunch and now * p.min_factor < same
    return None, False


def detect_ttl_cliff(sigs: SignalSet, p: TtlCliffParams) -> list[Finding]:
    out: list[Finding] = []
    for samples in _by_source(sigs.key_expiry):
        s = samples[-1]
        t, idx = _valid(s)
        if len(t) < max(p.min_keys, 2):
            continue
        names = s.patterns if len(s.patterns) == len(s.ttls) else ("?",) * len(s.ttls)
        pats = [names[i] for i in idx]
        null = _Spread(t)
        cliffs, n_tests = _find(t, null, p)
        for c in cliffs:
            earlier, re_armed = _earlier(samples[:-1], s, t, c, p)
            if not re_armed:
                out.append(_finding(s, t, pats, c, n_tests, p, null.range, earlier))
    return out


def _redis_url(source: object) -> str:
    """The Redis URL in a source name (`redis redis://host:6379/0`), for a command to paste;
    `URL` when there is none or its password was redacted."""
    for word in str(source or "").split():
        if word.startswith(("redis://", "rediss://", "unix://")) and "***" not in word:
            return shlex.quote(word)
    return "URL"


def recommend_ttl_cliff(f: Finding) -> list[Recommendation]:
    """What to change for a ttl_cliff finding, best first, numbers from its evidence."""
    ev = f.evidence
    rng = max(num(ev, "ttl_range_seconds", default=3600.0), 1.0)
    widest = num(ev, "max_window_seconds", default=0.01 * rng)
    share = num(ev, "min_share", default=0.2)
    keys = int(num(ev, "keys_expiring_estimate", default=num(ev, "count", default=0.0)))
    seconds = max(num(ev, "window", "seconds", default=1.0), 0.001)
    # Spread over J, no window of the widest tested width holds min_share of the keys: J >=
    # widest / min_share; twice that, and at least 10 % of the TTL (the usual advice).
    jitter = nice(max(0.1 * rng, 2 * widest / share if share > 0 else 0.1 * rng, 1.0))
    pats = ev.get("patterns") if isinstance(ev.get("patterns"), list) else []
    pattern = str(pats[0].get("pattern", "*")) if pats and isinstance(pats[0], dict) else "*"
    rate = keys / jitter
    url = _redis_url(ev.get("source"))
    return [
        Recommendation(
            "Re-spread the TTLs of the keys in the cliff now, before the window",
            f"About {keys} keys ({pattern} first) expire within {seconds:.3g}s. Add a per-key "
            f"offset in [0, {jitter}s) to each one's remaining TTL (PEXPIRE key PTTL+offset, a "
            f"pipeline per SCAN batch): about {rate:.3g} expiries/s instead of one wave.",
            f"redis-cli --scan --pattern '{pattern}' | while read -r k; do "
            f'redis-cli PEXPIRE "$k" $(( $(redis-cli PTTL "$k") + RANDOM * {jitter} * 1000 '
            f"/ 32768 )) >/dev/null; done",
            "Redis PEXPIRE (TTL re-spread)",
            f"herdwatch mitigate ttl-spread --redis {url} --match {shlex.quote(pattern)} "
            f"--spread {jitter}s",
        ),
        Recommendation(
            "Add TTL jitter where these keys are written, so they never line up again",
            f"Keys written together (a warm-up, a restart, a bulk load) with one TTL expire "
            f"together. Expire each over [ttl, ttl + {jitter}s); a hash of the key as the "
            f"offset keeps every node in agreement.",
            f"HerdCache.from_url(url, ttl=TTL, ttl_jitter={jitter}, jitter_mode='hash')",
            "herdwatch.cache.Settings.ttl_jitter",
            f"herdwatch mitigate client --redis {url} --set ttl_jitter={jitter}",
        ),
        Recommendation(
            "Refresh early and serve stale while one caller reloads",
            "If the wave comes anyway, XFetch refreshes hot keys before they expire and "
            "stale-while-revalidate answers readers from the old value for up to 60s while "
            "one caller reloads it.",
            "HerdCache.from_url(url, ttl=TTL, xfetch=True, beta=1.0, stale_while_revalidate=60)",
            "herdwatch.cache.Settings.xfetch / stale_while_revalidate",
        ),
    ]
