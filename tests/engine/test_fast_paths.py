"""The engine's fast paths give what the code they replaced gave: a signal's view found by
bisection equals the one found by masks, and the series split per subject are those that
matching every selector on every series finds."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from herdwatch.engine.scan import _matching
from herdwatch.engine.snapshot import _MAD_TO_SIGMA, signal_view
from herdwatch.model import RawData, Series, Signal
from herdwatch.signals import median_of, selectors_for

values = st.floats(-1e6, 1e6) | st.just(math.nan) | st.just(math.inf)


def _masked_view(sig: Signal, recent: float, baseline: float) -> tuple[object, ...]:
    """signal_view as it was: boolean masks over the whole signal."""
    finite = np.flatnonzero(np.isfinite(sig.v))
    if not len(finite):
        return (0, 0, math.nan, math.nan, math.nan)
    last = int(finite[-1])
    t_last = float(sig.t[last])
    keep = sig.t >= t_last - recent
    before = sig.v[(sig.t >= t_last - baseline) & (sig.t < t_last)]
    before = before[np.isfinite(before)]
    value = float(sig.v[last])
    if len(before) >= 3:
        base = median_of(before)
        mad = median_of(np.abs(before - base)) * _MAD_TO_SIGMA
        score = (value - base) / max(mad, 0.05 * abs(base), 1e-12)
    else:
        base = score = math.nan
    return (sig.t[keep].tobytes(), sig.v[keep].tobytes(), value, base, score)


@given(arrays(np.float64, st.integers(0, 80), elements=values), st.sampled_from([1.0, 2.5, 15.0]))
def test_view_by_bisection_equals_view_by_masks(v: np.ndarray, step: float) -> None:
    t = 1_764_000_000.0 + step * np.arange(len(v), dtype=np.float64)
    sig = Signal("s", t.astype(np.float64), v, step)
    view = signal_view(sig, (), recent=60.0, baseline=30.0)
    want = _masked_view(sig, 60.0, 30.0)
    if not len(view.t):
        assert want[0] == 0 or not len(np.asarray(sig.v)[np.isfinite(sig.v)])
        return
    got = (view.t.tobytes(), view.v.tobytes(), view.value, view.baseline, view.score)
    assert got[:2] == want[:2]
    assert np.array_equal(np.array(got[2:]), np.array(want[2:]), equal_nan=True)
    assert not np.shares_memory(view.v, sig.v)  # a view's samples are its own copy


def _series(name: str, family: str, **labels: str) -> Series:
    t = np.arange(3.0)
    return Series(name, tuple(sorted(labels.items())), t, t, family, "counter")


def test_matching_equals_every_selector_on_every_series() -> None:
    raw = RawData(
        [
            _series("redis_keyspace_hits_total", "redis_keyspace_hits", instance="a"),
            _series("herdcache_requests_total", "herdcache_requests", result="hit", instance="b"),
            _series("herdcache_requests_total", "herdcache_requests", result="miss"),
            _series("herdcache_requests_total", "herdcache_requests", result="other"),
            _series("node_cpu_seconds_total", "node_cpu_seconds", mode="idle"),
            _series("redis_keyspace_misses", "", instance="c"),
        ]
    )
    for names in (("cache_hits", "cache_misses"), ("context_switches", "cpu_seconds")):
        for overrides in ({}, {"cache_hits": 'herdcache_requests_total{instance=~"a|b"}'}):
            sels = [sel for n in names for sel in selectors_for(n, overrides)]
            want = [s for s in raw.series if any(sel.matches(s) for sel in sels)]
            assert _matching(raw, names, overrides) == want
