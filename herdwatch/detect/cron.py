"""cron_herd: load spikes that recur at a fixed phase of a period (a clock boundary, a local
midnight, minute 7, a token's lifetime from its issuance).

Occurrences (spikes of the load signals, merged across signals) are tested for recurrence per
period: the most occurrences on distinct boundaries that fit in one phase window of width
2 tol, against what uniform phases would put there. For a window anchored anywhere the bound is
n * P(Binomial(n - 1, 2 tol / period) >= k - 1) (each in-phase set has a first point; the others
fall after it by chance); for the window on the clock's own boundary (minute 0, midnight UTC)
it is P(Binomial(n, 2 tol / period) >= k). The smaller of the two is doubled and corrected
(Bonferroni) over the periods and the channels tested (the whole fleet and each upstream peer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from herdwatch.detect._common import nice, num, rnd
from herdwatch.detect._stats import binom_sf, find_excursions, rayleigh, samples, trailing_mean
from herdwatch.model import Finding, Recommendation, Signal
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
#: latency signals: a sample reports queries as they complete, each `latency` after it began
_LATENCY_SIGNALS = frozenset({"db_latency_p99"})
#: words in a peer's name that say it issues tokens (an identity provider)
_IDENTITY_WORDS = ("auth", "idp", "oauth", "token", "sts", "keycloak", "okta", "login", "sso")


@dataclass(frozen=True, slots=True)
class CronParams:
    baseline: float = 1800.0
    z_enter: float = 6.0
    min_factor: float = 1.5
    min_occurrences: int = 3
    periods: tuple[float, ...] = (
        60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 600.0, 720.0, 900.0, 1200.0, 1800.0,
        3600.0, 7200.0, 10800.0, 14400.0, 21600.0, 28800.0, 43200.0, 86400.0,
    )  # fmt: skip
    alpha: float = 0.001
    phase_tolerance: float = 0.02
    start_delay: float = 10.0
    min_in_phase: float = 0.5
    min_hit_rate: float = 0.5


@dataclass(frozen=True, slots=True)
class _Spike:
    onset: float
    end: float
    signal: str
    factor: float
    #: the earliest time the load it shows may have begun (a latency spike's queries may have
    #: started before its onset sample; see _spikes_of); the onset for any other signal
    reach: float


class Occurrence(TypedDict):
    onset: float
    end: float
    signals: list[str]
    factor: float | None


class CronHerdEvidence(TypedDict):
    """A cron_herd finding's evidence (JSON-ready; the keys are the contract)."""

    period_seconds: float | None
    phase_seconds: float | None
    cause: str
    peer: str | None
    occurrences: list[Occurrence]
    p_value: float | None
    rayleigh_p: float | None
    mean_offset_seconds: float | None
    spike_seconds: float | None
    unaligned_spikes: int


@dataclass(frozen=True, slots=True)
class _Recurrence:
    period: float
    tol: float
    p_value: float
    in_phase: npt.NDArray[np.bool_]
    distinct: int
    phase: float  # seconds after the period's boundary (UTC epoch multiples), in [0, period)


def _spikes_of(sig: Signal, name: str, p: CronParams) -> list[_Spike]:
    """The excursions of one load signal as spikes. A latency sample reports the queries that
    completed since the sample before it, each `latency` after it began: a spike of it shows a
    load that began about the latency it reports before its first sample. Its onset moves back
    by that value (the sample's own: a later, higher peak reports later queries), never before
    the signal's first sample, and it reaches back to the previous sample minus that value (the
    earliest the first slow queries may have started: they completed after that sample)."""
    noise = None
    if name == "db_connections":
        # a count of sessions varies at least as a Poisson count does: sqrt(level), one
        # session at the least (a pool of two busy connections going to three is no spike)
        level = trailing_mean(sig.v, samples(p.baseline, sig.step, minimum=5))
        noise = np.sqrt(np.maximum(np.nan_to_num(level, nan=1.0), 1.0))
    out = []
    for e in find_excursions(
        sig,
        baseline_s=p.baseline,
        z_enter=p.z_enter,
        min_factor=p.min_factor,
        rel_floor=0.05,
        noise=noise,
        poisson=name in _COUNT_SIGNALS,
    ):
        onset = reach = float(sig.t[e.onset])
        if name in _LATENCY_SIGNALS:
            took = float(sig.v[e.onset])
            took = took if np.isfinite(took) and took > 0 else 0.0
            first = float(sig.t[0])
            before = float(sig.t[e.onset - 1]) if e.onset > 0 else first
            onset = max(onset - took, first)
            reach = max(min(before - took, onset), first)
        out.append(_Spike(onset, float(sig.t[e.end]) + sig.step, name, e.factor, reach))
    return out


_Span = tuple[float, float]


