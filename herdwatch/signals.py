"""Raw series in exporter names -> the logical signals of ARCHITECTURE.md.

Derivations follow Prometheus:

* counter rate: per scrape interval, `(v[i] - v[i-1]) / (t[i] - t[i-1])`; a decrease is a reset, the
  increase is then `v[i]` (as `rate()` assumes); an interval longer than `gap_factor` times the
  series' median interval is a gap (NaN), not an average across it;
* a sum over series puts every series on the union of their scrape times: a gauge contributes its
  last value at or before the grid point, a rate the rate of its interval that covers the point;
* `histogram_quantile` interpolates linearly within the bucket that holds the rank, returns the
  second-highest bound when the rank falls in the +Inf bucket, and repairs non-monotonic buckets,
  exactly as Prometheus does.

Every function here is pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from herdwatch.errors import ConfigError
from herdwatch.model import FloatArray, KeyExpirySample, LogEvent, RawData, Series, Signal
from herdwatch.sources.families import (
    DEFAULT_FAMILIES,
    Selector,
    family_matches,
    parse_selector,
)

__all__ = [
    "DEFAULT_FAMILIES",
    "LOGICAL_SIGNALS",
    "Selector",
    "SignalSet",
    "counter_rate",
    "derive",
    "histogram_quantile",
    "parse_selector",
    "sum_on_grid",
    "union_grid",
]

#: every logical name a config `signals:` map may point elsewhere
LOGICAL_SIGNALS = frozenset(DEFAULT_FAMILIES) | {"error_logs"}

#: labels that say which state a connection is in, not which server it is on
_CONN_STATE_LABELS = frozenset(
    {
        "state",
        "datname",
        "usename",
        "application_name",
        "wait_event",
        "wait_event_type",
        "backend_type",
    }
)
_IDLE_STATES = frozenset({"idle", ""})
_CODE_LABELS = (
    "code",
    "status",
    "status_code",
    "http_status",
    "response_code",
    "outcome",
    "result",
)
#: labels that name the dependency a client calls, most specific first; without one, all calls
#: to upstreams form one group
_PEER_LABELS = (
    "peer",
    "upstream",
    "target",
    "service",
    "server_address",
    "net_peer_name",
    "destination",
    "dependency",
    "remote",
)
# ---------------------------------------------------------------------------- pure derivations


def _median_step(t: FloatArray) -> float:
    if len(t) < 2:
        return float("nan")
    return float(np.median(np.diff(t)))


def counter_rate(t: FloatArray, v: FloatArray, *, gap_factor: float = 5.0) -> FloatArray:
    """Per-interval rate of a counter: r[i] covers (t[i-1], t[i]]; r[0] is NaN.

    A decrease is a reset (the increase is v[i]); NaN values and intervals longer than
    `gap_factor` x the median interval give NaN.
    """
    n = len(t)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    dv = np.diff(v)
    reset = dv < 0
    dv = np.where(reset, v[1:], dv)
    dt = np.diff(t)
    step = float(np.median(dt))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = dv / dt
    r[~(dt > 0) | (dt > gap_factor * step)] = np.nan
    out[1:] = r
    return out


def union_grid(series_times: Sequence[FloatArray], *, merge_fraction: float = 0.2) -> FloatArray:
    """The union of scrape times, with times closer than `merge_fraction` of the median scrape
    interval folded into one (targets scraped in the same round land on one grid point)."""
    nonempty = [t for t in series_times if len(t)]
    if not nonempty:
        return np.empty(0)
    if all(len(t) == len(nonempty[0]) and np.array_equal(t, nonempty[0]) for t in nonempty):
        return nonempty[0].astype(np.float64, copy=True)
    allt = np.unique(np.concatenate(nonempty))
    steps = [_median_step(t) for t in nonempty if len(t) > 1]
    step = float(np.nanmin(steps)) if steps else 0.0
    if len(allt) < 2 or not step > 0:
        return allt
    keep = np.ones(len(allt), dtype=bool)
    # keep the last time of each run of near-coincident times: a grid point then sees all of them
    close = np.diff(allt) < merge_fraction * step
    keep[:-1] = ~close
    return allt[keep]


def _gauge_on_grid(t: FloatArray, v: FloatArray, grid: FloatArray, lookback: float) -> FloatArray:
    idx = np.searchsorted(t, grid, side="right") - 1
    ok = idx >= 0
    out = np.full(len(grid), np.nan)
    out[ok] = v[idx[ok]]
    late = np.zeros(len(grid), dtype=bool)
    late[ok] = grid[ok] - t[idx[ok]] > lookback
    out[late] = np.nan
    return out


def _interval_on_grid(t: FloatArray, r: FloatArray, grid: FloatArray, tol: float) -> FloatArray:
    """Value of the interval (t[j-1], t[j]] that covers each grid point (r[j])."""
    idx = np.searchsorted(t, grid - tol, side="left")
    ok = idx < len(t)
    out = np.full(len(grid), np.nan)
    out[ok] = r[idx[ok]]
    # a grid point before the series' first sample is not covered by any interval
    out[ok & (idx == 0) & (grid < t[0] - tol)] = np.nan
    return out


def sum_on_grid(
    series: Sequence[tuple[FloatArray, FloatArray]],
    grid: FloatArray,
    *,
    kind: str,
    lookback_steps: float = 2.5,
) -> FloatArray:
    """Sum of series on `grid`. kind "gauge": last value at or before each point; kind "rate":
    the interval value covering each point. Like PromQL's `sum`, a series absent at a point
    (not yet created, or in a gap) is left out; NaN only where every series is absent."""
    total = np.zeros(len(grid))
    present = np.zeros(len(grid), dtype=bool)
    for t, v in series:
        step = _median_step(t)
        if not step > 0:
            step = _median_step(grid) if len(grid) > 1 else 1.0
        if kind == "gauge":
            part = _gauge_on_grid(t, v, grid, lookback_steps * step)
        else:
            part = _interval_on_grid(t, v, grid, 0.2 * step)
        ok = ~np.isnan(part)
        total[ok] += part[ok]
        present |= ok
    total[~present] = np.nan
    return total


def histogram_quantile(q: float, bounds: FloatArray, counts: FloatArray) -> FloatArray:
    """Prometheus `histogram_quantile(q, ...)` for every column of `counts`.

    `bounds` are the bucket upper bounds (sorted ascending, the last +Inf); `counts` has one row
    per bound (cumulative counts or rates) and one column per time. NaN where the histogram is
    empty or incomplete.
    """
    nb = len(bounds)
    ncol = counts.shape[1] if counts.ndim == 2 else 0
    out = np.full(ncol, np.nan)
    if nb < 2 or not np.isposinf(bounds[-1]) or ncol == 0:
        return out
    if q < 0:
        return np.full(ncol, -np.inf)
    if q > 1:
        return np.full(ncol, np.inf)
    valid = ~np.isnan(counts).any(axis=0)
    c = np.where(np.isnan(counts), 0.0, counts)
    c = np.maximum.accumulate(c, axis=0)  # Prometheus' ensureMonotonic
    total = c[-1]
    valid &= total > 0
    rank = q * total
    b = np.argmax(c >= rank[None, :], axis=0)
    in_inf = b == nb - 1
    upper = bounds[b]
    lower = np.where(b > 0, bounds[np.maximum(b - 1, 0)], 0.0)
    below = np.where(b > 0, c[np.maximum(b - 1, 0), np.arange(ncol)], 0.0)
    inb = c[b, np.arange(ncol)] - below
    with np.errstate(invalid="ignore", divide="ignore"):
        val = lower + (upper - lower) * ((rank - below) / inb)
    val = np.where(in_inf, bounds[nb - 2], val)
    val = np.where((b == 0) & (bounds[0] <= 0), bounds[0], val)
    out[valid] = val[valid]
    return out


# ---------------------------------------------------------------------------- the signal set


@dataclass(slots=True)
class SignalSet:
    """Logical signals derived from one scan's raw data.

    `signals` holds the whole-system view of each logical signal; `groups` holds per-server or
    per-peer views where that matters (`db_connections`, `upstream_requests`, ...), keyed by a
    readable group label such as `instance=db1:9187`.
    """

    signals: dict[str, Signal] = field(default_factory=dict)
    groups: dict[str, dict[str, Signal]] = field(default_factory=dict)
    events: list[LogEvent] = field(default_factory=list)
    window: tuple[float, float] | None = None
    key_expiry: list[KeyExpirySample] = field(default_factory=list)

    def get(self, name: str) -> Signal | None:
        return self.signals.get(name)


def _group_key(s: Series, drop: Iterable[str]) -> str:
    dropped = set(drop)
    parts = [f"{k}={v}" for k, v in s.labels if k not in dropped]
    return ",".join(parts)


def _rate_sum(series: Sequence[Series], name: str, recipe: str) -> Signal | None:
    series = [s for s in series if len(s.timestamps) > 1]
    if not series:
        return None
    grid = union_grid([s.timestamps for s in series])
    parts = [(s.timestamps, counter_rate(s.timestamps, s.values)) for s in series]
    v = sum_on_grid(parts, grid, kind="rate")
    return Signal(name, grid, v, _median_step(grid), recipe)


def _gauge_sum(series: Sequence[Series], name: str, recipe: str, how: str = "sum") -> Signal | None:
    series = [s for s in series if len(s.timestamps)]
    if not series:
        return None
    grid = union_grid([s.timestamps for s in series])
    if how == "max":
        stacked = np.vstack(
            [sum_on_grid([(s.timestamps, s.values)], grid, kind="gauge") for s in series]
        )
        with np.errstate(all="ignore"):
            v = np.where(
                np.isnan(stacked).all(axis=0),
                np.nan,
                np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0),
            )
    else:
        v = sum_on_grid([(s.timestamps, s.values) for s in series], grid, kind="gauge")
    return Signal(name, grid, v, _median_step(grid) if len(grid) > 1 else float("nan"), recipe)


def _quantile_signal(series: Sequence[Series], q: float, name: str, recipe: str) -> Signal | None:
    buckets = [s for s in series if s.name.endswith("_bucket") and s.label("le")]
    if not buckets:
        return None
    grid = union_grid([s.timestamps for s in buckets])
    if len(grid) < 2:
        return None
    by_le: dict[float, list[tuple[FloatArray, FloatArray]]] = {}
    for s in buckets:
        try:
            le = float(s.label("le"))
        except ValueError:
            continue
        by_le.setdefault(le, []).append((s.timestamps, counter_rate(s.timestamps, s.values)))
    bounds = np.array(sorted(by_le))
    rates = np.vstack([sum_on_grid(by_le[b], grid, kind="rate") for b in bounds])
    step = _median_step(grid)
    k = _quantile_window(rates[-1], step)
    if k > 1:
        rates = _trailing_sum(rates, k)
        recipe = recipe.replace("rate(", f"rate[{k * step:g}s](", 1)
    return Signal(name, grid, histogram_quantile(q, bounds, rates), step, recipe)


#: observations a quantile's rate window should hold: enough that the 99th percentile is a
#: couple of observations rather than the single slowest one
QUANTILE_MIN_OBSERVATIONS = 200.0
#: the longest rate window a quantile may use, as Prometheus users pick rate(x[1m])
QUANTILE_MAX_WINDOW = 60.0


def _quantile_window(total_rate: FloatArray, step: float) -> int:
    """Samples in the trailing rate window of a histogram quantile (like `rate(x[w])`): one
    scrape interval when traffic is high, wider when few observations land per interval."""
    finite = total_rate[np.isfinite(total_rate)]
    if not len(finite) or not step > 0:
        return 1
    per_interval = float(np.median(finite)) * step
    want = int(np.ceil(QUANTILE_MIN_OBSERVATIONS / max(per_interval, 1e-9)))
    return int(np.clip(want, 1, max(1, int(QUANTILE_MAX_WINDOW // step))))


def _trailing_sum(rows: FloatArray, k: int) -> FloatArray:
    """Sum of each row over the k samples ending at each column; NaN only where all k are."""
    ok = np.isfinite(rows)
    c = np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(np.where(ok, rows, 0.0), 1)], 1)
    n = np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(ok, 1)], 1)
    hi = np.arange(1, rows.shape[1] + 1)
    lo = np.maximum(hi - k, 0)
    out: FloatArray = np.where(n[:, hi] - n[:, lo] > 0, c[:, hi] - c[:, lo], np.nan)
    return out


def _resample(sig: Signal, grid: FloatArray) -> FloatArray:
    """Interval semantics: the value of sig's sample covering each grid point."""
    if len(sig.t) == len(grid) and np.array_equal(sig.t, grid):
        return sig.v
    return sum_on_grid([(sig.t, sig.v)], grid, kind="rate")


