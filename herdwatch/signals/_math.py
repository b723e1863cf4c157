"""Pure array math, as Prometheus does it: counter rates, sums on a common grid, quantiles.

* counter rate: per scrape interval, `(v[i] - v[i-1]) / (t[i] - t[i-1])`; a decrease is a reset, the
  increase is then `v[i]` (as `rate()` assumes); an interval longer than `gap_factor` times the
  series' median interval is a gap (NaN), not an average across it;
* a sum over series puts every series on the union of their scrape times: a gauge contributes its
  last value at or before the grid point, a rate the rate of its interval that covers the point;
* `histogram_quantile` interpolates linearly within the bucket that holds the rank, returns the
  second-highest bound when the rank falls in the +Inf bucket, and repairs non-monotonic buckets,
  exactly as Prometheus does.

Arrays in, arrays out: nothing here knows about series names, labels or signals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from herdwatch.model import FloatArray


def median_step(t: FloatArray) -> float:
    """The median interval between consecutive times; NaN with fewer than two."""
    if len(t) < 2:
        return float("nan")
    return _median_interval(np.diff(t))


def _median_interval(dt: FloatArray) -> float:
    """median_of(dt) for intervals, at once when they are all equal and positive (a regular
    grid): the median of equal values is that value, a mean of it with itself included (2 v / 2
    is v short of the float limit; zero, whose sign the partition picks, is left to it)."""
    first = dt[0]
    if 0 < first < 1e300 and first == dt[-1] and bool((dt == first).all()):
        return float(first)
    return median_of(dt)


def median_of(x: FloatArray) -> float:
    """np.median of a 1-d array, by one partition (np.median's own arithmetic, without its
    per-call overhead, which dominates on the short arrays of a tick)."""
    n = len(x)
    if n == 0 or np.isnan(x).any():
        return float(np.median(x)) if n else float("nan")
    k = n // 2
    if n % 2:
        return float(np.partition(x, k)[k])
    part = np.partition(x, (k - 1, k))
    # np.mean of the middle two, as np.median takes it: numpy's sum starts from the first
    # element and adds the rest summed from +0.0 (so -0.0 + -0.0 is +0.0 there), then halves
    a, b = float(part[k - 1]), float(part[k])
    return (a + (0.0 + b)) / 2


def arrays_equal(a: FloatArray, b: FloatArray) -> bool:
    """np.array_equal(a, b) for two float arrays (NaN unequal), without its per-call overhead."""
    return a.shape == b.shape and bool((a == b).all())


def counter_rate(t: FloatArray, v: FloatArray, *, gap_factor: float = 5.0) -> FloatArray:
    """Per-interval rate of a counter: r[i] covers (t[i-1], t[i]]; r[0] is NaN.

    A decrease is a reset (the increase is v[i]); NaN values and intervals longer than
    `gap_factor` x the median interval give NaN.
    """
    n = len(t)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    # a broken counter near the float limit (1e308, inf) overflows a difference or meets
    # inf - inf: its rate is then inf or NaN (unknown), which every detector reads as such
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dv = np.diff(v)
        reset = dv < 0
        dv = np.where(reset, v[1:], dv)
        dt = np.diff(t)
        step = _median_interval(dt)
        r = dv / dt
    r[~(dt > 0) | (dt > gap_factor * step)] = np.nan
    out[1:] = r
    return out


def counter_rates(t: FloatArray, values: FloatArray, *, gap_factor: float = 5.0) -> FloatArray:
    """`counter_rate(t, row)` for every row of `values` (counters scraped at the same times `t`),
    in one vectorized pass: the same arithmetic per element, so the same values."""
    rows, n = values.shape
    out = np.full((rows, n), np.nan)
    if n < 2:
        return out
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dv = np.diff(values, axis=1)
        dv = np.where(dv < 0, values[:, 1:], dv)
        dt = np.diff(t)
        step = _median_interval(dt)
        r = dv / dt
    r[:, ~(dt > 0) | (dt > gap_factor * step)] = np.nan
    out[:, 1:] = r
    return out


def union_grid(
    series_times: Sequence[FloatArray],
    *,
    merge_fraction: float = 0.2,
    step: float | None = None,
) -> FloatArray:
    """The common time grid of several series, never fewer points than one per scrape step.

    Series on the same times keep them. Otherwise the union of scrape times is taken with times
    closer than `merge_fraction` of the scrape interval folded into one (targets scraped in the
    same round land on one grid point). When targets are scraped on their own phases (what
    Prometheus does by default) such runs chain across a whole interval and folding would
    collapse the window; the grid is then regular at the measured scrape step (or the given
    `step`), spanning the times every series alive at either end covers (`regular_grid`).
    """
    nonempty = [t for t in series_times if len(t)]
    if not nonempty:
        return np.empty(0)
    same = all(arrays_equal(t, nonempty[0]) for t in nonempty)
    if same and step is None:
        return nonempty[0].astype(np.float64, copy=True)
    if step is None:
        steps = [median_step(t) for t in nonempty if len(t) > 1]
        step = float(np.nanmin(steps)) if steps else 0.0
    else:
        return regular_grid(nonempty, step)
    allt = np.unique(np.concatenate(nonempty))
    if len(allt) < 2 or not step > 0:
        return allt
    close = np.diff(allt) < merge_fraction * step
    if close.any() and _longest_run(allt, close) > 0.5 * step:
        return regular_grid(nonempty, step)
    keep = np.ones(len(allt), dtype=bool)
    # keep the last time of each run of near-coincident times: a grid point then sees all of them
    keep[:-1] = ~close
    return allt[keep]


def _longest_run(allt: FloatArray, close: npt.NDArray[np.bool_]) -> float:
    """The longest span of a chain of times each closer than the fold distance to the next."""
    # a run starts where the previous gap was not close; its span runs to its last member
    starts = np.flatnonzero(np.concatenate(([True], ~close)))
    ends = np.concatenate((starts[1:] - 1, [len(allt) - 1]))
    return float(np.max(allt[ends] - allt[starts]))


def regular_grid(series_times: Sequence[FloatArray], step: float) -> FloatArray:
    """Times `step` apart ending at the last time every series still alive at the end has
    reached, starting after the first interval of every series present from the start: every
    grid point then sees each such series' sample (a gauge) or covering interval (a rate)."""
    lo = min(float(t[0]) for t in series_times)
    hi = max(float(t[-1]) for t in series_times)
    if not step > 0 or hi - lo < step:
        return np.unique(np.concatenate(series_times))
    early = [t for t in series_times if t[0] <= lo + step]
    late = [t for t in series_times if t[-1] >= hi - 2 * step]
    first = max(float(t[0]) for t in early) + 0.25 * step
    last = min(float(t[-1]) for t in late)
    if last - first < step:
        first, last = lo, hi
    # never more points than stamps: one fast series among slow ones must not blow the grid up
    total = sum(len(t) for t in series_times)
    step = max(step, (last - first) / max(total, 1))
    n = int(np.floor((last - first) / step)) + 1
    return last - step * np.arange(n - 1, -1, -1, dtype=np.float64)


