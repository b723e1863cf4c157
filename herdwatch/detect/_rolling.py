"""Rolling medians, as `scipy.ndimage.median_filter(x, size, mode="nearest", origin=...)` gives
them, without importing scipy (about 0.2 s of CPU) when a process needs only a few.

For a window of `size` the filter takes, at each i, the element of rank size // 2 (the upper
median for an even size) of x[i - size // 2 - origin : i - size // 2 - origin + size], the
array extended by its edge values. numpy's sliding partition does that in O(size) per sample
(about 2.6 ns a cell here), scipy's rank filter in O(log size): a process first spends up to
`NUMPY_BUDGET` cells on numpy (a one-shot scan of a recorded incident usually stays below it),
then imports scipy and uses it from then on (a daemon, a long replay). Both give the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from herdwatch.model import FloatArray

__all__ = ["NUMPY_BUDGET", "median_filter"]

#: window cells (samples x size) a process computes with numpy before it switches to scipy:
#: about 0.1 s, half what importing scipy.ndimage costs
NUMPY_BUDGET = 40_000_000
_CHUNK_CELLS = 1_000_000
_spent = 0
_scipy: Callable[..., Any] | None = None


def median_filter(x: FloatArray, size: int, origin: int = 0) -> FloatArray:
    """scipy.ndimage.median_filter(x, size=size, mode="nearest", origin=origin) for a 1-d float
    array (origin (size - 1) // 2 makes the window trail: the `size` samples ending at i)."""
    global _spent, _scipy
    if not -(size // 2) <= origin <= (size - 1) // 2:
        raise ValueError(f"origin {origin} outside the window of {size}")
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0 or size <= 1:
        return x.copy()
    if _scipy is None and _spent + n * size > NUMPY_BUDGET:
        from scipy.ndimage import median_filter as scipy_median_filter

        _scipy = scipy_median_filter
    if _scipy is not None:
        out: FloatArray = _scipy(x, size=size, mode="nearest", origin=origin)
        return out
    _spent += n * size
    before = size // 2 + origin
    after = size - 1 - before
    padded = np.concatenate([np.full(before, x[0]), x, np.full(after, x[-1])])
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)
    rank = size // 2
    result = np.empty(n)
    rows = max(1, _CHUNK_CELLS // size)
    for i in range(0, n, rows):
        part = np.partition(windows[i : i + rows], rank, axis=1)
        result[i : i + rows] = part[:, rank]
    return result
