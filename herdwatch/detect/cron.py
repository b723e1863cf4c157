"""cron_herd: load spikes that recur at wall-clock boundaries.

Spike onsets are tested for sitting on the boundary of a period (binomial test of the in-phase
count against 2 tol / period, Bonferroni over the periods tested); the Rayleigh phase
concentration of all spikes is reported alongside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from herdwatch.detect._common import nice, num, rnd
from herdwatch.detect._stats import binom_sf, find_excursions, rayleigh
from herdwatch.model import Finding, Recommendation
from herdwatch.signals import SignalSet

__all__ = ["CronHerdEvidence", "CronParams", "detect_cron_herd", "recommend_cron_herd"]

_COUNT_SIGNALS = frozenset({"requests", "context_switches", "cache_misses", "upstream_requests"})
_LOAD_SIGNALS = (
    "requests",
    "db_connections",
    "cpu_busy",
    "context_switches",
    "cache_misses",
    "upstream_requests",
    "db_latency_p99",
)


@dataclass(frozen=True, slots=True)
class CronParams:
    baseline: float = 1800.0
    z_enter: float = 6.0
    min_factor: float = 1.5
    min_occurrences: int = 3
    periods: tuple[float, ...] = (60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 86400.0)
    alpha: float = 0.001
    phase_tolerance: float = 0.02
    min_in_phase: float = 0.6


@dataclass(frozen=True, slots=True)
class _Spike:
    onset: float
    end: float
    signal: str
    factor: float


class Occurrence(TypedDict):
    onset: float
    end: float
    signals: list[str]
    factor: float | None


class CronHerdEvidence(TypedDict):
    """A cron_herd finding's evidence (JSON-ready; the keys are the contract)."""

    period_seconds: float | None
    occurrences: list[Occurrence]
    p_value: float | None
    rayleigh_p: float | None
    mean_offset_seconds: float | None
    spike_seconds: float | None
    unaligned_spikes: int


def _spikes(sigs: SignalSet, p: CronParams) -> tuple[list[_Spike], float]:
    found: list[_Spike] = []
    step = np.inf
    for name in _LOAD_SIGNALS:
        sig = sigs.get(name)
        if sig is None or len(sig.t) < 10:
            continue
        step = min(step, sig.step)
        for e in find_excursions(
            sig,
            baseline_s=p.baseline,
            z_enter=p.z_enter,
            min_factor=p.min_factor,
            rel_floor=0.05,
            poisson=name in _COUNT_SIGNALS,
        ):
            found.append(
                _Spike(float(sig.t[e.onset]), float(sig.t[e.end]) + sig.step, name, e.factor)
            )
    return sorted(found, key=lambda s: s.onset), float(step)


