"""The signals' fast paths give what the slower code they stand for gives: median_of is
np.median (value for value), a regular grid's median step is its step, arrays_equal is
np.array_equal, and Lookup.pick finds by (name, family) what matching each series finds."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from herdwatch.model import RawData, Series
from herdwatch.signals._lookup import Lookup, parse_cached, selector_table
from herdwatch.signals._math import _median_interval, arrays_equal, median_of, median_step
from herdwatch.sources.families import parse_selector

values = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1.0])


@given(arrays(np.float64, st.integers(1, 60), elements=values))
def test_median_of_is_np_median(x: np.ndarray) -> None:
    with np.errstate(all="ignore"):
        want = float(np.median(x))
        got = median_of(x)
    # equal values, NaN for NaN (the sign of a zero median is the partition's pick in both)
    assert np.array_equal(got, want, equal_nan=True)


def test_median_of_halves_the_middle_two_as_np_mean() -> None:
    # numpy's sum of (-0.0, -0.0) is +0.0, and 1e308 + 1e308 overflows before halving
    for pair in ([-0.0, -0.0], [1e308, 1e308], [1.0, 2.0], [-3.0, 3.0], [5e-324, 5e-324]):
        x = np.array(pair)
        with np.errstate(all="ignore"):
            want = float(np.mean(x))
        got = median_of(x)
        assert np.array_equal(got, want) and np.signbit(got) == np.signbit(want)


@given(arrays(np.float64, st.integers(1, 40), elements=values))
def test_median_interval_is_median_of(dt: np.ndarray) -> None:
    with np.errstate(all="ignore"):
        want, got = median_of(dt), _median_interval(dt)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got) or np.signbit(got) == np.signbit(want)


def test_regular_grid_step() -> None:
    t = 1_764_000_000.0 + np.arange(1801.0)
    assert median_step(t) == 1.0
    t = 1_764_000_000.0 + 0.1 * np.arange(1801.0)  # steps that differ in the last bits
    assert median_step(t) == float(np.median(np.diff(t)))


@given(
    arrays(np.float64, st.integers(0, 5), elements=values),
    arrays(np.float64, st.integers(0, 5), elements=values),
)
def test_arrays_equal_is_np_array_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert arrays_equal(a, b) == np.array_equal(a, b)
    assert arrays_equal(a, a.copy()) == np.array_equal(a, a.copy())


def _series(name: str, family: str, **labels: str) -> Series:
    t = np.arange(3.0)
    return Series(name, tuple(sorted(labels.items())), t, t, family, "counter")


def test_pick_finds_what_matching_every_series_finds() -> None:
    series = [
        _series("redis_keyspace_hits_total", "redis_keyspace_hits", instance="a"),
        _series("herdcache_requests_total", "herdcache_requests", result="hit"),
        _series("redis_keyspace_hits", "", instance="b"),  # the family under its bare name
        _series("redis_keyspace_hits_total", "redis_keyspace_hits", instance="c"),
        _series("node_cpu_seconds_total", "node_cpu_seconds", mode="idle"),
        _series("redis_keyspace_hits_total", "", instance="d"),
    ]
    table = selector_table({"requests": 'herdcache_requests_total{result="hit"}'})
    table["cache_misses"] = [parse_selector("redis_keyspace_hits"), *table["cache_misses"]]
    lk = Lookup(RawData(series), table, [], None, 0.99)
    for name, sels in table.items():
        want: tuple[list[Series], str] = ([], "")
        for sel in sels:
            found = [s for s in series if sel.matches(s)]
            if found:
                want = (found, str(sel))
                break
        got = lk.pick(name)
        assert [id(s) for s in got[0]] == [id(s) for s in want[0]] and got[1] == want[1], name


def test_parse_cached_is_parse_selector() -> None:
    text = 'herdcache_requests_total{result="hit"}'
    assert parse_cached(text) == parse_selector(text)
    assert parse_cached(text) is parse_cached(text)