def gauge_on_grid(t: FloatArray, v: FloatArray, grid: FloatArray, lookback: float) -> FloatArray:
    """The last value at or before each grid point, NaN when older than `lookback` seconds."""
    idx = np.searchsorted(t, grid, side="right") - 1
    ok = idx >= 0
    out = np.full(len(grid), np.nan)
    out[ok] = v[idx[ok]]
    late = np.zeros(len(grid), dtype=bool)
    late[ok] = grid[ok] - t[idx[ok]] > lookback
    out[late] = np.nan
    return out


def interval_on_grid(t: FloatArray, r: FloatArray, grid: FloatArray, tol: float) -> FloatArray:
    """Value of the interval (t[j-1], t[j]] that covers each grid point (r[j])."""
    idx = np.searchsorted(t, grid - tol, side="left")
    ok = idx < len(t)
    out = np.full(len(grid), np.nan)
    out[ok] = r[idx[ok]]
    # a grid point before the series' first sample is not covered by any interval
    out[ok & (idx == 0) & (grid < t[0] - tol)] = np.nan
    return out


def sum_on_grid(
    series: Sequence[tuple[FloatArray, FloatArray]],
    grid: FloatArray,
    *,
    kind: str,
    lookback_steps: float = 2.5,
) -> FloatArray:
    """Sum of series on `grid`. kind "gauge": last value at or before each point; kind "rate":
    the interval value covering each point. Like PromQL's `sum`, a series absent at a point
    (not yet created, or in a gap) is left out; NaN only where every series is absent."""
    total = np.zeros(len(grid))
    present = np.zeros(len(grid), dtype=bool)
    on_grid: dict[int, bool] = {}  # by the times' identity: stacked series share one array
    for t, v in series:
        if id(t) not in on_grid:
            same = arrays_equal(t, grid)
            on_grid[id(t)] = same and _own_grid(t, kind)
        # on the grid already (targets scraped together, a Prometheus range): the lookup
        # would return v itself
        part = v if on_grid[id(t)] else _on_grid(t, v, grid, kind, lookback_steps)
        ok = ~np.isnan(part)
        if ok.all():  # the usual case: the same additions without two boolean gathers
            total += part
        else:
            total[ok] += part[ok]
        present |= ok
    total[~present] = np.nan
    return total


