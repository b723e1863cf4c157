"""The numpy rolling median is scipy.ndimage.median_filter(mode="nearest"), value for value."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import median_filter as scipy_median_filter

from herdwatch.detect import _rolling
from herdwatch.detect._rolling import median_filter

values = st.floats(-1e308, 1e308, allow_nan=False) | st.sampled_from([0.0, 1.0, -1.0, np.inf])


@given(arrays(np.float64, st.integers(1, 400), elements=values), st.integers(1, 700), st.data())
def test_equals_scipy(x: np.ndarray, size: int, data: st.DataObject) -> None:
    _rolling._scipy, _rolling._spent = None, 0  # the numpy path
    origin = data.draw(st.integers(-(size // 2), (size - 1) // 2))
    assert np.array_equal(
        median_filter(x, size, origin),
        scipy_median_filter(x, size=size, mode="nearest", origin=origin),
        equal_nan=True,
    )


def test_past_the_budget_scipy_takes_over_with_the_same_values(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(3).normal(size=5000)
    monkeypatch.setattr(_rolling, "_scipy", None)
    monkeypatch.setattr(_rolling, "_spent", 0)
    monkeypatch.setattr(_rolling, "NUMPY_BUDGET", 5000 * 301 + 1)
    by_numpy = median_filter(x, 301, 150)
    assert _rolling._scipy is None and _rolling._spent == 5000 * 301
    by_scipy = median_filter(x, 301, 150)
    assert _rolling._scipy is not None
    assert np.array_equal(by_numpy, by_scipy)
    assert np.array_equal(by_numpy, scipy_median_filter(x, size=301, mode="nearest", origin=150))