def _channels(
    sigs: SignalSet, p: CronParams
) -> tuple[dict[str, list[_Spike]], dict[str, _Span], float]:
    """Spikes per channel ("" the whole fleet's load signals, else one upstream peer's calls),
    the time each channel covers, and the finest step."""
    out: dict[str, list[_Spike]] = {"": []}
    spans: dict[str, _Span] = {}
    step = np.inf

    def cover(channel: str, sig: Signal) -> None:
        a, b = spans.get(channel, (np.inf, -np.inf))
        spans[channel] = (min(a, float(sig.t[0])), max(b, float(sig.t[-1])))

    for name in _LOAD_SIGNALS:
        sig = sigs.get(name)
        if sig is None or len(sig.t) < 10:
            continue
        step = min(step, sig.step)
        cover("", sig)
        out[""] += _spikes_of(sig, name, p)
    peers = {
        k: v
        for k, v in sigs.groups.get("upstream_requests", {}).items()
        if "#" not in k and k != "all" and len(v.t) >= 10
    }
    for peer, sig in peers.items():
        step = min(step, sig.step)
        cover(peer, sig)
        out[peer] = _spikes_of(sig, "upstream_requests", p)
    return {k: sorted(v, key=lambda s: s.onset) for k, v in out.items()}, spans, float(step)


def _merge(spikes: list[_Spike], gap: float) -> list[list[_Spike]]:
    """Spikes of several signals that start within `gap` of each other, or while another is
    still under way, are one occurrence. A latency spike joins one whose load may have begun
    while another spike was under way (its reach); but a latency spike's own extent is a span
    of slow completions, smeared by the quantile's rate window, not a load under way: another
    signal's spike that starts within it, past the gap, is a load of its own (a herd during a
    slow period), not part of the first."""
    groups: list[list[_Spike]] = []
    for s in spikes:
        if groups and (s.onset - groups[-1][0].onset <= gap or _under_way(groups[-1], s)):
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _under_way(group: list[_Spike], s: _Spike) -> bool:
    """Whether `s` may have begun while a spike of `group` was under way (see _merge)."""
    latency = s.signal in _LATENCY_SIGNALS
    ends = [x.end for x in group if latency or x.signal not in _LATENCY_SIGNALS]
    return bool(ends) and s.reach <= max(ends)


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


def _tolerance(period: float, step: float, p: CronParams) -> float:
    """Half the phase window: two samples, a share of the period, or a job's start delay."""
    return max(2 * step, p.phase_tolerance * period, p.start_delay)


def _distinct(times: npt.NDArray[np.float64], period: float, centre: float) -> int:
    """Occurrences on distinct boundaries (a burst split in two is one recurrence)."""
    return len(np.unique(np.round((times - centre) / period)))


def _at_period(
    times: npt.NDArray[np.float64], period: float, tol: float
) -> tuple[npt.NDArray[np.bool_], float, float] | None:
    """The phase window of width 2 tol holding the most occurrences on distinct boundaries:
    (in-phase mask, phase in [0, period), the smaller of the two tail bounds) or None."""
    n = len(times)
    ph = np.mod(times, period)
    q = 2 * tol / period
    # a circular sweep over the sorted phases: the window anchored at each occurrence holds
    # the ones up to 2 tol after it (n log n, not n^2: a minute's job over a week is 10,000)
    order = np.argsort(ph, kind="stable")
    sp = ph[order]
    ext = np.concatenate([sp, sp + period])
    counts = np.searchsorted(ext, sp + 2 * tol, side="right") - np.arange(n)
    best: tuple[int, npt.NDArray[np.bool_], float] | None = None
    for i in np.argsort(-counts, kind="stable"):
        if best is not None and counts[i] <= best[0]:
            break  # distinct boundaries never exceed the count
        a = float(sp[i])
        mask = np.mod(ph - a, period) <= 2 * tol
        centre = float(np.mod(a + tol, period))
        k = _distinct(times[mask], period, centre)
        if best is None or k > best[0]:
            best = (k, mask, centre)
    if best is None:
        return None
    k, mask, _ = best
    p_any = min(1.0, n * binom_sf(k - 1, n - 1, q))
    # the window on the clock's own boundary is one window, no anchor to choose
    on_clock = np.abs((ph + period / 2) % period - period / 2) <= tol
    k0 = _distinct(times[on_clock], period, 0.0)
    p_clock = binom_sf(k0, n, q)
    if p_clock < p_any and k0 >= k:
        mask, pv = on_clock, p_clock
    else:
        pv = p_any
    # phase: circular mean of the in-phase occurrences
    ang = 2 * np.pi * ph[mask] / period
    phase = math.atan2(float(np.mean(np.sin(ang))), float(np.mean(np.cos(ang))))
    return mask, float(np.mod(phase / (2 * np.pi) * period, period)), min(1.0, 2 * pv)