def _step(t: FloatArray, grid: FloatArray) -> float:
    step = median_step(t)
    if not step > 0:
        step = median_step(grid) if len(grid) > 1 else 1.0
    return step


def _own_grid(t: FloatArray, kind: str) -> bool:
    """Whether looking `t` up on itself is the identity: always for a gauge; for a rate when
    no interval is within the lookup's tolerance (0.2 step) of the one before it."""
    if kind == "gauge" or len(t) < 2:
        return True
    return bool(np.all(t[:-1] < t[1:] - 0.2 * _step(t, t)))


def _on_grid(
    t: FloatArray, v: FloatArray, grid: FloatArray, kind: str, lookback_steps: float
) -> FloatArray:
    step = _step(t, grid)
    if kind == "gauge":
        return gauge_on_grid(t, v, grid, lookback_steps * step)
    return interval_on_grid(t, v, grid, 0.2 * step)


def histogram_quantile(q: float, bounds: FloatArray, counts: FloatArray) -> FloatArray:
    """Prometheus `histogram_quantile(q, ...)` for every column of `counts`.

    `bounds` are the bucket upper bounds (sorted ascending, the last +Inf); `counts` has one row
    per bound (cumulative counts or rates) and one column per time. NaN where the histogram is
    empty or incomplete.
    """
    nb = len(bounds)
    ncol = counts.shape[1] if counts.ndim == 2 else 0
    out = np.full(ncol, np.nan)
    if nb < 2 or not np.isposinf(bounds[-1]) or ncol == 0:
        return out
    if q < 0:
        return np.full(ncol, -np.inf)
    if q > 1:
        return np.full(ncol, np.inf)
    valid = ~np.isnan(counts).any(axis=0)
    c = np.where(np.isnan(counts), 0.0, counts)
    c = np.maximum.accumulate(c, axis=0)  # Prometheus' ensureMonotonic
    total = c[-1]
    valid &= total > 0
    rank = q * total
    b = np.argmax(c >= rank[None, :], axis=0)
    in_inf = b == nb - 1
    upper = bounds[b]
    lower = np.where(b > 0, bounds[np.maximum(b - 1, 0)], 0.0)
    below = np.where(b > 0, c[np.maximum(b - 1, 0), np.arange(ncol)], 0.0)
    inb = c[b, np.arange(ncol)] - below
    with np.errstate(invalid="ignore", divide="ignore"):
        val = lower + (upper - lower) * ((rank - below) / inb)
    val = np.where(in_inf, bounds[nb - 2], val)
    val = np.where((b == 0) & (bounds[0] <= 0), bounds[0], val)
    out[valid] = val[valid]
    return out


def trailing_sum(rows: FloatArray, k: int) -> FloatArray:
    """Sum of each row over the k samples ending at each column; NaN only where all k are."""
    ok = np.isfinite(rows)
    c = np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(np.where(ok, rows, 0.0), 1)], 1)
    n = np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(ok, 1)], 1)
    hi = np.arange(1, rows.shape[1] + 1)
    lo = np.maximum(hi - k, 0)
    out: FloatArray = np.where(n[:, hi] - n[:, lo] > 0, c[:, hi] - c[:, lo], np.nan)
    return out
