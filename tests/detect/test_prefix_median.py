"""The expanding part of the trailing baseline equals the median and MAD np.median gives each
prefix (the loop it replaced), on both of its paths (a padded sort for short prefixes, one sort
of the widest prefix for long ones); the baseline in two halves (`trailing_level`) equals the
one-call `trailing_baseline`; and `find_excursions` skipping the spread finds what it would have
found with it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from herdwatch.detect import _stats
from herdwatch.detect._stats import (
    _prefix_median_mad,
    find_excursions,
    trailing_baseline,
    trailing_level,
)
from herdwatch.model import Signal

finite = st.floats(-1e308, 1e308, allow_nan=False, allow_infinity=False)
ties = st.sampled_from([0.0, 1.0, 2.0, 2.5, -1.0, 1e308, -1e308])


def _check_prefixes(x: np.ndarray, ks: list[int]) -> None:
    with np.errstate(all="ignore"):
        mk, dk = _prefix_median_mad(x, ks)
        for i, k in enumerate(ks):
            m = float(np.median(x[:k]))
            assert np.array_equal(mk[i], m, equal_nan=True)
            assert np.array_equal(dk[i], float(np.median(np.abs(x[:k] - m))), equal_nan=True)


@given(arrays(np.float64, st.integers(3, 300), elements=finite), st.data())
def test_prefix_median_and_mad_equal_np_median(x: np.ndarray, data: st.DataObject) -> None:
    ks = sorted(set(data.draw(st.lists(st.integers(1, len(x)), min_size=1, max_size=40))))
    _check_prefixes(x, ks)


@settings(max_examples=60)
@given(arrays(np.float64, st.integers(130, 1500), elements=finite | ties), st.data())
def test_long_prefixes_with_ties_equal_np_median(x: np.ndarray, data: st.DataObject) -> None:
    # prefixes past 128 take the one-sort path; ties make the MAD's blocks ambiguous
    ks = sorted(set(data.draw(st.lists(st.integers(1, len(x)), min_size=1, max_size=30))))
    _check_prefixes(x, [*ks, len(x)] if ks[-1] != len(x) else ks)


def test_infinite_values_take_the_padded_sort() -> None:
    x = np.array([1.0, np.inf, 3.0, -np.inf, 2.0, 2.0, np.inf] * 40)
    with np.errstate(all="ignore"):
        mk, dk = _prefix_median_mad(x, [3, 10, 129, 200, 280])
        for i, k in enumerate([3, 10, 129, 200, 280]):
            m = float(np.median(x[:k]))
            assert np.array_equal(mk[i], m, equal_nan=True)
            assert np.array_equal(dk[i], float(np.median(np.abs(x[:k] - m))), equal_nan=True)


values = finite | ties | st.just(np.nan) | st.just(np.inf)


@settings(max_examples=150)
@given(arrays(np.float64, st.integers(0, 700), elements=values), st.integers(1, 800))
def test_level_then_spread_equals_trailing_baseline(x: np.ndarray, n: int) -> None:
    # n near len(x) leaves a few rolling points (one partition each) past the expanding part
    with np.errstate(all="ignore"):
        med, mad = trailing_baseline(x, n)
        level, spread = trailing_level(x, n)
        assert np.array_equal(med, level, equal_nan=True)
        assert np.array_equal(mad, spread(), equal_nan=True)


def test_few_rolling_points_equal_the_rolling_filter(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(4).poisson(50, 1805).astype(float)
    for n in (1800, 1797, 1799):
        fast = trailing_baseline(x, n)
        monkeypatch.setattr(_stats, "_FEW_ROLLING", 0)  # always the rolling filter
        slow = trailing_baseline(x, n)
        monkeypatch.undo()
        assert np.array_equal(fast[0], slow[0], equal_nan=True)
        assert np.array_equal(fast[1], slow[1], equal_nan=True)


def _with_spread_always(sig: Signal, kw: dict[str, float]) -> list[_stats.Excursion]:
    """find_excursions as it was before the spread could be skipped: the scale computed on
    every pass (the reference)."""
    x = np.asarray(sig.v, dtype=np.float64)
    m = len(x)
    nb = _stats.samples(kw["baseline_s"], sig.step, minimum=5)
    floors = (kw["rel_floor"], 0.0, None, True)
    out: list[_stats.Excursion] = []
    xb = x
    for _ in range(1 + _stats.REBASELINE_PASSES):
        med, sc = trailing_baseline(xb, nb)
        sc = _stats._scale(xb, med, sc, nb, sig.step, floors)
        with np.errstate(all="ignore"):
            z = (xb - med) / sc
            big = xb - med >= kw["min_delta"]
            fac = np.ones(m, dtype=bool) if kw["min_factor"] <= 1 else xb >= kw["min_factor"] * med
        cand = np.isfinite(xb) & (z > kw["z_enter"]) & big & fac
        found: list[_stats.Excursion] = []
        with np.errstate(all="ignore"):
            _stats._walk(xb, med, sc, cand, np.flatnonzero(cand), found, 1.0, 3.0, 2.0,
                         kw["z_enter"], 1, 1)  # fmt: skip
        new = [e for e in found if not any(e.onset <= o.end and o.onset <= e.end for o in out)]
        if not new:
            break
        out = sorted(out + new, key=lambda e: e.onset)
        xb = x.copy()
        for e in out:
            xb[e.onset : e.end + 1] = np.nan
    return out


@settings(max_examples=80)
@given(
    st.integers(20, 400),
    st.sampled_from([1.0, 1.5, 3.0]),
    st.sampled_from([0.0, 0.05, 5.0]),
    st.integers(0, 2**32 - 1),
)
def test_skipping_the_spread_finds_the_same(m: int, factor: float, delta: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.poisson(100, m).astype(float)
    i = int(rng.integers(0, m))
    x[i : i + int(rng.integers(1, 20))] *= float(rng.choice([1.2, 2.0, 4.0]))
    sig = Signal("s", np.arange(m, dtype=float), x, 1.0, "")
    kw = {"baseline_s": 60.0, "z_enter": 6.0, "min_factor": factor, "min_delta": delta,
          "rel_floor": 0.05}  # fmt: skip
    got = find_excursions(sig, baseline_s=60.0, z_enter=6.0, min_factor=factor, min_delta=delta,
                          rel_floor=0.05, poisson=True)  # fmt: skip
    assert got == _with_spread_always(sig, kw)
