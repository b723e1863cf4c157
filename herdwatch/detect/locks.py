"""lock_timeout_cluster: lock-timeout / connection-refused errors packed far beyond Poisson."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from herdwatch.detect._common import num, rnd
from herdwatch.detect._stats import poisson_clusters
from herdwatch.model import Finding, Recommendation
from herdwatch.signals import SignalSet

__all__ = [
    "LockClusterEvidence",
    "LockClusterParams",
    "detect_lock_timeout_cluster",
    "recommend_lock_timeout_cluster",
]


@dataclass(frozen=True, slots=True)
class LockClusterParams:
    kinds: tuple[str, ...] = ("lock_timeout", "connection_refused", "deadlock")
    widths: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0, 300.0)
    alpha: float = 0.0001
    min_count: int = 5


class LockClusterEvidence(TypedDict):
    """A lock_timeout_cluster finding's evidence (JSON-ready; the keys are the contract)."""

    errors: int
    window_seconds: float | None
    span_seconds: float | None
    expected_in_window: float | None
    background_per_hour: float | None
    p_value: float | None
    p_value_corrected: float | None
    kinds: dict[str, int]
    first_error: str
    first_message: str
    total_errors_in_window: int


def detect_lock_timeout_cluster(sigs: SignalSet, p: LockClusterParams) -> list[Finding]:
    events = [ev for ev in sigs.events if ev.kind in p.kinds]
    if len(events) < p.min_count or sigs.window is None:
        return []
    times = np.array([ev.timestamp for ev in events])
    out: list[Finding] = []
    for c in poisson_clusters(
        times, sigs.window, widths=p.widths, alpha=p.alpha, min_count=p.min_count
    ):
        members = events[c.first : c.last + 1]
        t0, t1 = members[0].timestamp, members[-1].timestamp
        kinds = Counter(ev.kind for ev in members)
        evidence: LockClusterEvidence = {
            "errors": c.count,
            "window_seconds": rnd(c.window),
            "span_seconds": rnd(t1 - t0),
            "expected_in_window": rnd(c.expected),
            "background_per_hour": rnd(c.background_rate * 3600),
            "p_value": rnd(c.p_value),
            "p_value_corrected": rnd(c.p_corrected),
            "kinds": dict(kinds),
            "first_error": members[0].where,
            "first_message": members[0].message[:200],
            "total_errors_in_window": len(events),
        }
        kind_txt = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        summary = (
            f"{c.count} errors ({kind_txt}) within {rnd(max(t1 - t0, 0.0), 3)}s; "
            f"{rnd(c.expected, 2)} expected (p={rnd(c.p_corrected, 2)})"
        )
        sev = "critical" if c.count >= 4 * p.min_count else "warning"
        out.append(
            Finding(
                "lock_timeout_cluster",
                t0,
                t1,
                sev,
                summary,
                dict(evidence),
                signals=("error_logs",),
            )
        )
    return sorted(out, key=lambda f: f.onset)


def recommend_lock_timeout_cluster(f: Finding) -> list[Recommendation]:
    """What to change for a lock_timeout_cluster finding, best first, numbers from its evidence."""
    n = int(num(f.evidence, "errors", default=0.0))
    span = num(f.evidence, "span_seconds", default=1.0)
    return [
        Recommendation(
            "Serialize writers of the hot row before they reach the database",
            f"{n} lock waits timed out within {span:g}s: many transactions queued on one lock. "
            f"Collapse identical writes (one leader per key) or take an advisory lock with "
            f"SKIP LOCKED / NOWAIT and return fast.",
            "SELECT ... FOR UPDATE SKIP LOCKED",
            "herdwatch.cache.SingleFlight",
        ),
        Recommendation(
            "Retry lock timeouts with decorrelated jitter, within a retry budget",
            "Immediate retries re-form the same queue; decorrelated jitter "
            "min(cap, U(base, prev*3)) breaks the lockstep, and a budget stops amplification.",
            "Backoff(base=0.05, cap=5, mode='decorrelated'); RetryBudget(ratio=0.1)",
            "herdwatch.cache.Backoff / RetryBudget",
        ),
        Recommendation(
            "Keep lock_timeout short and transactions small",
            "A short lock_timeout fails fast instead of stacking waiters; check what held the lock "
            "at the onset (pg_locks where not granted).",
            "SET lock_timeout = '2s';",
            "postgresql lock_timeout",
        ),
    ]
