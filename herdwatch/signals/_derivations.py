"""One function per logical signal (or group of signals derived together): Lookup -> Derived.

Each reads only the logical inputs its registry entry declares (see `registry.DERIVATIONS`).
"""

from __future__ import annotations

import numpy as np

from herdwatch.model import Series, Signal
from herdwatch.signals._build import (
    error_rate,
    gauge_sum,
    histogram_quantiles,
    quantile_signal,
    rate_sum,
    rates_by_id,
    resample,
)
from herdwatch.signals._labels import (
    CONN_STATE_LABELS,
    IDLE_STATES,
    code_label,
    group_key,
    is_error_code,
    is_throttle_code,
    peer_label,
)
from herdwatch.signals._lookup import Derived, Lookup
from herdwatch.signals._math import gauge_on_grid
from herdwatch.sources.families import COMPANION_FAMILIES, DEFAULT_FAMILIES, family_matches


def error_logs(lk: Lookup) -> Derived:
    """error_logs: matched error log lines per second (the events ride in SignalSet.events)."""
    sig = error_rate(lk.events, lk.window)
    return Derived({} if sig is None else {"error_logs": sig})


def _counter(lk: Lookup, name: str) -> Signal | None:
    """`sum(rate(...))` of logical counter `name`; a histogram's or summary's parts and
    `_created` series are left out unless typed as counters."""
    found, sel = lk.pick(name)
    counters = [
        s
        for s in found
        if not s.name.endswith(("_created", "_bucket", "_sum", "_count")) or s.type == "counter"
    ]
    return rate_sum(counters, name, f"sum(rate({sel}))")


def _only_present(**signals: Signal | None) -> Derived:
    return Derived({k: v for k, v in signals.items() if v is not None})


def cache(lk: Lookup) -> Derived:
    """cache_hits, cache_misses (rates); with both, cache_requests (their sum) and miss_ratio."""
    out = _only_present(
        cache_hits=_counter(lk, "cache_hits"), cache_misses=_counter(lk, "cache_misses")
    )
    hits, misses = out.signals.get("cache_hits"), out.signals.get("cache_misses")
    if hits is None or misses is None:
        return out
    m = resample(misses, hits.t)
    total = hits.v + m
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, m / total, np.nan)
    out.signals["cache_requests"] = Signal(
        "cache_requests", hits.t, total, hits.step, "cache_hits + cache_misses"
    )
    out.signals["miss_ratio"] = Signal(
        "miss_ratio", hits.t, ratio, hits.step, "cache_misses / (cache_hits + cache_misses)"
    )
    return out


def requests(lk: Lookup) -> Derived:
    """requests: the request rate."""
    return _only_present(requests=_counter(lk, "requests"))


def context_switches(lk: Lookup) -> Derived:
    """context_switches: context switches per second."""
    return _only_present(context_switches=_counter(lk, "context_switches"))


def _latency_quantile(lk: Lookup, name: str, out_name: str) -> Derived:
    found, sel = lk.pick(name)
    recipe = f"histogram_quantile({lk.quantile}, sum by (le) (rate({sel}_bucket)))"
    return _only_present(**{out_name: quantile_signal(found, lk.quantile, out_name, recipe)})


def db_latency_p99(lk: Lookup) -> Derived:
    """db_latency_p99: the database latency quantile (`Lookup.quantile`, 0.99 by default); and
    from a histogram, db_latency_p50, its median from the same bucket rates (a p99 inside one
    wide bucket, such as a client library's default 0.1-0.25 s, barely moves when most queries
    slow down within it; the median crosses buckets). A summary gives no median here: its
    nearest quantile may be the p99 itself."""
    found, sel = lk.pick("db_latency")
    buckets = [s for s in found if s.name.endswith("_bucket") and s.label("le")]
    if not buckets:
        return _latency_quantile(lk, "db_latency", "db_latency_p99")
    recipe = f"histogram_quantile({lk.quantile}, sum by (le) (rate({sel}_bucket)))"
    p99, p50 = histogram_quantiles(
        buckets, {"db_latency_p99": lk.quantile, "db_latency_p50": 0.5}, recipe
    )
    return _only_present(db_latency_p99=p99, db_latency_p50=p50)


def upstream_latency_p99(lk: Lookup) -> Derived:
    """upstream_latency_p99: the quantile of calls to upstreams."""
    return _latency_quantile(lk, "upstream_latency", "upstream_latency_p99")


def db_connections(lk: Lookup) -> Derived:
    """db_connections: connections in use (non-idle states summed), in all and per server; where
    idle connections are counted too, each server's `<server>#slots` holds all its connections
    (idle ones occupy a slot of max_connections as much as busy ones)."""
    found, sel = lk.pick("db_connections")
    if not found:
        return Derived()
    busy = [s for s in found if s.label("state") not in IDLE_STATES]
    if not any(s.label("state") for s in found):
        busy = list(found)  # a family without a state label counts connections in use
    recipe = f'sum({sel}{{state!="idle"}})'
    per: dict[str, list[Series]] = {}
    for s in busy:
        per.setdefault(group_key(s, CONN_STATE_LABELS), []).append(s)
    groups: dict[str, Signal] = {}
    for key, members in per.items():
        g = gauge_sum(members, "db_connections", recipe)
        if g is not None:
            groups[key] = g
    if len(busy) < len(found):
        every: dict[str, list[Series]] = {}
        for s in found:
            every.setdefault(group_key(s, CONN_STATE_LABELS), []).append(s)
        for key, members in every.items():
            g = gauge_sum(members, "db_connections", f"sum({sel})")
            if g is not None:
                groups[key + "#slots"] = g
    total = gauge_sum(busy, "db_connections", recipe)
    if total is None:
        return Derived()
    return Derived({"db_connections": total}, {"db_connections": groups})


