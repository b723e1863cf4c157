"""Series -> one Signal: the building blocks each derivation is made of."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from herdwatch.model import FloatArray, LogEvent, Series, Signal
from herdwatch.signals._math import (
    arrays_equal,
    counter_rate,
    counter_rates,
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


def quantile_signal(series: Sequence[Series], q: float, name: str, recipe: str) -> Signal | None:
    """`histogram_quantile(q, sum by (le) (rate(..._bucket)))` over a trailing window that holds
    enough observations (see `quantile_window`); None without `_bucket` series on two times."""
    buckets = [s for s in series if s.name.endswith("_bucket") and s.label("le")]
    if not buckets:
        return None
    grid = union_grid([s.timestamps for s in buckets])
    if len(grid) < 2:
        return None
    by_le: dict[float, list[tuple[FloatArray, FloatArray]]] = {}
    kept: list[tuple[float, Series]] = []
    for s in buckets:
        try:
            kept.append((float(s.label("le")), s))
        except ValueError:
            continue
    for (le, _), rate in zip(kept, rates_of([s for _, s in kept]), strict=True):
        by_le.setdefault(le, []).append(rate)
    bounds = np.array(sorted(by_le))
    rates = np.vstack([sum_on_grid(by_le[b], grid, kind="rate") for b in bounds])
    step = median_step(grid)
    k = quantile_window(rates[-1], step)
    if k > 1:
        rates = trailing_sum(rates, k)
        recipe = recipe.replace("rate(", f"rate[{k * step:g}s](", 1)
    return Signal(name, grid, histogram_quantile(q, bounds, rates), step, recipe)


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