def _code_label(series: Sequence[Series]) -> str | None:
    keys = {k for s in series for k, _ in s.labels}
    for k in _CODE_LABELS:
        if k in keys:
            return k
    return None


def is_error_code(value: str) -> bool:
    """HTTP 5xx, 429, a 0 / empty status (connection failed) or a word such as error/timeout."""
    v = value.strip().lower()
    if v in (
        "",
        "0",
        "error",
        "err",
        "timeout",
        "failure",
        "failed",
        "refused",
        "exception",
        "connection_error",
        "unavailable",
        "5xx",
    ):
        return True
    return v.isdigit() and (v.startswith("5") or v == "429")


def _error_rate(events: Sequence[LogEvent], span: tuple[float, float] | None) -> Signal | None:
    """Matched error lines per second, in at most 2,000 bins of at least 1 s over the window
    (for the timeline; detectors read the events themselves)."""
    if not events or span is None:
        return None
    lo, hi = span
    width = max(1.0, (hi - lo) / 2000)
    edges = np.arange(lo, hi + width, width)
    if len(edges) < 2:
        edges = np.array([lo, lo + width])
    counts, _ = np.histogram([e.timestamp for e in events], bins=edges)
    return Signal(
        "error_logs",
        edges[1:],
        counts / width,
        width,
        f"error log lines per second ({width:g}s bins)",
    )