def _reserved_slots(lk: Lookup, msel: str) -> dict[str, Series]:
    """Per server, the superuser-reserved slots that come with the default max family."""
    if msel not in DEFAULT_FAMILIES["db_connections_max"]:
        return {}
    (companion,) = COMPANION_FAMILIES["db_connections_max"]
    return {
        group_key(s, CONN_STATE_LABELS): s for s in lk.raw.series if family_matches(companion, s)
    }


def db_connections_max(lk: Lookup) -> Derived:
    """db_connections_max: the connections an application can open, in all and per server."""
    mx, msel = lk.pick("db_connections_max")
    if not mx:
        return Derived()
    # Non-superusers get max_connections - superuser_reserved_connections slots: that is
    # where an application's pool hits the wall.
    reserved = _reserved_slots(lk, msel)
    per_max: dict[str, Signal] = {}
    usable_parts: list[Series] = []
    for s in mx:
        key = group_key(s, CONN_STATE_LABELS)
        res = reserved.get(key)
        if res is None and len(reserved) == 1:
            res = next(iter(reserved.values()))
        recipe = msel
        if res is not None and len(res.timestamps):
            rv = gauge_on_grid(res.timestamps, res.values, s.timestamps, np.inf)
            rv = np.where(np.isfinite(rv), rv, np.nanmedian(res.values))
            s = Series(s.name, s.labels, s.timestamps, s.values - rv, s.family, s.type)
            recipe = f"{msel} - {COMPANION_FAMILIES['db_connections_max'][0]}"
        usable_parts.append(s)
        g = gauge_sum([s], "db_connections_max", recipe)
        if g is not None:
            per_max[key] = g
    out = Derived(groups={"db_connections_max": per_max})
    total = gauge_sum(usable_parts, "db_connections_max", f"sum({msel})")
    if total is not None:
        out.signals["db_connections_max"] = total
    return out


def cpu(lk: Lookup) -> Derived:
    """cpu_system_share (system CPU over all CPU time) and cpu_busy (CPU seconds per second
    outside idle, iowait and steal)."""
    found, sel = lk.pick("cpu_seconds")
    rates = rates_by_id(found)  # each mode's rate taken once for the three sums below
    all_cpu = rate_sum(found, "cpu_total", f"sum(rate({sel}))", rates)
    if all_cpu is None:
        return Derived()
    out = Derived()
    system = rate_sum(
        [s for s in found if s.label("mode", "unknown") == "system"], "cpu_system", "", rates
    )
    if system is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            share = resample(system, all_cpu.t) / all_cpu.v
        out.signals["cpu_system_share"] = Signal(
            "cpu_system_share",
            all_cpu.t,
            share,
            all_cpu.step,
            f'sum(rate({sel}{{mode="system"}})) / sum(rate({sel}))',
        )
    busy_modes = [s for s in found if s.label("mode") not in ("idle", "iowait", "steal")]
    busy = rate_sum(busy_modes, "cpu_busy", "", rates)
    if busy is not None:
        out.signals["cpu_busy"] = Signal(
            "cpu_busy", busy.t, busy.v, busy.step, f'sum(rate({sel}{{mode!~"idle|iowait|steal"}}))'
        )
    return out


def _peer_errors(
    members: list[Series], code: str, tot: Signal, sel: str, throttled: bool = False
) -> Signal:
    """The error rate of one peer's calls on its total's grid (with `throttled`, of its
    rate-limited answers only): 0 where calls were made and none failed (a peer that never
    failed has no error series at all)."""
    keep = is_throttle_code if throttled else is_error_code
    errs = [s for s in members if keep(s.label(code))]
    name = "upstream_throttled" if throttled else "upstream_errors"
    err = rate_sum(errs, name, "") if errs else None
    ev = resample(err, tot.t) if err is not None else np.zeros(len(tot.t))
    ev = np.where(np.isnan(ev) & ~np.isnan(tot.v), 0.0, ev)
    codes = "429|RESOURCE_EXHAUSTED" if throttled else "5..|429|0|error"
    recipe = f'sum(rate({sel}{{{code}=~"{codes}"}}))'
    return Signal(name, tot.t, ev, tot.step, recipe)


def upstream_requests(lk: Lookup) -> Derived:
    """upstream_requests: calls to dependencies, in all and per peer; with a code label, each
    peer's group `<peer>#errors` holds its failed calls (`upstream_errors`), and where some
    were rate limited (429), `<peer>#throttled` those (`upstream_throttled`, among the errors)."""
    found, sel = lk.pick("upstream_requests")
    counters = [s for s in found if not s.name.endswith("_created")]
    if not counters:
        return Derived()
    peer = peer_label(counters)
    per_peer: dict[str, list[Series]] = {}
    for s in counters:
        per_peer.setdefault(s.label(peer) if peer else "all", []).append(s)
    groups: dict[str, Signal] = {}
    for name, members in per_peer.items():
        tot = rate_sum(members, "upstream_requests", f"sum(rate({sel}))")
        if tot is None:
            continue
        groups[name] = tot
        # each peer's calls may come from another client library (code, status,
        # http_response_status_code): the outcome label is read per peer
        code = code_label(members)
        if code is not None:
            groups[name + "#errors"] = _peer_errors(members, code, tot, sel)
            if any(is_throttle_code(s.label(code)) for s in members):
                groups[name + "#throttled"] = _peer_errors(members, code, tot, sel, True)
    total = rate_sum(counters, "upstream_requests", f"sum(rate({sel}))")
    if total is None:
        return Derived()
    return Derived({"upstream_requests": total}, {"upstream_requests": groups})
