"""Every registered detector and its recommendations survive hostile input: no exception, no
numpy warning (pytest runs with filterwarnings=error), JSON-ready evidence.

Hostile means what real exporters and broken scrapes produce: values near the float limit
(1e308, whose differences overflow), infinities, NaN runs and all-NaN signals, constant
series, two or three samples, a zero or negative step, and TTL samples that are all equal.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herdwatch.detect import DETECTORS, recommend
from herdwatch.model import Finding, KeyExpirySample, LogEvent, Signal
from herdwatch.signals import SignalSet

T0 = 1_764_000_000.0

#: the logical signals the detectors read, whole-fleet view
SIGNALS = (
    "miss_ratio",
    "cache_misses",
    "cache_requests",
    "requests",
    "db_latency_p99",
    "db_connections",
    "db_connections_max",
    "context_switches",
    "cpu_system_share",
    "cpu_busy",
    "upstream_requests",
)
KINDS = ("lock_timeout", "too_many_clients", "connection_refused", "deadlock")

hostile_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324, -1.0]),
    st.floats(0.0, 1e6),
)


@st.composite
def values(draw: st.DrawFn, n: int) -> np.ndarray:
    """n values in one of the shapes that broke detectors: constant, NaN runs, a step from a
    normal level to a hostile one, a ramp, or anything."""
    shape = draw(st.sampled_from(["any", "constant", "nan_run", "step", "ramp", "all_nan"]))
    if shape == "constant":
        return np.full(n, draw(hostile_floats))
    if shape == "all_nan":
        return np.full(n, np.nan)
    if shape == "ramp":
        with np.errstate(all="ignore"):  # a ramp between infinities is NaN: hostile too
            return np.linspace(draw(hostile_floats), draw(hostile_floats), n)
    if shape in ("nan_run", "step"):
        v = np.full(n, draw(st.floats(0.0, 1e4)))
        i = draw(st.integers(0, max(n - 1, 0)))
        j = draw(st.integers(i, n))
        v[i:j] = np.nan if shape == "nan_run" else draw(hostile_floats)
        return v
    return np.array(draw(st.lists(hostile_floats, min_size=n, max_size=n)), dtype=np.float64)


@st.composite
def signal_sets(draw: st.DrawFn) -> SignalSet:
    n = draw(st.one_of(st.integers(1, 4), st.integers(5, 400)))
    step = draw(st.sampled_from([0.05, 0.5, 1.0, 15.0, 60.0, 0.0, -1.0, math.nan]))
    t = T0 + np.arange(n) * (step if step > 0 else 1.0)

    def sig(name: str) -> Signal:
        return Signal(name, t, draw(values(n)), step)

    signals = {name: sig(name) for name in SIGNALS if draw(st.booleans())}
    groups: dict[str, dict[str, Signal]] = {}
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(["", "instance=db1:9187,job=pg", "db2"]), unique=True))
        groups["db_connections"] = {k: sig("db_connections") for k in keys}
        groups["db_connections_max"] = {k: sig("db_connections_max") for k in keys}
    if draw(st.booleans()):
        peers = draw(st.lists(st.sampled_from(["all", "auth", "billing"]), unique=True))
        up = {p: sig("upstream_requests") for p in peers}
        up |= {p + "#errors": sig("upstream_errors") for p in peers if draw(st.booleans())}
        groups["upstream_requests"] = up
    times = draw(
        st.lists(
            st.one_of(st.floats(T0, T0 + 3600), st.just(T0)), max_size=60
        )  # repeats: one instant logged many times
    )
    events = [LogEvent(ts, draw(st.sampled_from(KINDS)), "x.log:1", "m") for ts in sorted(times)]
    window = (T0, T0 + draw(st.floats(0.0, 7200.0))) if draw(st.booleans()) else None
    return SignalSet(signals, groups, events, window, draw(key_expiry()))


@st.composite
def key_expiry(draw: st.DrawFn) -> list[KeyExpirySample]:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        n = draw(st.one_of(st.integers(0, 3), st.integers(20, 300)))
        ttls = draw(values(n))
        if draw(st.booleans()):
            ttls = np.abs(ttls)
        sampled = draw(st.integers(0, 2 * n + 1))
        pats = tuple(draw(st.sampled_from(["user:*", "a:*"])) for _ in range(n))
        out.append(KeyExpirySample("redis r", T0, draw(st.integers(0, 10**9)), sampled, ttls, pats))
    return out


def _check(f: Finding) -> None:
    assert f.onset <= f.end + 1e-9, (f.onset, f.end)
    # a level it could not measure is said in words, never printed as None or nan
    assert not re.search(r"\bNone\b|\bnan\b", f.summary), f.summary
    try:
        json.dumps(f.to_json(), allow_nan=False)  # evidence is JSON-ready: no NaN, no Inf
    except ValueError as exc:
        raise AssertionError(f"{f.signature}: {f.to_json()}") from exc


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sigs=signal_sets())
def test_every_detector_survives_hostile_series(sigs: SignalSet) -> None:
    for name, spec in DETECTORS.items():
        for f in spec.run(sigs, spec.params()):
            _check(f)
            for r in recommend(f, name):
                assert r.action and r.detail


def test_traffic_near_the_float_limit_is_no_overflow_warning() -> None:
    """The example Hypothesis found in a fresh clone: a request rate near 1e308 beside a
    context-switch burst; the traffic's median (a mean of the two middle values) overflowed."""
    from herdwatch.detect.ctxswitch import _traffic_factor

    t = T0 + 15.0 * np.arange(8)
    sigs = SignalSet(signals={"requests": Signal("requests", t, np.full(8, 1e308), 15.0, "")})
    factor = _traffic_factor(sigs, T0 + 60.0, T0 + 90.0, 600.0)
    assert factor is None or not factor < 0  # a number (inf or NaN read as unknown), no warning
