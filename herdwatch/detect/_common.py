"""Small helpers the detectors share: windows of a signal, times, rounding for evidence."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from herdwatch.model import FloatArray, Signal

__all__ = ["at", "index_at", "rnd", "window", "window_values"]


def rnd(x: float, digits: int = 4) -> float | None:
    """A float fit for JSON evidence: rounded to `digits` significant digits, None for NaN/Inf."""
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return float(f"{x:.{digits}g}")


def index_at(sig: Signal, t: float) -> int:
    """Index of the first sample at or after t (clipped to the signal)."""
    return min(int(np.searchsorted(sig.t, t, side="left")), len(sig.t) - 1)


def window(sig: Signal, t0: float, t1: float) -> slice:
    """Samples with t0 <= t <= t1."""
    i0 = int(np.searchsorted(sig.t, t0, side="left"))
    i1 = int(np.searchsorted(sig.t, t1, side="right"))
    return slice(i0, i1)


def window_values(sig: Signal, t0: float, t1: float) -> FloatArray:
    v = sig.v[window(sig, t0, t1)]
    return v[np.isfinite(v)]


def at(sig: Signal, i: int) -> dict[str, Any]:
    return {"t": float(sig.t[i]), "value": rnd(float(sig.v[i]))}
