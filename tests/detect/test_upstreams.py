"""retry_storm on issue 8's upstream shapes that a fixture does not pin alone: an outage whose
calls stop altogether for longer than the baseline window, the outcome vocabularies, and a
rate-limited surge."""

from __future__ import annotations

import numpy as np
import pytest

from herdwatch.engine import scan
from herdwatch.model import RawData
from herdwatch.signals import is_error_code
from tests.detect import _synth as s


def _storms(raw: RawData) -> list[float]:
    return [f.onset for f in scan(raw).findings if f.signature == "retry_storm"]


@pytest.mark.parametrize("step", [1.0, 15.0])
def test_calls_stopped_longer_than_the_baseline_then_a_storm(step: float) -> None:
    """A breaker holds every call for 20 minutes (no call, no error: only the successes say the
    upstream is down); a trailing baseline would learn the silence as normal within five."""
    rng = np.random.default_rng(8)
    t = s.grid(3 * 3600.0, step)
    t_out = float(t[0]) + 3600.0 + 0.3 * step
    t_rec = t_out + 1200.0
    down = (t > t_out) & (t <= t_rec)
    after = (t > t_rec) & (t <= t_rec + 90.0)
    rate = np.where(down, 0.0, 40.0) * np.where(after, 8.0, 1.0)
    lab = {"peer": "ledger", "status": "200"}
    raw = RawData(series=[s.counter("http_client_requests_total", t, rate, rng, lab)])
    onsets = _storms(raw)
    first = float(t[np.flatnonzero(after)[0]])
    assert len(onsets) == 1 and abs(onsets[0] - first) <= step


def test_a_rate_limited_surge_is_no_storm() -> None:
    rng = np.random.default_rng(9)
    t = s.grid(2 * 3600.0, 15.0)
    surge = (t > t[0] + 3600.0) & (t <= t[0] + 4200.0)
    calls = np.where(surge, 250.0, 50.0)
    ok = np.minimum(calls, 60.0)
    lab = {"peer": "search"}
    series = [
        s.counter("http_client_requests_total", t, ok, rng, {**lab, "code": "200"}),
        s.counter("http_client_requests_total", t, calls - ok, rng, {**lab, "code": "429"}),
    ]
    assert _storms(RawData(series=series)) == []


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("IO_ERROR", True),
        ("CLIENT_ERROR", True),
        ("SERVER_ERROR", True),
        ("DEADLINE_EXCEEDED", True),
        ("RESOURCE_EXHAUSTED", True),
        ("429", True),
        ("503", True),
        ("SUCCESS", False),
        ("200", False),
        ("404", False),
    ],
)
def test_outcome_words(code: str, error: bool) -> None:
    assert is_error_code(code) is error