def derive(
    raw: RawData, overrides: Mapping[str, str] | None = None, *, quantile: float = 0.99
) -> SignalSet:
    """Derive every logical signal that the raw data supports.

    `overrides` maps a logical signal to another metric family or selector (config `signals:`).
    Unknown logical names raise ConfigError naming the key.
    """
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in LOGICAL_SIGNALS:
            raise ConfigError(
                f"unknown signal (known: {', '.join(sorted(LOGICAL_SIGNALS))})",
                key=f"signals.{key}",
            )
    selectors: dict[str, list[Selector]] = {
        name: [parse_selector(f) for f in fams] for name, fams in DEFAULT_FAMILIES.items()
    }
    for name, text in overrides.items():
        if name != "error_logs":
            selectors[name] = [parse_selector(text)]

    def pick(name: str) -> tuple[list[Series], str]:
        for sel in selectors[name]:
            found = [s for s in raw.series if sel.matches(s)]
            if found:
                return found, str(sel)
        return [], ""

    out = SignalSet(
        events=sorted(raw.events, key=lambda e: e.timestamp),
        window=raw.window(),
        key_expiry=list(raw.key_expiry),
    )
    sig = out.signals
    errors = _error_rate(out.events, out.window)
    if errors is not None:
        sig["error_logs"] = errors

    for name in ("cache_hits", "cache_misses", "requests", "context_switches"):
        found, sel = pick(name)
        counters = [
            s
            for s in found
            if not s.name.endswith(("_created", "_bucket", "_sum", "_count")) or s.type == "counter"
        ]
        r = _rate_sum(counters, name, f"sum(rate({sel}))")
        if r is not None:
            sig[name] = r

    if "cache_hits" in sig and "cache_misses" in sig:
        hits, misses = sig["cache_hits"], sig["cache_misses"]
        m = _resample(misses, hits.t)
        total = hits.v + m
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(total > 0, m / total, np.nan)
        sig["cache_requests"] = Signal(
            "cache_requests", hits.t, total, hits.step, "cache_hits + cache_misses"
        )
        sig["miss_ratio"] = Signal(
            "miss_ratio", hits.t, ratio, hits.step, "cache_misses / (cache_hits + cache_misses)"
        )

    for name, qname in (
        ("db_latency", "db_latency_p99"),
        ("upstream_latency", "upstream_latency_p99"),
    ):
        found, sel = pick(name)
        qs = _quantile_signal(
            found,
            quantile,
            qname,
            f"histogram_quantile({quantile}, sum by (le) (rate({sel}_bucket)))",
        )
        if qs is not None:
            sig[qname] = qs

    found, sel = pick("db_connections")
    if found:
        busy = [s for s in found if s.label("state") not in _IDLE_STATES]
        if not any(s.label("state") for s in found):
            busy = list(found)  # a family without a state label counts connections in use
        per: dict[str, list[Series]] = {}
        for s in busy:
            per.setdefault(_group_key(s, _CONN_STATE_LABELS), []).append(s)
        groups: dict[str, Signal] = {}
        for key, members in per.items():
            g = _gauge_sum(members, "db_connections", f'sum({sel}{{state!="idle"}})')
            if g is not None:
                groups[key] = g
        total_sig = _gauge_sum(busy, "db_connections", f'sum({sel}{{state!="idle"}})')
        if total_sig is not None:
            sig["db_connections"] = total_sig
            out.groups["db_connections"] = groups
    mx, msel = pick("db_connections_max")
    if mx:
        # Non-superusers get max_connections - superuser_reserved_connections slots: that is
        # where an application's pool hits the wall.
        reserved = {
            _group_key(s, _CONN_STATE_LABELS): s
            for s in raw.series
            if msel == "pg_settings_max_connections"
            and family_matches("pg_settings_superuser_reserved_connections", s)
        }
        per_max: dict[str, Signal] = {}
        usable_parts: list[Series] = []
        for s in mx:
            key = _group_key(s, _CONN_STATE_LABELS)
            res = reserved.get(key)
            if res is None and len(reserved) == 1:
                res = next(iter(reserved.values()))
            recipe = msel
            if res is not None and len(res.timestamps):
                rv = _gauge_on_grid(res.timestamps, res.values, s.timestamps, np.inf)
                rv = np.where(np.isfinite(rv), rv, np.nanmedian(res.values))
                s = Series(s.name, s.labels, s.timestamps, s.values - rv, s.family, s.type)
                recipe = f"{msel} - pg_settings_superuser_reserved_connections"
            usable_parts.append(s)
            g = _gauge_sum([s], "db_connections_max", recipe)
            if g is not None:
                per_max[key] = g
        out.groups["db_connections_max"] = per_max
        total_max = _gauge_sum(usable_parts, "db_connections_max", f"sum({msel})")
        if total_max is not None:
            sig["db_connections_max"] = total_max

    found, sel = pick("cpu_seconds")
    if found:
        modes: dict[str, list[Series]] = {}
        for s in found:
            modes.setdefault(s.label("mode", "unknown"), []).append(s)
        all_cpu = _rate_sum(found, "cpu_total", f"sum(rate({sel}))")
        if all_cpu is not None:
            busy_modes = [s for s in found if s.label("mode") not in ("idle", "iowait", "steal")]
            system = _rate_sum(modes.get("system", []), "cpu_system", "")
            busy_sig = _rate_sum(busy_modes, "cpu_busy", "")
            with np.errstate(invalid="ignore", divide="ignore"):
                if system is not None:
                    share = _resample(system, all_cpu.t) / all_cpu.v
                    sig["cpu_system_share"] = Signal(
                        "cpu_system_share",
                        all_cpu.t,
                        share,
                        all_cpu.step,
                        f'sum(rate({sel}{{mode="system"}})) / sum(rate({sel}))',
                    )
                if busy_sig is not None:
                    sig["cpu_busy"] = Signal(
                        "cpu_busy",
                        busy_sig.t,
                        busy_sig.v,
                        busy_sig.step,
                        f'sum(rate({sel}{{mode!~"idle|iowait|steal"}}))',
                    )

    found, sel = pick("upstream_requests")
    counters = [s for s in found if not s.name.endswith("_created")]
    if counters:
        code = _code_label(counters)
        peer_label = next((k for k in _PEER_LABELS if any(s.label(k) for s in counters)), None)
        per_peer: dict[str, list[Series]] = {}
        for s in counters:
            per_peer.setdefault(s.label(peer_label) if peer_label else "all", []).append(s)
        up_groups: dict[str, Signal] = {}
        for peer, members in per_peer.items():
            tot = _rate_sum(members, "upstream_requests", f"sum(rate({sel}))")
            if tot is None:
                continue
            up_groups[peer] = tot
            if code is not None:
                errs = [s for s in members if is_error_code(s.label(code))]
                err = _rate_sum(errs, "upstream_errors", "") if errs else None
                ev = _resample(err, tot.t) if err is not None else np.zeros(len(tot.t))
                ev = np.where(np.isnan(ev) & ~np.isnan(tot.v), 0.0, ev)
                up_groups[peer + "#errors"] = Signal(
                    "upstream_errors",
                    tot.t,
                    ev,
                    tot.step,
                    f'sum(rate({sel}{{{code}=~"5..|429|0|error"}}))',
                )
        total_up = _rate_sum(counters, "upstream_requests", f"sum(rate({sel}))")
        if total_up is not None:
            sig["upstream_requests"] = total_up
            out.groups["upstream_requests"] = up_groups

    return out
