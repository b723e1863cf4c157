"""Small helpers the detectors share: windows of a signal, times, rounding for evidence."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from herdwatch.model import FloatArray, Labels, Signal

__all__ = [
    "at",
    "excess",
    "grid_step",
    "group_labels",
    "index_at",
    "median",
    "nice",
    "num",
    "quantile",
    "rnd",
    "window",
    "window_values",
]


def rnd(x: float, digits: int = 4) -> float | None:
    """A float fit for JSON evidence: rounded to `digits` significant digits, None for NaN/Inf."""
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    r = float(f"{x:.{digits}g}")
    # rounding the largest floats up overflows (1.798e308 is inf): keep them exact instead
    return r if math.isfinite(r) else float(x)


#: `name=` at the start of a group key or after a comma: where one label of the key begins
_LABEL = re.compile(r"(?:^|,)([A-Za-z_][A-Za-z0-9_]*)=")


def group_labels(key: str, drop_if_others: tuple[str, ...] = ("job",)) -> Labels:
    """The labels of a signal group's key (`instance=db1:9187,job=pg`), sorted by name, less
    `drop_if_others` when other labels remain (`job` names the scrape, not what herded).
    A value may hold commas; a key that is no `name=value` list gives no labels."""
    starts = list(_LABEL.finditer(key))
    if not starts or starts[0].start() != 0:
        return ()
    labels = []
    for m, nxt in zip(starts, [*starts[1:], None], strict=True):
        value = key[m.end() : nxt.start() if nxt else len(key)]
        labels.append((m.group(1), value))
    kept = [(k, v) for k, v in labels if k not in drop_if_others]
    return tuple(sorted(kept if kept else labels))


def grid_step(sig: Signal) -> float:
    """The signal's sample interval: its `step`, else the median spacing of its samples, else
    1 s (a signal of one sample has no step; detectors divide by it)."""
    if sig.step > 0 and math.isfinite(sig.step):
        return float(sig.step)
    if len(sig.t) > 1:
        d = float(np.median(np.diff(sig.t)))
        if d > 0 and math.isfinite(d):
            return d
    return 1.0


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


# Values near the float limit (1e308, a broken exporter) are finite, but the mean of two of
# them, their difference or their sum is not: these reductions return inf (or NaN for inf - inf)
# there, which the callers' comparisons read as "far away" or "unknown", without a warning.


def median(x: FloatArray) -> float:
    """The median of the finite values of x; NaN when there are none."""
    v = x[np.isfinite(x)]
    if len(v) == 0:
        return math.nan
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.median(v))


def quantile(x: FloatArray, q: float) -> float:
    """The q-quantile of non-empty, finite x (linear interpolation, numpy's default)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.quantile(x, q))


def excess(x: FloatArray, level: float) -> float:
    """Sum of the excess of x over `level`, NaN ignored."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.nansum(np.maximum(x - level, 0.0)))


#: no evidence value a recommendation reads (seconds, rates, counts) is a measurement beyond
#: this (31 million years, a peta-request per second): a broken exporter's 1e308 is "not known"
_PLAUSIBLE = 1e15


def num(d: Any, *keys: str, default: float = math.nan) -> float:
    """The number at d[k1][k2]... in a finding's evidence, else `default` (a missing key, None,
    a non-number, an infinity or an implausible magnitude all mean "not measured")."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    if isinstance(d, bool) or not isinstance(d, int | float) or not abs(d) <= _PLAUSIBLE:
        return default
    return float(d)


def nice(seconds: float) -> int:
    """Round a duration up to a figure people write in configs (1, 2, 5, 10, 15, 30, 60...);
    past an hour, whole hours, and at most a year."""
    for v in (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 600, 900, 1200, 1800, 3600):
        if seconds <= v:
            return v
    return int(math.ceil(min(seconds, 365 * 86400.0) / 3600) * 3600)