def _merge(spikes: list[_Spike], gap: float) -> list[list[_Spike]]:
    """Spikes of several signals that start within `gap` of each other are one occurrence."""
    groups: list[list[_Spike]] = []
    for s in spikes:
        if groups and s.onset - groups[-1][0].onset <= gap:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _onset(group: list[_Spike], step: float) -> float:
    """The earliest onset that another signal confirms within a step (5 s at the least): one
    noisy signal walking back alone does not move the occurrence."""
    times = sorted(s.onset for s in group)
    if len(times) == 1:
        return times[0]
    for i, t in enumerate(times):
        others = times[:i] + times[i + 1 :]
        if any(abs(o - t) <= max(step, 5.0) for o in others):
            return t
    return times[len(times) // 2]


def detect_cron_herd(sigs: SignalSet, p: CronParams) -> list[Finding]:
    spikes, step = _spikes(sigs, p)
    if len(spikes) < p.min_occurrences or not np.isfinite(step):
        return []
    occurrences = _merge(spikes, max(3 * step, 30.0))
    times = np.array([_onset(g, step) for g in occurrences])
    tested = [q for q in p.periods if max(2 * step, p.phase_tolerance * q) < q / 4]
    best: tuple[float, float, float, float, npt.NDArray[np.bool_]] | None = None
    for period in sorted(tested, reverse=True):
        tol = max(2 * step, p.phase_tolerance * period)
        off = (times + period / 2) % period - period / 2  # signed distance to the boundary
        in_phase = np.abs(off) <= tol
        n_in = int(in_phase.sum())
        if n_in < p.min_occurrences or n_in < p.min_in_phase * len(times):
            continue
        # distinct boundaries: a single burst split into pieces is not a recurrence
        if len(np.unique(np.round((times[in_phase] - off[in_phase]) / period))) < p.min_occurrences:
            continue
        # Under no clock alignment a spike lands within +-tol of a boundary with probability
        # 2 tol / period: a binomial test of the in-phase count, Bonferroni over the periods.
        q = 2 * tol / period
        p_boundary = min(1.0, binom_sf(n_in, len(times), q) * len(tested))
        if p_boundary < p.alpha:
            _, p_rayleigh, mean_off = rayleigh(times[in_phase], period)
            best = (period, p_boundary, rayleigh(times, period)[1], mean_off, in_phase)
            break
    if best is None:
        return []
    period, pval, p_rayleigh, mean_off, in_phase = best
    chosen = [g for g, keep in zip(occurrences, in_phase, strict=True) if keep]
    onsets = [_onset(g, step) for g in chosen]
    ends = [max(s.end for s in g) for g in chosen]
    sig_names = sorted({s.signal for g in chosen for s in g})
    evidence: CronHerdEvidence = {
        "period_seconds": rnd(period),
        "occurrences": [
            {
                "onset": o,
                "end": e,
                "signals": sorted({s.signal for s in g}),
                "factor": rnd(max(s.factor for s in g)),
            }
            for o, e, g in zip(onsets, ends, chosen, strict=True)
        ],
        "p_value": rnd(pval),
        "rayleigh_p": rnd(p_rayleigh),
        "mean_offset_seconds": rnd(mean_off),
        "spike_seconds": rnd(float(np.median(np.array(ends) - np.array(onsets)))),
        "unaligned_spikes": int(len(times) - in_phase.sum()),
    }
    label = {
        60: "every minute",
        300: "every 5 minutes",
        600: "every 10 minutes",
        900: "every 15 minutes",
        1800: "every 30 minutes",
        3600: "at the top of every hour",
        86400: "at midnight",
    }.get(int(period), f"every {int(period)}s")
    summary = (
        f"{len(chosen)} load spikes {label} ({', '.join(sig_names)}), "
        f"p={rnd(pval, 2)} on the boundary"
    )
    return [
        Finding(
            "cron_herd",
            onsets[0],
            ends[-1],
            "warning",
            summary,
            dict(evidence),
            signals=tuple(sig_names),
        )
    ]


def recommend_cron_herd(f: Finding) -> list[Recommendation]:
    """What to change for a cron_herd finding, best first, numbers from its evidence."""
    period = num(f.evidence, "period_seconds", default=3600.0)
    spike = max(num(f.evidence, "spike_seconds", default=60.0), 1.0)
    splay = nice(min(max(20 * spike, 60.0), period / 2))
    return [
        Recommendation(
            "Splay the scheduled job across the period",
            f"Spikes recur every {period:g}s on the boundary and last ~{spike:g}s. A random delay "
            f"up to {splay}s spreads the fleet (systemd RandomizedDelaySec, or a sleep of a "
            f"host-hashed offset in cron).",
            f"[Timer]\nRandomizedDelaySec={splay}\nFixedRandomDelay=true",
            "systemd RandomizedDelaySec",
        ),
        Recommendation(
            "Jitter token and cache lifetimes that line up with the clock",
            "Lifetimes that start at the top of the hour end together too: add per-key jitter.",
            f"HerdCache.from_url(url, ttl=TTL, ttl_jitter={splay})",
            "herdwatch.cache.Settings.ttl_jitter",
        ),
    ]
