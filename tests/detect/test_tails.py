"""The scalar tails the detectors compute without scipy.stats agree with scipy.stats."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from herdwatch.detect._stats import binom_sf, poisson_sf


def _close(a: float, b: float) -> bool:
    # far in the tail scipy's own value underflows to 0 before ours (4e-254 against 0.0); a
    # p-value is compared with alpha / tests, never below 1e-15
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


@given(n=st.integers(0, 2000), data=st.data(), q=st.floats(0.0, 1.0))
def test_binomial_upper_tail_matches_scipy(n: int, data: st.DataObject, q: float) -> None:
    k = data.draw(st.integers(-1, n + 1))
    assert _close(binom_sf(k, n, q), float(stats.binom.sf(k - 1, n, q)))


@given(k=st.integers(-1, 3000), mu=st.floats(1e-6, 2000.0))
def test_poisson_upper_tail_matches_scipy(k: int, mu: float) -> None:
    ours, ref = poisson_sf(k, mu), float(stats.poisson.sf(k - 1, mu))
    # below the mean 1 - P(X < k) carries the cancellation error of a sum near 1
    assert _close(ours, ref) or abs(ours - ref) < 1e-12, (ours, ref)
