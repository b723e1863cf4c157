"""The Snapshot: plain data that the daemon, `herdwatch top`, the lab and `scan` read.

Everything a view or a notifier shows is computed here or in the scan (baselines and scores
included), so a renderer only formats. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from herdwatch.model import Finding, FloatArray, Labels, NotEvaluated, ScanResult, Signal
from herdwatch.signals import median_of

__all__ = [
    "FINDING_STATES",
    "SignalView",
    "Snapshot",
    "SourceHealth",
    "TickCost",
    "TrackedFinding",
    "signal_view",
]

#: a finding is `active` while its data still shows it, `resolved` once it ended, `withdrawn`
#: when later data no longer supports it (a look-alike that more samples explained away)
FINDING_STATES = ("active", "resolved", "withdrawn")
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True, eq=False)
class SignalView:
    """A logical signal as a view shows it: its recent samples, the latest value, its baseline
    (the median of the `baseline` seconds before the latest sample) and the latest value's robust
    deviation score, (value - baseline) / (1.4826 MAD), the scale floored at 5 % of the baseline."""

    name: str
    subject: Labels
    t: FloatArray
    v: FloatArray
    value: float
    baseline: float
    score: float
    step: float
    derived_from: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": dict(self.subject),
            "value": _finite(self.value),
            "baseline": _finite(self.baseline),
            "score": _finite(self.score),
            "step": _finite(self.step),
        }


def _finite(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def signal_view(sig: Signal, subject: Labels, *, recent: float, baseline: float) -> SignalView:
    """The view of `sig`: samples of the last `recent` seconds, baseline and score of the last
    finite value against the `baseline` seconds before it."""
    t, v = sig.t, sig.v
    if len(v) and math.isfinite(v[-1]):
        last = len(v) - 1  # the usual case: no scan for the last finite value
    else:
        finite = np.flatnonzero(np.isfinite(v))
        if not len(finite):
            empty = np.empty(0)
            return SignalView(sig.name, subject, empty, empty, math.nan, math.nan, math.nan,
                              sig.step)  # fmt: skip
        last = int(finite[-1])
    t_last = float(t[last])
    # a signal's times ascend (its grid): each time range below is a slice, found by bisection
    keep = int(np.searchsorted(t, t_last - recent, side="left"))
    lo = int(np.searchsorted(t, t_last - baseline, side="left"))
    hi = int(np.searchsorted(t, t_last, side="left"))
    before = v[lo:hi]
    if not np.isfinite(before).all():
        before = before[np.isfinite(before)]
    value = float(v[last])
    if len(before) >= 3:
        base = median_of(before)
        mad = median_of(np.abs(before - base)) * _MAD_TO_SIGMA
        scale = max(mad, 0.05 * abs(base), 1e-12)
        score = (value - base) / scale
    else:
        base = score = math.nan
    return SignalView(
        sig.name, subject, t[keep:].copy(), v[keep:].copy(), value, base, score, sig.step,
        sig.derived_from,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrackedFinding:
    """A finding followed across ticks: `id` stays the same while it lasts (same signature, same
    subject, overlapping in time); `finding` is its latest version."""

    id: str
    state: str
    finding: Finding
    first_seen: float
    last_seen: float

    @property
    def signature(self) -> str:
        return self.finding.signature

    @property
    def subject(self) -> Labels:
        return self.finding.subject

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            **self.finding.to_json(),
        }


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One source as the Watcher last saw it. `next_retry` is set while it is unhealthy;
    `recovered_at` is when it last came back after failing."""

    name: str
    healthy: bool
    last_success: float | None = None
    last_error: str = ""
    next_retry: float | None = None
    failures: int = 0
    recovered_at: float | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.healthy}
        if self.detail:
            out["detail"] = self.detail
        if self.last_error:
            out["last_error"] = self.last_error
        for key in ("last_success", "next_retry", "recovered_at"):
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 3)
        if self.failures:
            out["failures"] = self.failures
        return out


@dataclass(frozen=True, slots=True)
class TickCost:
    """What a tick cost: wall seconds of the scan, and the raw data it read."""

    seconds: float
    series: int
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 6), "series": self.series, "samples": self.samples}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the Watcher knows at `at`: the window it scanned, each signal's view (fleet-wide and
    per subject), the findings (active and recently ended), source health, the rules that could
    not run, and the tick's cost. `result` is the tick's scan, for the report renderer."""

    at: float
    window: tuple[float, float] | None
    signals: tuple[SignalView, ...]
    findings: tuple[TrackedFinding, ...]
    sources: tuple[SourceHealth, ...]
    not_evaluated: tuple[NotEvaluated, ...]
    cost: TickCost
    result: ScanResult = field(repr=False)

    @property
    def active(self) -> tuple[TrackedFinding, ...]:
        return tuple(f for f in self.findings if f.state == "active")

    def to_json(self) -> dict[str, Any]:
        start, end = self.window if self.window else (None, None)
        return {
            "at": round(self.at, 3),
            "window": {"start": start, "end": end},
            "findings": [f.to_json() for f in self.findings],
            "signals": [s.to_json() for s in self.signals],
            "sources": [s.to_json() for s in self.sources],
            "not_evaluated": [n.to_json() for n in self.not_evaluated],
            "cost": self.cost.to_json(),
        }
