"""A series already on the grid is summed as it is: the same values the general lookup gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from herdwatch.signals._math import _on_grid, counter_rate, counter_rates, median_of, sum_on_grid

values = st.floats(-1e6, 1e6) | st.just(float("nan"))


@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.floats(0.001, 30), unique=False),
            arrays(np.float64, n, elements=values),
        )
    ),
    st.sampled_from(["rate", "gauge"]),
)
def test_on_grid_fast_path_is_the_general_lookup(
    tv: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    steps, v = tv
    t = 1.7e9 + np.cumsum(steps)
    assert np.array_equal(
        sum_on_grid([(t, v)], t, kind=kind), _on_grid(t, v, t, kind, 2.5), equal_nan=True
    )


@given(
    st.integers(2, 40).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.floats(0.001, 30)),
            arrays(np.float64, (3, n), elements=values | st.just(1e308)),
        )
    )
)
def test_counter_rates_is_counter_rate_per_row(tv: tuple[np.ndarray, np.ndarray]) -> None:
    steps, rows = tv
    t = 1.7e9 + np.cumsum(steps)
    stacked = counter_rates(t, rows)
    for row, got in zip(rows, stacked, strict=True):
        assert np.array_equal(got, counter_rate(t, row), equal_nan=True)


@given(
    arrays(
        np.float64, st.integers(0, 50), elements=st.floats(-1e300, 1e300) | st.just(float("nan"))
    )
)
def test_median_of_is_np_median(x: np.ndarray) -> None:
    want = float(np.median(x)) if len(x) else float("nan")
    assert np.array_equal(median_of(x), want, equal_nan=True)
