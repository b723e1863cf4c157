"""The expanding part of the trailing baseline, computed in one padded sort, equals the median
and MAD np.median gives each prefix (the loop it replaced)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from herdwatch.detect._stats import _prefix_median_mad

finite = st.floats(-1e308, 1e308, allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, st.integers(3, 300), elements=finite), st.data())
def test_prefix_median_and_mad_equal_np_median(x: np.ndarray, data: st.DataObject) -> None:
    ks = sorted(set(data.draw(st.lists(st.integers(1, len(x)), min_size=1, max_size=40))))
    with np.errstate(all="ignore"):
        mk, dk = _prefix_median_mad(x, ks)
        for i, k in enumerate(ks):
            m = float(np.median(x[:k]))
            assert np.array_equal(mk[i], m, equal_nan=True)
            assert np.array_equal(dk[i], float(np.median(np.abs(x[:k] - m))), equal_nan=True)
