"""Rolling medians in numpy, as `scipy.ndimage.median_filter(x, size, mode="nearest")` gives
them, so a scan need not import scipy (about 0.2 s) for the common window sizes.

For a window of `size` the filter takes, at each i, the element of rank size // 2 (the upper
median for an even size) of x[i - size // 2 - origin : i - size // 2 - origin + size], the
array extended by its edge values. Long arrays and wide windows go to scipy's O(n log size)
filter instead.
"""

from __future__ import annotations

import numpy as np

from herdwatch.model import FloatArray

__all__ = ["NUMPY_CELLS", "median_filter"]

#: windows x samples up to which numpy's sliding partition is used (rows in chunks of this many
#: cells, so memory stays bounded); beyond it scipy's rank filter is faster
NUMPY_CELLS = 4_000_000
_CHUNK_CELLS = 1_000_000


def median_filter(x: FloatArray, size: int, origin: int = 0) -> FloatArray:
    """scipy.ndimage.median_filter(x, size=size, mode="nearest", origin=origin) for a 1-d float
    array (origin (size - 1) // 2 makes the window trail: the `size` samples ending at i)."""
    if not -(size // 2) <= origin <= (size - 1) // 2:
        raise ValueError(f"origin {origin} outside the window of {size}")
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0 or size <= 1:
        return x.copy()
    if n * size > NUMPY_CELLS:
        from scipy.ndimage import median_filter as scipy_median_filter

        out: FloatArray = scipy_median_filter(x, size=size, mode="nearest", origin=origin)
        return out
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
