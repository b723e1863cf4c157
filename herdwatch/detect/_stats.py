"""Statistics shared by the detectors: robust trailing baselines, excursions, scan tests.

Everything is scale-free: thresholds are robust z-scores (median/MAD, MAD scaled to a normal
sigma) and ratios to the baseline, and durations are seconds turned into samples by the grid
step, so the same rule works at 1 s and at 60 s resolution and at 10 or 10,000 req/s.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from herdwatch.detect._rolling import median_filter
from herdwatch.model import FloatArray, Signal

__all__ = [
    "Excursion",
    "PoissonCluster",
    "binom_sf",
    "fill_nan",
    "find_excursions",
    "poisson_clusters",
    "poisson_sf",
    "rayleigh",
    "robust_level",
    "samples",
    "trailing_baseline",
    "trailing_level",
    "trailing_mean",
]

MAD_TO_SIGMA = 1.4826


def samples(seconds: float, step: float, minimum: int = 1) -> int:
    """How many grid samples cover `seconds` (at least `minimum`)."""
    n = seconds / step if step > 0 and math.isfinite(step) else math.nan
    if not math.isfinite(n):
        return minimum  # no step (a signal of one sample) or no duration: nothing to cover
    return max(minimum, round(n))


# Scalar tails computed here rather than with scipy.stats, whose import (~0.6 s) would dominate
# a scan of a recorded incident; tests hold them to scipy.stats.


def binom_sf(k: int, n: int, q: float) -> float:
    """P(X >= k), X ~ Binomial(n, q): the sum of the pmf from k to n, each term in log space."""
    if k <= 0:
        return 1.0
    if k > n or q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lq, lr = math.log(q), math.log1p(-q)
    base = math.lgamma(n + 1)
    terms = [
        math.exp(base - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lq + (n - j) * lr)
        for j in range(k, n + 1)
    ]
    return min(1.0, math.fsum(terms))


#: above this mean `poisson_sf` uses the normal approximation
POISSON_NORMAL_ABOVE = 1e5


def poisson_sf(k: int, mu: float) -> float:
    """P(X >= k), X ~ Poisson(mu). Above the mean the upper tail is summed term by term until
    the terms no longer count (they fall geometrically); below it, 1 - P(X < k)."""
    if k <= 0:
        return 1.0
    if not mu > 0.0:
        return 0.0

    if mu > POISSON_NORMAL_ABOVE:
        # term by term would take ~sqrt(mu) terms (or k of them): the normal approximation
        # with continuity correction is exact to far better than any threshold here
        return 0.5 * math.erfc((k - 0.5 - mu) / math.sqrt(2.0 * mu))

    def pmf(j: int) -> float:
        return math.exp(j * math.log(mu) - mu - math.lgamma(j + 1))

    if k <= mu:
        return max(0.0, 1.0 - math.fsum(pmf(j) for j in range(k)))
    terms = []
    j = k
    while True:
        t = pmf(j)
        terms.append(t)
        if t == 0.0 or t < 1e-17 * terms[0]:
            break
        j += 1
    return min(1.0, math.fsum(terms))


def fill_nan(x: FloatArray) -> FloatArray:
    """Forward-fill NaN (leading NaN take the first finite value); all-NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x.copy()
    idx = np.where(ok, np.arange(len(x)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    first = int(np.argmax(ok))
    out[:first] = x[first]
    return out


def robust_level(x: FloatArray) -> tuple[float, float]:
    """(median, MAD * 1.4826) of non-empty, finite x; inf where values near the float limit
    overflow them (see _common), without a warning."""
    with np.errstate(over="ignore", invalid="ignore"):
        b = float(np.median(x))
        return b, float(np.median(np.abs(x - b))) * MAD_TO_SIGMA


def trailing_baseline(x: FloatArray, n: int) -> tuple[FloatArray, FloatArray]:
    """Robust level and spread of the `n` samples before each point: (median, MAD * 1.4826).

    Only the past is used: the first points see the (shorter) window of samples before them,
    and the first three, which have too little past, are NaN.
    """
    med, spread = trailing_level(x, n)
    return med, spread()


def trailing_level(x: FloatArray, n: int) -> tuple[FloatArray, Callable[[], FloatArray]]:
    """`trailing_baseline` in two halves: the median now, and a function that returns the
    spread (MAD * 1.4826) when called, the same values as `trailing_baseline`'s.

    A caller that can tell from the level alone that it needs no spread (no sample passes a
    factor of the baseline) skips the costlier half: the deviations' rolling and prefix medians.
    """
    xf = fill_nan(x)
    m = len(xf)
    if m == 0 or not np.isfinite(xf).any():
        nan = np.full(m, np.nan)
        return nan, nan.copy
    # Values near the float limit (a broken exporter's 1e308) overflow a median of two or a
    # deviation to inf: an infinitely far level is the right reading, and every comparison
    # downstream is made with isfinite or against NaN, so the overflow is not warned about.
    with np.errstate(over="ignore", invalid="ignore"):
        med, spread = _trailing_level(xf, n)

    def quiet_spread() -> FloatArray:
        with np.errstate(over="ignore", invalid="ignore"):
            return spread()

    return med, quiet_spread


#: at most this many points past the expanding part take their rolling median one partition
#: each instead of a rolling filter over the whole array (a baseline as long as the window)
_FEW_ROLLING = 8


def _trailing_level(xf: FloatArray, n: int) -> tuple[FloatArray, Callable[[], FloatArray]]:
    m = len(xf)
    n = max(3, min(n, m))
    h = n // 2
    # centred at j covers [j-h, j-h+n-1]; the window ending at k-1 is centred at j = k-n+h
    j = np.arange(m) - n + h
    # Before a full window exists (k < end), an expanding window of the past. It is exact for
    # the first 32 points and then evaluated every k/16 points (held in between): the median of
    # a growing window barely moves, and this keeps a 30-minute baseline at 1 s to ~100 medians.
    # From `end` on, the rolling window of the n samples before k, which lies inside the data
    # (k - n >= 0): its median is that of the centred filter at j[k], edges never involved.
    end = min(n, m)
    ks: list[int] = []
    k = 3
    while k < end:
        ks.append(k)
        k += 1 if k < 32 else k // 16
    med = np.full(m, np.nan)
    prefix = _Prefixes(xf, ks) if ks else None
    # each k's value held until the next k (the last until `end`): one repeat, not a slice
    # assignment per k
    holds = np.diff(np.append(ks, end)) if ks else np.empty(0, dtype=np.intp)
    if prefix is not None:
        med[ks[0] : end] = np.repeat(prefix.medians, holds)
    centers = j[end:]
    centered: FloatArray | None = None
    if len(centers) > _FEW_ROLLING:
        centered = median_filter(xf, n)
        med[end:] = centered[centers]
    elif len(centers):
        # the rank n // 2 element of each window, as the rolling filter takes it
        med[end:] = [np.partition(xf[c - h : c - h + n], h)[h] for c in centers]

    def spread() -> FloatArray:
        mad = np.full(m, np.nan)
        if prefix is not None:
            mad[ks[0] : end] = np.repeat(prefix.mads() * MAD_TO_SIGMA, holds)
        if len(centers):
            # the deviation from the rolling median at each sample, taken over the window
            level = centered if centered is not None else median_filter(xf, n)
            dev = np.abs(xf - level)
            if len(centers) > _FEW_ROLLING:
                mad[end:] = median_filter(dev, n)[centers] * MAD_TO_SIGMA
            else:
                mad[end:] = [
                    np.partition(dev[c - h : c - h + n], h)[h] * MAD_TO_SIGMA for c in centers
                ]
        return mad

    return med, spread


class _Prefixes:
    """Median and MAD of xf[:k] for each ascending k, as np.median computes them.

    The medians come at once, the MADs (each a median of deviations from its prefix's median)
    when asked. Each prefix is sorted; its median is read off the middle. A MAD needs no second
    sort: the r + 1 deviations nearest the median are a contiguous block of the sorted prefix,
    so the r-th smallest deviation is the least, over blocks of r + 1, of the larger deviation
    at the block's two ends (|s - m| rounds monotonically in s on either side of m). The values
    are np.median's own: the same elements, the same (a + b) / 2 of the middle two.

    The ks are taken in runs (the first up to 128, then each widest k at most eight times the
    narrowest); a short run is sorted as one padded matrix, a longer one by sorting its widest
    prefix once and keeping, for each k, the elements that come from before k. xf with an
    infinite value (a deviation may then be NaN) takes the one padded sort of
    `_padded_median_mad`.
    """

    def __init__(self, xf: FloatArray, ks: list[int]) -> None:
        self._xf, self._ks = xf, ks
        self._finite = bool(np.isfinite(xf[: ks[-1]]).all())
        self._runs: list[tuple[FloatArray, npt.NDArray[np.intp], FloatArray]] = []
        if not self._finite:
            self.medians, self._mads = _padded_median_mad(xf, ks)
            return
        i = 0
        while i < len(ks):
            limit = max(128, 8 * ks[i])
            stop = i + 1
            while stop < len(ks) and ks[stop] <= limit:
                stop += 1
            kk = np.asarray(ks[i:stop], dtype=np.intp)
            flat = _sorted_prefixes(xf, kk)
            off = np.zeros(len(kk), dtype=np.intp)
            np.cumsum(kk[:-1], out=off[1:])
            lo, hi = (kk - 1) // 2, kk // 2
            odd = lo == hi  # np.median takes the middle value itself, not a mean of it with itself
            mk = np.where(odd, flat[off + lo], (flat[off + lo] + flat[off + hi]) / 2)
            self._runs.append((flat, kk, mk))
            i = stop
        parts = [mk for _, _, mk in self._runs]
        self.medians = parts[0] if len(parts) == 1 else np.concatenate(parts)

    def mads(self) -> FloatArray:
        if not self._finite:
            return self._mads
        parts = [_sorted_mads(flat, kk, mk) for flat, kk, mk in self._runs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _sorted_prefixes(xf: FloatArray, kk: npt.NDArray[np.intp]) -> FloatArray:
    """Each sorted xf[:k] for the ks `kk`, one after another (finite xf)."""
    width = int(kk[-1])
    if width <= 128:
        inside = np.arange(width)[None, :] < kk[:, None]
        padded = np.where(inside, xf[None, :width], np.inf)
        padded.sort(axis=1)
        return padded[inside]  # the padding sorts last: each row's first k are its prefix
    order = np.argsort(xf[:width], kind="stable")
    ranked = xf[:width][order]
    # in the widest prefix's sorted order, the elements that come from before k, still sorted
    keep = order[None, :] < kk[:, None]
    flat: FloatArray = np.broadcast_to(ranked, keep.shape)[keep]
    return flat


def _sorted_mads(flat: FloatArray, kk: npt.NDArray[np.intp], mk: FloatArray) -> FloatArray:
    """The median of |prefix - its median| for each sorted prefix in `flat` (see _Prefixes)."""
    off = np.zeros(len(kk), dtype=np.intp)
    np.cumsum(kk[:-1], out=off[1:])
    dev = np.abs(flat - np.repeat(mk, kk))
    lo, hi = (kk - 1) // 2, kk // 2
    ranked = []
    for r in (lo, hi):
        blocks = kk - r  # block starts 0 .. k - 1 - r of each prefix
        starts = np.zeros(len(kk), dtype=np.intp)
        np.cumsum(blocks[:-1], out=starts[1:])
        first = np.arange(int(blocks.sum())) + np.repeat(off - starts, blocks)
        widest = np.maximum(dev[first], dev[first + np.repeat(r, blocks)])
        ranked.append(np.minimum.reduceat(widest, starts))
    d_lo, d_hi = ranked
    dk: FloatArray = np.where(lo == hi, d_lo, (d_lo + d_hi) / 2)
    return dk


def _prefix_median_mad(xf: FloatArray, ks: list[int]) -> tuple[FloatArray, FloatArray]:
    """(median, MAD) of xf[:k] for each ascending k, as np.median computes them."""
    prefixes = _Prefixes(xf, ks)
    return prefixes.medians, prefixes.mads()


def _padded_median_mad(xf: FloatArray, ks: list[int]) -> tuple[FloatArray, FloatArray]:
    """(median, MAD) of xf[:k] for each k, as np.median computes them, in two sorts of one
    padded matrix instead of two median calls per k (finite xf: padding sorts last)."""
    rows = np.arange(len(ks))
    kk = np.asarray(ks)
    lo, hi = (kk - 1) // 2, kk // 2
    inside = np.arange(ks[-1])[None, :] < kk[:, None]
    prefix = np.where(inside, xf[None, : ks[-1]], np.inf)
    prefix.sort(axis=1)
    odd = lo == hi  # np.median takes the middle value itself, not a mean of it with itself
    mk = np.where(odd, prefix[rows, lo], (prefix[rows, lo] + prefix[rows, hi]) / 2)
    dev = np.where(inside, np.abs(xf[None, : ks[-1]] - mk[:, None]), np.inf)
    dev.sort(axis=1)
    dk = np.where(odd, dev[rows, lo], (dev[rows, lo] + dev[rows, hi]) / 2)
    return mk, dk


def trailing_mean(x: FloatArray, n: int) -> FloatArray:
    """Mean of the `n` samples before each point, NaN ignored (the first points use the
    earliest window)."""
    x = np.asarray(x, dtype=np.float64)
    m = len(x)
    if m == 0:
        return x.copy()
    ok = np.isfinite(x)
    # a running sum past a value near the float limit is inf, and windows after it are NaN
    # (inf - inf): callers read a NaN mean as unknown, so neither is warned about
    with np.errstate(over="ignore", invalid="ignore"):
        csum = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
        ccnt = np.concatenate([[0], np.cumsum(ok)])
        n = max(1, min(n, m))
        hi = np.maximum(np.arange(m), n)
        hi = np.minimum(hi, m)
        lo = hi - n
        cnt = ccnt[hi] - ccnt[lo]
        mean: FloatArray = np.where(cnt > 0, (csum[hi] - csum[lo]) / np.maximum(cnt, 1), np.nan)
    return mean


@dataclass(frozen=True, slots=True)
class Excursion:
    """A run of samples far from the trailing baseline, with the baseline frozen at its onset."""

    onset: int
    end: int
    peak: int
    baseline: float
    scale: float
    peak_value: float
    peak_z: float
    samples_above: int

    @property
    def factor(self) -> float:
        if self.baseline == 0:
            return math.inf if self.peak_value > 0 else 1.0
        return self.peak_value / self.baseline


def find_excursions(
    sig: Signal,
    *,
    baseline_s: float,
    z_enter: float,
    z_onset: float = 3.0,
    z_exit: float = 2.0,
    min_factor: float = 1.0,
    min_delta: float = 0.0,
    min_duration_s: float = 0.0,
    rel_floor: float = 0.02,
    abs_floor: float = 0.0,
    direction: int = 1,
    exit_hold_s: float = 0.0,
    noise: FloatArray | None = None,
    poisson: bool = False,
) -> list[Excursion]:
    """Excursions of `sig` away from its trailing baseline, in time order.

    A sample enters when its robust z-score passes `z_enter`, its value passes `min_factor` x the
    baseline and `min_delta` beyond it. The onset walks back while z stays above `z_onset`; the
    excursion ends before `exit_hold_s` worth of samples back under `z_exit`. The scale is
    floored at `rel_floor` x |baseline| and `abs_floor`, so a flat synthetic baseline does not
    make every wiggle infinite, and at `noise` (a per-sample standard deviation known from the
    sampling model, e.g. binomial for a ratio of small counts). `poisson` says the signal is a
    rate of events counted per step, whose sampling sd is sqrt(mean * step) / step.
    `direction` -1 looks for drops.
    """
    x = np.asarray(sig.v, dtype=np.float64)
    m = len(x)
    if m < 3 or not np.isfinite(x).any():
        return []
    step = sig.step if sig.step > 0 else 1.0
    nb = samples(baseline_s, step, minimum=5)
    sgn = 1.0 if direction >= 0 else -1.0
    need = samples(min_duration_s, step, minimum=1)
    hold = samples(exit_hold_s, step, minimum=1)
    floors = (rel_floor, abs_floor, noise, poisson)
    out: list[Excursion] = []
    xb = x
    # Each pass takes the baseline from samples outside the excursions found so far, so a
    # second herd a minute after a long first one is measured against the level before the
    # first, not against the first itself (at most `REBASELINE_PASSES` extra passes).
    for _ in range(1 + REBASELINE_PASSES):
        med, spread = trailing_level(xb, nb)
        with np.errstate(all="ignore"):
            big = sgn * (xb - med) >= min_delta
            if min_factor <= 1:
                fac = np.ones(m, dtype=bool)
            elif direction >= 0:
                fac = xb >= min_factor * med
            else:
                fac = xb <= med / min_factor
        may = np.isfinite(xb) & big & fac
        if not may.any():
            # no sample passes the factor or the delta, whatever the scale: no candidate, and
            # the spread (the costlier half of the baseline) is not computed at all
            break
        sc = _scale(xb, med, spread(), nb, step, floors)
        with np.errstate(all="ignore"):
            z = sgn * (xb - med) / sc
        cand = may & (z > z_enter)
        found: list[Excursion] = []
        with np.errstate(all="ignore"):
            _walk(xb, med, sc, cand, np.flatnonzero(cand), found, sgn, z_onset, z_exit, z_enter,
                  need, hold)  # fmt: skip
        new = [e for e in found if not any(e.onset <= o.end and o.onset <= e.end for o in out)]
        if not new:
            break
        out = sorted(out + new, key=lambda e: e.onset)
        xb = x.copy()
        for e in out:  # hide every excursion from the next pass's baseline and candidates
            xb[e.onset : e.end + 1] = np.nan
    return out


#: extra passes of `find_excursions` with the excursions found so far left out of the baseline
REBASELINE_PASSES = 2


def _scale(
    x: FloatArray,
    med: FloatArray,
    sc: FloatArray,
    nb: int,
    step: float,
    floors: tuple[float, float, FloatArray | None, bool],
) -> FloatArray:
    """The robust scale of `x` about its trailing level `med`: its spread `sc` floored at a
    share of the level, an absolute floor, a known sampling sd and, for counted events, the
    Poisson sd of the trailing mean rate (see `find_excursions`)."""
    rel_floor, abs_floor, noise, poisson = floors
    with np.errstate(over="ignore"):  # a level near the float limit has an infinite floor
        floor = np.maximum(rel_floor * np.abs(med), abs_floor)
        if noise is not None:
            floor = np.maximum(floor, np.nan_to_num(noise, nan=0.0))
        if poisson:
            mean = np.nan_to_num(trailing_mean(x, nb), nan=0.0)
            mean = np.maximum(mean, 0.5 / (nb * step))  # half an event per window at the least
            floor = np.maximum(floor, np.sqrt(mean * step) / step)
        sc = np.maximum(np.nan_to_num(sc, nan=0.0), floor)
        sc = np.where(sc > 0, sc, 1e-12 * np.maximum(1.0, np.abs(np.nan_to_num(med))))
    return sc


def _walk(
    x: FloatArray,
    med: FloatArray,
    sc: FloatArray,
    cand: npt.NDArray[np.bool_],
    idx: npt.NDArray[np.intp],
    out: list[Excursion],
    sgn: float,
    z_onset: float,
    z_exit: float,
    z_enter: float,
    need: int,
    hold: int,
) -> None:
    """The excursion scan proper: enter, walk the onset back, hold until quiet, record."""
    m = len(x)
    k = 0
    while True:
        nxt = idx[np.searchsorted(idx, k) :]
        if len(nxt) == 0:
            break
        ke = int(nxt[0])
        b, s = float(med[ke]), float(sc[ke])
        onset = ke
        while (
            onset - 1 >= k and np.isfinite(x[onset - 1]) and sgn * (x[onset - 1] - b) / s > z_onset
        ):
            onset -= 1
        if onset < ke:  # the baseline at the true onset is cleaner than the one at entry
            b, s = float(med[onset]), float(sc[onset])
        end = ke
        quiet = 0
        j = ke + 1
        while j < m:
            zj = sgn * (x[j] - b) / s if np.isfinite(x[j]) else math.nan
            if math.isnan(zj):
                quiet += 0  # a gap neither ends nor extends the excursion
            elif zj < z_exit:
                quiet += 1
                if quiet >= hold:
                    break
            else:
                quiet = 0
                end = j
            j += 1
        seg = x[onset : end + 1]
        with np.errstate(invalid="ignore"):
            zseg = sgn * (seg - b) / s
            above = int(np.nansum(zseg > z_enter))
        if above >= need:
            pk = onset + int(np.nanargmax(sgn * seg))
            out.append(
                Excursion(onset, end, pk, b, s, float(x[pk]), float(sgn * (x[pk] - b) / s), above)
            )
        k = end + 1


@dataclass(frozen=True, slots=True)
class PoissonCluster:
    """Events packed in a window far beyond their background Poisson rate."""

    first: int
    last: int
    count: int
    window: float
    expected: float
    p_value: float
    p_corrected: float
    background_rate: float


def poisson_clusters(
    times: FloatArray,
    span: tuple[float, float],
    *,
    widths: tuple[float, ...],
    alpha: float,
    min_count: int,
    max_clusters: int | None = None,
) -> list[PoissonCluster]:
    """Scan statistic over event times: for each event and each window width w, k events in
    [t_i, t_i + w] against a Poisson background rate estimated from the events outside it
    (plus one, so an otherwise silent log is not infinitely surprising). The p-value
    `poisson.sf(k - 1, rate * w)` is Bonferroni-corrected by the number of windows tested,
    sum(span / w). Clusters are returned strongest first and never overlap; all of them
    (a week of half-hourly bursts is 336 clusters), or the first `max_clusters`.

    Each round takes, per width, the fullest window that touches no earlier cluster. Windows
    only ever lose that status, so each width keeps its windows in a heap (fullest first, then
    earliest) and drops the ones that touch a cluster as they surface: the cost is
    O(n log n) per width, not O(n) per cluster.
    """
    t = np.sort(np.asarray(times, dtype=np.float64))
    n = len(t)
    if n == 0:
        return []
    lo, hi = span
    total = max(hi - lo, float(t[-1] - t[0]), 1.0)
    n_tests = sum(max(1.0, total / w) for w in widths)
    idx = np.arange(n)
    heaps: list[list[tuple[int, int]]] = []
    for w in widths:
        k = np.searchsorted(t, t + w, side="right") - idx
        keep = k >= min_count
        heap = list(zip((-k[keep]).tolist(), idx[keep].tolist(), strict=True))
        heapq.heapify(heap)
        heaps.append(heap)
    firsts: list[int] = []  # the clusters taken, as disjoint event ranges sorted by start
    lasts: list[int] = []
    taken = 0

    def touches(first: int, last: int) -> bool:
        j = bisect.bisect_right(firsts, last) - 1
        return j >= 0 and lasts[j] >= first

    out: list[PoissonCluster] = []
    while max_clusters is None or len(out) < max_clusters:
        best: PoissonCluster | None = None
        for w, heap in zip(widths, heaps, strict=True):
            while heap and touches(heap[0][1], heap[0][1] - heap[0][0] - 1):
                heapq.heappop(heap)
            if not heap:
                continue
            ki, i = -heap[0][0], heap[0][1]
            rest = max(n - taken - ki, 0) + 1
            rate = rest / max(total - w, w)
            mu = rate * w
            p = poisson_sf(ki, mu)
            pc = min(1.0, p * n_tests)
            if (
                best is None
                or pc < best.p_corrected
                or (pc == best.p_corrected and ki > best.count)
            ):
                best = PoissonCluster(i, i + ki - 1, ki, w, mu, p, pc, rate)
        if best is None or best.p_corrected >= alpha:
            break
        out.append(best)
        j = bisect.bisect_left(firsts, best.first)
        firsts.insert(j, best.first)
        lasts.insert(j, best.last)
        taken += best.count
    return out


def rayleigh(times: FloatArray, period: float) -> tuple[float, float, float]:
    """Rayleigh test of phase concentration of `times` modulo `period`.

    Returns (R, p, mean offset in seconds in [-period/2, period/2)), R the mean resultant
    length; p uses Zar's approximation exp(sqrt(1 + 4n + 4(n^2 - R_n^2)) - (1 + 2n)).
    """
    n = len(times)
    if n == 0:
        return 0.0, 1.0, 0.0
    ph = 2 * np.pi * (np.mod(np.asarray(times, dtype=np.float64), period) / period)
    c, s = float(np.mean(np.cos(ph))), float(np.mean(np.sin(ph)))
    r = math.hypot(c, s)
    rn = n * r
    p = math.exp(math.sqrt(1 + 4 * n + 4 * (n * n - rn * rn)) - (1 + 2 * n))
    offset = math.atan2(s, c) / (2 * math.pi) * period
    return r, min(1.0, max(p, 0.0)), offset
