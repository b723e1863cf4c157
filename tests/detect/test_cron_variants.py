"""cron_herd beyond minute 0 (issue 8, "Cron"): the period and phase a finding names, the
token-expiry reading and its recommendation, and the recurrence test's false-positive rate on
uniformly scattered spikes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from herdwatch.detect.cron import CronParams, _recurrence
from herdwatch.engine import scan
from herdwatch.model import Finding
from herdwatch.sources.replay import load_replay
from tests.detect import _synth as s

INCIDENTS = Path(__file__).resolve().parents[2] / "fixtures" / "incidents"


def _cron(name: str) -> Finding:
    (f,) = [f for f in scan(load_replay(INCIDENTS / name)).findings if f.signature == "cron_herd"]
    return f


@pytest.mark.parametrize(
    ("name", "period", "phase", "cause", "words"),
    [
        ("cron_herd_minute7_unrelated_15s", 3600, 420, "scheduled_job", "minute 7 of every hour"),
        ("cron_herd_local_midnight_ist_60s", 86400, 66600, "scheduled_job", "UTC+05:30"),
        ("cron_herd_local_midnight_est_60s", 86400, 18000, "scheduled_job", "UTC-05:00"),
        ("cron_token_expiry_auth_900s_15s", 900, 317, "token_expiry", "every 15 min"),
        ("cron_token_expiry_accounts_3600s_30s", 3600, 2213, "token_expiry", "minute 37"),
    ],
)
def test_the_finding_names_period_phase_and_cause(
    name: str, period: float, phase: float, cause: str, words: str
) -> None:
    f = _cron(name)
    ev = f.evidence
    assert ev["period_seconds"] == period
    # the phase is the occurrences' onsets: the job's delay and a sample step after the mark
    assert 0 <= (ev["phase_seconds"] - phase) % period <= 120
    assert ev["cause"] == cause
    assert words in f.summary
    first = f.recommendations[0]
    if cause == "token_expiry":
        assert "jitter" in first.action and "refresh" in first.action.lower()
        assert f"{period * 0.75:g}" in first.detail
    else:
        assert "Splay" in first.action


def test_scattered_spikes_rarely_look_periodic() -> None:
    """Uniform spike times: the corrected test fires on at most a few of 300 recordings."""
    rng = np.random.default_rng(20261207)
    p = CronParams()
    span = (0.0, 12 * 3600.0)
    fired = 0
    for _ in range(300):
        n = int(rng.integers(3, 30))
        times = np.sort(rng.uniform(*span, n))
        fired += _recurrence(times, 15.0, p, 1, span) is not None
    assert fired <= 3


def test_a_week_of_a_five_minute_job() -> None:
    """2,016 occurrences: both tails underflow to 0, the period that holds them all wins (not
    its double), and the sweep stays n log n."""
    raw, first = s.cron_scenario(15.0, 30.0, period=300.0, recurring=True, duration=7 * 86400.0)
    (f,) = [f for f in scan(raw).findings if f.signature == "cron_herd"]
    assert f.evidence["period_seconds"] == 300
    assert len(f.evidence["occurrences"]) == 2016
    assert abs(f.onset - first) <= 15.0
