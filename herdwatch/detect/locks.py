"""lock_timeout_cluster: lock-timeout / connection-refused errors packed far beyond Poisson."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from herdwatch.detect._common import num, rnd
from herdwatch.detect._stats import poisson_clusters
from herdwatch.model import Finding, LogEvent, Recommendation
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
    dedup_window: float = 0.05
    edge_gap: float = 10.0


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


def _file_of(ev: LogEvent) -> str:
    return ev.where.rsplit(":", 1)[0]


def once_per_error(events: list[LogEvent], window: float) -> list[LogEvent]:
    """One event per error that several layers logged (the database, the driver, the app):
    an event of the same kind from another file within `window` s of a kept one joins it.

    One file never merges with itself, so a real burst of 1,800 lock timeouts in the Postgres
    log stays 1,800 however close they are; the same 1,800 also logged by the app count once.
    """
    out: list[LogEvent] = []
    open_: dict[str, tuple[float, set[str]]] = {}  # kind -> (first time, files in it)
    for ev in sorted(events, key=lambda e: e.timestamp):
        f = _file_of(ev)
        cur = open_.get(ev.kind)
        if cur is not None and ev.timestamp - cur[0] <= window and f not in cur[1]:
            cur[1].add(f)
            continue
        open_[ev.kind] = (ev.timestamp, {f})
        out.append(ev)
    return out


def core(members: list[LogEvent], edge_gap: float) -> list[LogEvent]:
    """The cluster without stray background errors at its edges: an edge event whose gap to
    its neighbour is more than `edge_gap` x the members' median gap (and over a second) is
    dropped, so a 2 s burst after background errors starts at its first error and spans 2 s,
    not the scan window's 300 s."""
    t = np.array([ev.timestamp for ev in members])
    if len(t) < 3:
        return members
    med = float(np.median(np.diff(t)))
    lim = max(1.0, edge_gap * med)
    lo, hi = 0, len(t) - 1
    while hi - lo >= 2 and t[lo + 1] - t[lo] > lim:
        lo += 1
    while hi - lo >= 2 and t[hi] - t[hi - 1] > lim:
        hi -= 1
    return members[lo : hi + 1]


def detect_lock_timeout_cluster(sigs: SignalSet, p: LockClusterParams) -> list[Finding]:
    events = once_per_error([ev for ev in sigs.events if ev.kind in p.kinds], p.dedup_window)
    if len(events) < p.min_count or sigs.window is None:
        return []
    times = np.array([ev.timestamp for ev in events])
    out: list[Finding] = []
    for c in poisson_clusters(
        times, sigs.window, widths=p.widths, alpha=p.alpha, min_count=p.min_count
    ):
        members = core(events[c.first : c.last + 1], p.edge_gap)
        t0, t1 = members[0].timestamp, members[-1].timestamp
        kinds = Counter(ev.kind for ev in members)
        evidence: LockClusterEvidence = {
            "errors": len(members),
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
            f"{len(members)} errors ({kind_txt}) within {rnd(max(t1 - t0, 0.0), 3)}s; "
            f"{rnd(c.expected, 2)} expected (p={rnd(c.p_corrected, 2)})"
        )
        sev = "critical" if len(members) >= 4 * p.min_count else "warning"
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
