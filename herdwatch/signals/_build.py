"""Series -> one Signal: the building blocks each derivation is made of."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from herdwatch.model import FloatArray, LogEvent, Series, Signal
from herdwatch.signals._math import (
    arrays_equal,
    counter_rate,
    counter_rates,
    gauge_on_grid,
    histogram_quantile,
    median_of,
    median_step,
    sum_on_grid,
    trailing_sum,
    union_grid,
)

#: observations a quantile's rate window should hold: enough that the 99th percentile is a
#: couple of observations rather than the single slowest one
QUANTILE_MIN_OBSERVATIONS = 200.0
#: the longest rate window a quantile may use, as Prometheus users pick rate(x[1m])
QUANTILE_MAX_WINDOW = 60.0


def rates_of(series: Sequence[Series]) -> list[tuple[FloatArray, FloatArray]]:
    """(times, counter rate) of each series; in one vectorized pass when they were all scraped
    at the same times (a Prometheus range, targets scraped together)."""
    if not series:
        return []
    t0 = series[0].timestamps
    if len(series) > 1 and all(arrays_equal(s.timestamps, t0) for s in series):
        rates = counter_rates(t0, np.vstack([s.values for s in series]))
        return [(t0, r) for r in rates]
    return [(s.timestamps, counter_rate(s.timestamps, s.values)) for s in series]


def rate_sum(
    series: Sequence[Series],
    name: str,
    recipe: str,
    rates: Mapping[int, tuple[FloatArray, FloatArray]] | None = None,
) -> Signal | None:
    """`sum(rate(...))` of counters on the union of their scrape times; None without two samples.

    `rates` (by id(series), from `rates_by_id`) are rates already taken of these series, for
    a caller summing several subsets of one set: counter_rates gives counter_rate's values, so
    a rate taken with other rows is the one this sum would take.
    """
    series = [s for s in series if len(s.timestamps) > 1]
    if not series:
        return None
    grid = union_grid([s.timestamps for s in series])
    pairs = rates_of(series) if rates is None else [rates[id(s)] for s in series]
    v = sum_on_grid(pairs, grid, kind="rate")
    return Signal(name, grid, v, median_step(grid), recipe)


def rates_by_id(series: Sequence[Series]) -> dict[int, tuple[FloatArray, FloatArray]]:
    """`rates_of` the series with two samples or more, by id(series), for `rate_sum(rates=)`."""
    usable = [s for s in series if len(s.timestamps) > 1]
    return {id(s): r for s, r in zip(usable, rates_of(usable), strict=True)}


def gauge_sum(series: Sequence[Series], name: str, recipe: str) -> Signal | None:
    """`sum(...)` of gauges on the union of their scrape times; None without a sample."""
    series = [s for s in series if len(s.timestamps)]
    if not series:
        return None
    grid = union_grid([s.timestamps for s in series])
    v = sum_on_grid([(s.timestamps, s.values) for s in series], grid, kind="gauge")
    return Signal(name, grid, v, median_step(grid) if len(grid) > 1 else float("nan"), recipe)


def quantile_window(total_rate: FloatArray, step: float) -> int:
    """Samples in the trailing rate window of a histogram quantile (like `rate(x[w])`): one
    scrape interval when traffic is high, wider when few observations land per interval."""
    finite = total_rate[np.isfinite(total_rate)]
    if not len(finite) or not step > 0:
        return 1
    per_interval = median_of(finite) * step
    want = int(np.ceil(QUANTILE_MIN_OBSERVATIONS / max(per_interval, 1e-9)))
    return int(np.clip(want, 1, max(1, int(QUANTILE_MAX_WINDOW // step))))


#: unit suffixes of a latency family and the factor to seconds (the detectors read seconds)
_UNIT_SCALES = (
    ("_milliseconds", 1e-3),
    ("_millis", 1e-3),
    ("_ms", 1e-3),
    ("_microseconds", 1e-6),
    ("_us", 1e-6),
)


def unit_scale(name: str) -> float:
    """Factor from the family's unit to seconds: 1e-3 for `..._milliseconds_bucket`, else 1."""
    base = name
    for part in ("_bucket", "_sum", "_count"):
        base = base.removesuffix(part)
    return next((f for suffix, f in _UNIT_SCALES if base.endswith(suffix)), 1.0)


