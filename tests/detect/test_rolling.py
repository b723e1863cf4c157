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
    origin = data.draw(st.integers(-(size // 2), (size - 1) // 2))
    assert np.array_equal(
        median_filter(x, size, origin),
        scipy_median_filter(x, size=size, mode="nearest", origin=origin),
        equal_nan=True,
    )


def test_long_arrays_go_to_scipy_and_agree(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(3).normal(size=5000)
    small = median_filter(x, 301)
    monkeypatch.setattr(_rolling, "NUMPY_CELLS", 10)
    assert np.array_equal(small, median_filter(x, 301))
    assert np.array_equal(small, scipy_median_filter(x, size=301, mode="nearest"))