def _boundaries(span: _Span, period: float, phase: float) -> int:
    """How many times t = phase (mod period) fall within the span."""
    lo = math.ceil((span[0] - phase) / period)
    hi = math.floor((span[1] - phase) / period)
    return max(hi - lo + 1, 1)


def _recurrence(
    times: npt.NDArray[np.float64], step: float, p: CronParams, tests: int, span: _Span
) -> _Recurrence | None:
    """The period whose recurrence is the least likely by chance (ties: the one holding more
    occurrences, then the longest; a divisor
    of the true period holds the same occurrences in a window as wide relative to its period),
    significant at `alpha` after correcting for `tests` channels and the periods tried. The
    tail, not the count, decides: a stray spike that lands on a shorter period's boundary adds
    one occurrence there, but a window that covers a sixth of the period makes it cheap.
    A period must also have an occurrence on at least `min_hit_rate` of its boundaries in the
    span: a divisor of the true period (hourly for a daily job at 05:00) has most of them empty."""
    tested = [q for q in p.periods if _tolerance(q, step, p) < q / 4]
    best: _Recurrence | None = None
    for period in sorted(tested, reverse=True):
        tol = _tolerance(period, step, p)
        got = _at_period(times, period, tol)
        if got is None:
            continue
        mask, phase, pv = got
        k = _distinct(times[mask], period, phase)
        pv = min(1.0, pv * len(tested) * tests)
        if k < p.min_occurrences or mask.sum() < p.min_in_phase * len(times) or pv >= p.alpha:
            continue
        if k < p.min_hit_rate * _boundaries(span, period, phase):
            continue
        # equal tails (both underflow to 0 for thousands of occurrences): the period that
        # explains more of them, then the longest
        if (
            best is None
            or pv < best.p_value * (1 - 1e-9)
            or (pv <= best.p_value * (1 + 1e-9) and k > best.distinct)
        ):
            best = _Recurrence(period, tol, pv, mask, k, phase)
    return best


def _label(period: float, phase: float, tol: float) -> str:
    """Words for a period and phase: "at minute 7 of every hour", "daily at 18:30 UTC"."""
    off = phase if phase <= period / 2 else phase - period
    if abs(off) <= tol:
        fixed = {86400: "at midnight UTC", 3600: "at the top of every hour"}
        if int(period) in fixed:
            return fixed[int(period)]
        return f"every {_duration(period)}, on the clock's boundary"
    if int(period) == 3600:
        return f"at minute {math.floor(phase / 60) % 60} of every hour"
    if int(period) == 86400:
        hhmm = math.floor(phase / 60) % 1440
        text = f"daily at {hhmm // 60:02d}:{hhmm % 60:02d} UTC"
        # time zones sit on quarter hours: a local midnight is a phase on one
        quarter = round(phase / 900) * 900
        if abs(phase - quarter) <= tol:
            east = -quarter if quarter <= 43200 else 86400 - quarter
            sign = "+" if east >= 0 else "-"
            h, m = divmod(int(abs(east)) // 60, 60)
            text += f" (midnight at UTC{sign}{h:02d}:{m:02d})"
        return text
    return f"every {_duration(period)}, {rnd(phase, 4)}s after the boundary"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g}s"


def _finding(
    channel: str,
    groups: list[list[_Spike]],
    times: npt.NDArray[np.float64],
    rec: _Recurrence,
    step: float,
) -> Finding:
    chosen = [g for g, keep in zip(groups, rec.in_phase, strict=True) if keep]
    onsets = [_onset(g, step) for g in chosen]
    ends = [max(s.end for s in g) for g in chosen]
    sig_names = sorted({s.signal for g in chosen for s in g})
    off = rec.phase if rec.phase <= rec.period / 2 else rec.phase - rec.period
    identity = any(w in channel.lower() for w in _IDENTITY_WORDS)
    # a token's lifetime runs from its issuance, not from the clock: calls to one dependency
    # recurring off the clock's boundaries (or to an identity provider at all) are expiries
    token = bool(channel) and (identity or abs(off) > rec.tol)
    evidence: CronHerdEvidence = {
        "period_seconds": rnd(rec.period),
        "phase_seconds": rnd(rec.phase),
        "cause": "token_expiry" if token else "scheduled_job",
        "peer": channel or None,
        "occurrences": [
            {
                "onset": o,
                "end": e,
                "signals": sorted({s.signal for s in g}),
                "factor": rnd(max(s.factor for s in g)),
            }
            for o, e, g in zip(onsets, ends, chosen, strict=True)
        ],
        "p_value": rnd(rec.p_value),
        "rayleigh_p": rnd(rayleigh(times, rec.period)[1]),
        "mean_offset_seconds": rnd(off),
        "spike_seconds": rnd(float(np.median(np.array(ends) - np.array(onsets)))),
        "unaligned_spikes": int(len(times) - rec.in_phase.sum()),
    }
    what = f"calls to {channel}" if channel else ", ".join(sig_names)
    summary = (
        f"{len(chosen)} load spikes {_label(rec.period, rec.phase, rec.tol)} ({what}), "
        f"p={rnd(rec.p_value, 2)}"
    )
    if token:
        summary += f": tokens expiring together every {_duration(rec.period)}"
    return Finding(
        "cron_herd",
        onsets[0],
        ends[-1],
        "warning",
        summary,
        dict(evidence),
        signals=tuple(sig_names),
        subject=(("peer", channel),) if channel else (),
    )