def quantile_signal(series: Sequence[Series], q: float, name: str, recipe: str) -> Signal | None:
    """`histogram_quantile(q, sum by (le) (rate(..._bucket)))` over a trailing window that holds
    enough observations (see `quantile_window`), in seconds whatever the family's unit; else,
    for a summary (`quantile` labels, no buckets), its nearest quantile (see
    `summary_quantile`); None without either on two times."""
    buckets = [s for s in series if s.name.endswith("_bucket") and s.label("le")]
    if not buckets:
        return summary_quantile(series, q, name)
    (sig,) = histogram_quantiles(buckets, {name: q}, recipe)
    return sig


def histogram_quantiles(
    buckets: Sequence[Series], quantiles: dict[str, float], recipe: str
) -> list[Signal | None]:
    """One signal per (name, q) of `quantiles` from the same `_bucket` series, their bucket
    rates summed and windowed once (see `quantile_signal`); `recipe` holds the first q."""
    grid = union_grid([s.timestamps for s in buckets])
    if len(grid) < 2:
        return [None] * len(quantiles)
    kept: list[tuple[float, Series]] = []
    for s in buckets:
        try:
            kept.append((float(s.label("le")) * unit_scale(s.name), s))
        except ValueError:
            continue
    if not kept:
        return [None] * len(quantiles)
    rates = _bucket_rates(kept, grid)
    bounds = np.array(sorted({le for le, _ in kept}))
    step = median_step(grid)
    k = quantile_window(rates[-1], step)
    if k > 1:
        rates = trailing_sum(rates, k)
        recipe = recipe.replace("rate(", f"rate[{k * step:g}s](", 1)
    first = next(iter(quantiles.values()), 0.0)
    return [
        Signal(name, grid, histogram_quantile(q, bounds, rates), step,
               recipe.replace(f"histogram_quantile({first:g},", f"histogram_quantile({q:g},"))
        for name, q in quantiles.items()
    ]  # fmt: skip


def _bucket_rates(kept: list[tuple[float, Series]], grid: FloatArray) -> FloatArray:
    """Cumulative bucket rates summed by `le` on `grid`, one row per bound (sorted).

    Series whose label sets (less `le`) have different bucket bounds (two client versions
    under one family) are each interpolated onto the union of bounds first, as
    histogram_quantile interpolates within a bucket: summing by `le` directly would add one
    layout's counts at a bound to nothing of the other's, and the cumulative counts would fall
    between bounds (the quantile pinned at +Inf)."""
    rates = rates_of([s for _, s in kept])
    layouts: dict[tuple[tuple[str, str], ...], dict[float, list[tuple[FloatArray, FloatArray]]]]
    layouts = {}
    for (le, s), r in zip(kept, rates, strict=True):
        key = tuple(kv for kv in s.labels if kv[0] != "le")
        layouts.setdefault(key, {}).setdefault(le, []).append(r)
    # label sets with the same bounds are summed by `le` first: one interpolation per layout,
    # not per instance
    by_bounds: dict[tuple[float, ...], dict[float, list[tuple[FloatArray, FloatArray]]]] = {}
    for g in layouts.values():
        same = by_bounds.setdefault(tuple(sorted(g)), {})
        for le, rs in g.items():
            same.setdefault(le, []).extend(rs)
    union = np.array(sorted({le for le, _ in kept}))
    if len(by_bounds) == 1:
        (by_le,) = by_bounds.values()
        return np.vstack([sum_on_grid(by_le[b], grid, kind="rate") for b in union])
    total = np.zeros((len(union), len(grid)))
    present = np.zeros(len(grid), dtype=bool)
    for bounds, g in by_bounds.items():
        own = np.array(bounds)
        rows = np.vstack([sum_on_grid(g[b], grid, kind="rate") for b in own])
        part = _onto_bounds(own, union) @ np.nan_to_num(rows, nan=0.0)
        ok = np.isfinite(rows).all(axis=0)
        total[:, ok] += part[:, ok]
        present |= ok
    total[:, ~present] = np.nan
    return total


