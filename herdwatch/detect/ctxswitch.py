"""ctx_switch_burst: context switches and system CPU burst far above their trailing baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from herdwatch.detect._common import grid_step, median, num, rnd, window_values
from herdwatch.detect._stats import find_excursions, robust_level
from herdwatch.model import Finding, Recommendation
from herdwatch.signals import SignalSet

__all__ = ["CtxSwitchParams", "detect_ctx_switch_burst", "recommend_ctx_switch_burst"]


@dataclass(frozen=True, slots=True)
class CtxSwitchParams:
    baseline: float = 600.0
    z_enter: float = 8.0
    min_factor: float = 3.0
    max_rise: float = 60.0
    cpu_z: float = 3.0
    cpu_min_rise: float = 0.02
    load_share: float = 0.5


def _traffic_factor(sigs: SignalSet, t0: float, t1: float, baseline: float) -> float | None:
    """The request rate (else the cache request rate) during [t0, t1] over its median in the
    baseline window before; None without either signal."""
    traffic = sigs.get("requests") or sigs.get("cache_requests")
    if traffic is None:
        return None
    step = grid_step(traffic)
    base = window_values(traffic, t0 - baseline, t0 - step)
    during = window_values(traffic, t0, max(t1, t0 + 2 * step))
    if not len(base) or not len(during):
        return None
    b = median(base)  # near the float limit np.median's mean of two overflows (a warning)
    return median(during) / b if b > 0 else None


def detect_ctx_switch_burst(sigs: SignalSet, p: CtxSwitchParams) -> list[Finding]:
    cs = sigs.get("context_switches")
    if cs is None or len(cs.t) < 5:
        return []
    cpu = sigs.get("cpu_system_share")
    step = grid_step(cs)
    out: list[Finding] = []
    for e in find_excursions(
        cs,
        baseline_s=p.baseline,
        z_enter=p.z_enter,
        min_factor=p.min_factor,
        rel_floor=0.05,
        poisson=True,
        exit_hold_s=2 * step,
    ):
        t0, t1 = float(cs.t[e.onset]), float(cs.t[e.end]) + step
        # a burst, not a ramp: the rate reaches min_factor x baseline soon after the onset
        seg = cs.v[e.onset : e.end + 1]
        reach = np.flatnonzero(seg >= p.min_factor * e.baseline)
        rise = float(cs.t[e.onset + int(reach[0])] - t0) if len(reach) else np.inf
        if rise > max(p.max_rise, 2 * step):
            continue
        traffic = _traffic_factor(sigs, t0, t1, p.baseline)
        if traffic is not None and e.factor > 1 and (traffic - 1) >= p.load_share * (e.factor - 1):
            continue  # the traffic rose with it: more work, not a herd of wake-ups
        evidence: dict[str, object] = {
            "context_switches_per_second": {
                "baseline": rnd(e.baseline),
                "peak": rnd(e.peak_value),
                "factor": rnd(e.factor),
                "z": rnd(e.peak_z),
                "onset": t0,
            },
            "rise_seconds": rnd(rise),
            "traffic_factor": rnd(traffic) if traffic is not None else None,
            "burst_seconds": rnd(t1 - t0),
        }
        involved = ["context_switches"]
        severity = "warning"
        if cpu is not None:
            base = window_values(cpu, t0 - p.baseline, t0 - step)
            during = window_values(cpu, t0, t1)
            if len(base) >= 3 and len(during):
                b, mad = robust_level(base)
                s = max(mad, 0.005)
                pk = float(np.max(during))
                z = (pk - b) / s
                evidence["cpu_system_share"] = {"baseline": rnd(b), "peak": rnd(pk), "z": rnd(z)}
                if z < p.cpu_z or pk - b < p.cpu_min_rise:
                    continue
                involved.append("cpu_system_share")
                if e.factor >= 2 * p.min_factor:
                    severity = "critical"
        else:
            evidence["note"] = "no node_cpu_seconds_total: system CPU not confirmed"
        summary = (
            f"context switches x{rnd(e.factor, 2)} ({rnd(e.baseline, 3)}/s -> "
            f"{rnd(e.peak_value, 3)}/s) within {rnd(rise, 2)}s"
        )
        if "cpu_system_share" in involved:
            c = evidence["cpu_system_share"]
            assert isinstance(c, dict)
            summary += f", system CPU {c['baseline']} -> {c['peak']}"
        out.append(
            Finding(
                "ctx_switch_burst", t0, t1, severity, summary, evidence, signals=tuple(involved)
            )
        )
    return out


def recommend_ctx_switch_burst(f: Finding) -> list[Recommendation]:
    """What to change for a ctx_switch_burst finding, best first, numbers from its evidence."""
    factor = num(f.evidence, "context_switches_per_second", "factor", default=3.0)
    return [
        Recommendation(
            "Stop waking every waiter for one event",
            f"Context switches rose x{factor:.3g}: many threads woke for the same thing. Collapse "
            f"identical requests (one leader, the rest wait on its result) and cap worker "
            f"concurrency near the core count.",
            "SingleFlight().do(key, fn)",
            "herdwatch.cache.SingleFlight",
        ),
        Recommendation(
            "Bound concurrency and shed load",
            "Limit concurrent loads and refuse the excess quickly rather than queueing threads "
            "that thrash the scheduler.",
            "HerdCache.from_url(url, max_concurrent_loads=8)",
            "herdwatch.cache.Settings.max_concurrent_loads",
        ),
    ]