def detect_cron_herd(sigs: SignalSet, p: CronParams) -> list[Finding]:
    channels, spans, step = _channels(sigs, p)
    if not np.isfinite(step):
        return []
    tests = sum(1 for v in channels.values() if len(v) >= p.min_occurrences)
    found: dict[str, Finding] = {}
    for channel, spikes in channels.items():
        if len(spikes) < p.min_occurrences:
            continue
        # 3 start delays (30 s by default): a clock scaled down (the lab's) scales the gap too
        groups = _merge(spikes, max(3 * step, 3 * p.start_delay))
        times = np.array([_onset(g, step) for g in groups])
        rec = _recurrence(times, step, p, tests, spans[channel])
        if rec is not None:
            found[channel] = _finding(channel, groups, times, rec, step)
    fleet = found.pop("", None)
    if fleet is not None:
        same = [g for g in found.values() if _same_herd(fleet, g)]
        if same and set(fleet.signals) <= {"upstream_requests"}:
            fleet = None  # only calls to dependencies spiked: the peer names the herd
        else:
            # the whole fleet herds (requests, connections, CPU); a peer's calls only witness it
            found = {k: g for k, g in found.items() if g not in same}
    out = [*found.values(), *([fleet] if fleet is not None else [])]
    return sorted(out, key=lambda f: f.onset)


def _same_herd(fleet: Finding, peer: Finding) -> bool:
    """The fleet's recurrence is a peer's: same period, and most occurrences shared."""
    if fleet.evidence["period_seconds"] != peer.evidence["period_seconds"]:
        return False
    a = np.array([o["onset"] for o in fleet.evidence["occurrences"]])
    b = np.sort(np.array([o["onset"] for o in peer.evidence["occurrences"]]))
    if not len(a) or not len(b):
        return False
    j = np.clip(np.searchsorted(b, a), 1, max(len(b) - 1, 1))
    gap = np.minimum(np.abs(b[j - 1] - a), np.abs(b[np.minimum(j, len(b) - 1)] - a))
    return int(np.sum(gap <= 60.0)) >= len(a) / 2


def recommend_cron_herd(f: Finding) -> list[Recommendation]:
    """What to change for a cron_herd finding, best first, numbers from its evidence."""
    period = num(f.evidence, "period_seconds", default=3600.0)
    spike = max(num(f.evidence, "spike_seconds", default=60.0), 1.0)
    splay = nice(min(max(20 * spike, 60.0), period / 2))
    refresh = Recommendation(
        "Refresh tokens ahead of expiry, each at its own jittered time",
        f"Calls recur every {period:g}s from the tokens' common issuance. Refresh each client's "
        f"token at a uniformly random point between 75 % and 90 % of its lifetime "
        f"({period * 0.75:g}-{period * 0.9:g}s after issuance), so the fleet's refreshes spread "
        f"over {period * 0.15:g}s and a failed refresh still has time to retry.",
        f"refresh_at = issued_at + lifetime * random.uniform(0.75, 0.90)  # lifetime={period:g}",
        "jittered refresh-ahead",
    )
    splay_rec = Recommendation(
        "Splay the scheduled job across the period",
        f"Spikes recur every {period:g}s at one phase and last ~{spike:g}s. A random delay "
        f"up to {splay}s spreads the fleet (systemd RandomizedDelaySec, or a sleep of a "
        f"host-hashed offset in cron).",
        f"[Timer]\nRandomizedDelaySec={splay}\nFixedRandomDelay=true",
        "systemd RandomizedDelaySec",
    )
    jitter = Recommendation(
        "Jitter token and cache lifetimes that line up with the clock",
        "Lifetimes that start at the top of the hour end together too: add per-key jitter.",
        f"HerdCache.from_url(url, ttl=TTL, ttl_jitter={splay})",
        "herdwatch.cache.Settings.ttl_jitter",
    )
    if f.evidence.get("cause") == "token_expiry":
        return [refresh, jitter, splay_rec]
    return [splay_rec, jitter, refresh]