def _onto_bounds(own: FloatArray, union: FloatArray) -> FloatArray:
    """Weights W (len(union) x len(own)) with W @ cumulative(own) = cumulative at `union`:
    linear within a bucket, from 0 below the first bound, and above the largest finite bound
    only at +Inf (where those observations lie is unknown; histogram_quantile answers the
    largest finite bound for them)."""
    w = np.zeros((len(union), len(own)))
    finite = own[np.isfinite(own)]
    for i, b in enumerate(union):
        j = int(np.searchsorted(own, b, side="left"))
        if j < len(own) and own[j] == b:
            w[i, j] = 1.0
        elif not np.isfinite(b):
            w[i, len(own) - 1] = 1.0
        elif j == 0:
            w[i, 0] = b / own[0] if own[0] > 0 else 0.0
        elif len(finite) and b > finite[-1]:
            w[i, len(finite) - 1] = 1.0
        else:
            lo, hi = own[j - 1], own[j]
            f = (b - lo) / (hi - lo)
            w[i, j - 1], w[i, j] = 1.0 - f, f
    return w


def summary_quantile(series: Sequence[Series], q: float, name: str) -> Signal | None:
    """A summary's `quantile` series nearest to q, the largest across its series (instances) at
    each time: a summary's quantiles cannot be aggregated, and a herd on the database slows
    every client; None without quantile series on two times."""
    qs = [s for s in series if s.label("quantile") and not s.name.endswith(("_sum", "_count"))]
    vals: list[tuple[float, Series]] = []
    for s in qs:
        try:
            vals.append((float(s.label("quantile")), s))
        except ValueError:
            continue
    if not vals:
        return None
    best = min({v for v, _ in vals}, key=lambda v: abs(v - q))
    chosen = [s for v, s in vals if v == best]
    grid = union_grid([s.timestamps for s in chosen])
    if len(grid) < 2:
        return None
    step = median_step(grid)
    cols = [
        gauge_on_grid(s.timestamps, s.values * unit_scale(s.name), grid, 2.5 * step) for s in chosen
    ]
    with np.errstate(all="ignore"):
        stack = np.vstack(cols)
        v = np.where(
            np.isfinite(stack).any(axis=0),
            np.nanmax(np.where(np.isnan(stack), -np.inf, stack), axis=0),
            np.nan,
        )
    recipe = f'max({chosen[0].name}{{quantile="{best:g}"}})'
    return Signal(name, grid, v, step, recipe)


def resample(sig: Signal, grid: FloatArray) -> FloatArray:
    """Interval semantics: the value of sig's sample covering each grid point."""
    if arrays_equal(sig.t, grid):
        return sig.v
    return sum_on_grid([(sig.t, sig.v)], grid, kind="rate")


def error_rate(events: Sequence[LogEvent], span: tuple[float, float] | None) -> Signal | None:
    """Matched error lines per second, in at most 2,000 bins of at least 1 s over the window
    (for the timeline; detectors read the events themselves)."""
    if not events or span is None:
        return None
    lo, hi = span
    width = max(1.0, (hi - lo) / 2000)
    edges = np.arange(lo, hi + width, width)
    if len(edges) < 2:
        edges = np.array([lo, lo + width])
    counts, _ = np.histogram([e.timestamp for e in events], bins=edges)
    return Signal(
        "error_logs",
        edges[1:],
        counts / width,
        width,
        f"error log lines per second ({width:g}s bins)",
    )
