"""cron_herd beyond minute 0 (issue 8, "Cron"): the period and phase a finding names, the
token-expiry reading and its recommendation, and the recurrence test's false-positive rate on
uniformly scattered spikes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from herdwatch.detect.cron import CronParams, _recurrence, detect_cron_herd
from herdwatch.engine import scan
from herdwatch.model import Finding, Signal
from herdwatch.signals import SignalSet
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


def test_a_latency_spike_is_dated_back_by_the_latency_it_reports() -> None:
    """A report job at each boundary: busy connections (sampled every 0.1 s) spike at once, the
    p99 (one sample a second) at its first sample after the reports completed (they take
    0.45 s; that sample comes 1.4 s after the boundary, past the connections' spike and the
    merge gap of three start delays). The p99 spike stands for queries that began about 0.45 s
    before it, and after the sample before it less that: the same occurrence as the
    connections' spike, not a second one off the boundary (the old reading: 12 occurrences,
    half of them in phase, not significant)."""
    rng = np.random.default_rng(12)
    period, took, first = 12.0, 0.45, 24.0
    marks = [first + k * period for k in range(6)]
    t_conn = s.T0 + np.arange(0.0, 96.0, 0.1)
    conns = rng.poisson(1.5, len(t_conn)).astype(float)
    t_p99 = s.T0 + 0.4 + np.arange(0.0, 96.0, 1.0)
    p99 = 0.003 * np.exp(0.2 * rng.standard_normal(len(t_p99)))
    for m in marks:
        conns[(t_conn - s.T0 >= m) & (t_conn - s.T0 < m + 0.6)] = 18.0
        # reports complete from m + took: the trailing window of the two samples after shows them
        p99[(t_p99 - s.T0 > m + took) & (t_p99 - s.T0 <= m + took + 2.0)] = took
    sigs = SignalSet(
        signals={
            "db_connections": Signal("db_connections", t_conn, conns, 0.1),
            "db_latency_p99": Signal("db_latency_p99", t_p99, p99, 1.0),
        }
    )
    scale = period / 60.0
    p = CronParams(
        periods=tuple(q * scale for q in CronParams().periods),
        baseline=CronParams().baseline * scale,
        start_delay=2.0 * scale,
    )
    (f,) = detect_cron_herd(sigs, p)
    occ = f.evidence["occurrences"]
    assert len(occ) == len(marks) and f.evidence["unaligned_spikes"] == 0
    assert all(o["signals"] == ["db_connections", "db_latency_p99"] for o in occ)
    assert [round(o["onset"] - s.T0, 1) for o in occ] == marks
    assert f.evidence["period_seconds"] == period
