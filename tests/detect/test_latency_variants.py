"""The database p99 the stampede rule reads, whatever shape the latency comes in (issue 8,
"Latency variants"): two bucket layouts under one family, milliseconds, a summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdwatch.model import Series
from herdwatch.signals._build import quantile_signal

DB = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ALT = (0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048)
T = 1_764_000_000.0 + np.arange(0.0, 600.0, 15.0)


def _lognorm_cdf(x: float, median: float, sigma: float) -> float:
    return 0.5 * math.erfc(-(math.log(x) - math.log(median)) / (sigma * math.sqrt(2)))


def _histogram(
    bounds: tuple[float, ...], rate: float, median: float, sigma: float, inst: str, scale: float
) -> list[Series]:
    """Exact expected cumulative counts of a lognormal stream (no sampling noise)."""
    fam = "db_query_duration_milliseconds" if scale != 1 else "db_query_duration_seconds"
    out = []
    for b in (*bounds, math.inf):
        share = 1.0 if math.isinf(b) else _lognorm_cdf(b, median, sigma)
        le = "+Inf" if math.isinf(b) else f"{b * scale:g}"
        labels = tuple(sorted({"instance": inst, "le": le}.items()))
        v = rate * share * (T - T[0] + 15.0)
        out.append(Series(fam + "_bucket", labels, T, v, fam, "histogram"))
    return out


def _p99(series: list[Series]) -> float:
    sig = quantile_signal(series, 0.99, "db_latency_p99", "")
    assert sig is not None
    return float(np.nanmedian(sig.v[2:]))


@given(
    median=st.floats(0.003, 0.2),
    sigma=st.floats(0.3, 1.0),
    share=st.floats(0.2, 0.8),
)
def test_two_bucket_layouts_read_as_one_distribution(
    median: float, sigma: float, share: float
) -> None:
    """Some clients on another layout: the p99 stays in the bucket of the true one (every
    bucket of both layouts is at most 2.5x wide), never +Inf."""
    mixed = _histogram(DB, 1000 * share, median, sigma, "a", 1.0) + _histogram(
        ALT, 1000 * (1 - share), median, sigma, "b", 1.0
    )
    truth = median * math.exp(2.3263 * sigma)
    got = _p99(mixed)
    assert math.isfinite(got)
    assert truth / 2.5 <= got <= truth * 2.5


def test_a_histogram_in_milliseconds_reads_in_seconds() -> None:
    ms = _histogram(DB, 500.0, 0.02, 0.6, "a", 1000.0)
    s = _histogram(DB, 500.0, 0.02, 0.6, "a", 1.0)
    assert _p99(ms) == pytest.approx(_p99(s), rel=1e-9)


def test_a_summary_gives_its_nearest_quantile_largest_across_instances() -> None:
    series = []
    for inst, level in (("a", 0.05), ("b", 0.08)):
        for q, f in (("0.5", 0.2), ("0.9", 0.6), ("0.99", 1.0)):
            labels = tuple(sorted({"instance": inst, "quantile": q}.items()))
            v = np.full(len(T), level * f)
            series.append(
                Series(
                    "db_query_duration_seconds",
                    labels,
                    T,
                    v,
                    "db_query_duration_seconds",
                    "summary",
                )
            )
    sig = quantile_signal(series, 0.99, "db_latency_p99", "")
    assert sig is not None and np.allclose(sig.v, 0.08)
    assert 'quantile="0.99"' in sig.derived_from
