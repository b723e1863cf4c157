"""herdwatch's rules as Prometheus recording and alerting rules (one rule group, in order).

`prometheus_rules(rules, signal_overrides, options)` turns every enabled rule whose signature
PromQL can express into recording rules (the logical signals per subject, their trailing
medians and spreads) and one alerting rule, with the rule's own parameters and the config's
`signals:` overrides. What each PromQL version cannot see that the daemon can is `GAPS`.

The recording rules of one group run in order in one evaluation, so each alert sees the signals
of the same instant. Baselines are the median and the interquartile spread (IQR / 1.349, a
normal sigma) over the rule's `baseline` window: robust to the excursion itself while it is
shorter than half the window, like the detectors' median/MAD, but PromQL has no MAD.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from herdwatch.detect import DETECTORS
from herdwatch.engine.scan import PARTITIONS, SUBJECT_LABELS
from herdwatch.export._promql import (
    ERROR_CODES,
    by,
    dur,
    first_present,
    input_selectors,
    pmax,
    rate_sum,
    with_matcher,
)
from herdwatch.model import Finding
from herdwatch.rules import Rule

__all__ = [
    "EXPORTABLE",
    "GAPS",
    "ExportOptions",
    "alert_name",
    "prometheus_rules",
    "render_prometheus",
]

IQR_TO_SIGMA = 1.349

#: what the PromQL version of each signature cannot see that the daemon can (docs/scale.md)
GAPS: dict[str, str] = {
    "cache_stampede": (
        "rates over a window of 4 scrapes (the daemon reads every sample, and a direct Redis "
        "source below the scrape interval); median/IQR baselines, not median/MAD with the "
        "binomial noise of a miss ratio at a few requests per sample; no onset to one step, no "
        "excess-miss count, so the recommendations carry no numbers; severity is fixed; "
        "p99_strong_factor reads the fleet's p99 (the daemon the one aligned with the rise)"
    ),
    "pool_exhaustion": (
        "only what postgres_exporter scrapes: the daemon's 100 ms pg_stat_activity sampler "
        "sees a pool fill and drain between two scrapes; no 'too many clients' log lines "
        "(a burst of rejections alone is a daemon finding: min_rejections and alpha are its "
        "Poisson test, unused); the climb is measured from the lowest level within max_climb, "
        "its spread (min_jump_z) is the IQR, not the MAD"
    ),
    "ctx_switch_burst": (
        "rates over 4 scrapes; no Poisson noise floor below a count per scrape; load_share "
        "compares the fleet's request rate now with the switches now (the daemon the rises "
        "over the burst)"
    ),
    "lock_timeout_cluster": "logs only: PromQL reads no log lines (not exported)",
    "retry_storm": (
        "the healthy baseline is the median before the overshoot window, not frozen at the "
        "outage's first sample; an outage is a drop below a share of it with no Poisson "
        "test; one code label (`code`) and one peer label (`peer`)"
    ),
    "cron_herd": (
        "clock boundaries only (minute 0 of the period, midnight UTC): no other phase (minute "
        "7, a local midnight), no token lifetime counted from its issuance, no per-peer "
        "channel; one spike on the boundary now and at the same phase in each of the last "
        "min_occurrences - 1 periods; no binomial phase test (alpha unused: no correction for "
        "the periods tested, so it fires on a recurrence the daemon calls chance) and no hit "
        "rate over the recording (min_hit_rate unused: every one of the last min_occurrences "
        "boundaries must have a spike); min_in_phase bounds the spikes started over those "
        "periods; busy connections and the database p99 are not load signals here; needs "
        "min_occurrences periods of data"
    ),
    "ttl_cliff": "a forecast from a Redis SCAN + PTTL sample: no exporter has it (not exported)",
}

#: detectors with a PromQL version
EXPORTABLE = ("cache_stampede", "pool_exhaustion", "ctx_switch_burst", "retry_storm", "cron_herd")


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """How the rules read the metrics: the scrape (and evaluation) interval, how long an alert
    keeps firing after its condition clears (0: no `keep_firing_for`, for Prometheus < 2.42),
    the subject label partitioned detectors group by, the peer and code labels of upstream
    calls, and seconds added to the clock where a rule tests a clock boundary (0 in
    production; a promtool test shifts its data to the epoch and adds the shift back here)."""

    interval: float = 15.0
    keep_firing_for: float = 300.0
    subject_label: str = SUBJECT_LABELS[0]
    peer_label: str = "peer"
    code_label: str = "code"
    clock_offset: float = 0.0

    @property
    def window(self) -> str:
        """The rate window: four scrapes, so a missed scrape still leaves two samples."""
        return dur(4 * self.interval)


def alert_name(rule_id: str) -> str:
    """`cache_stampede` -> `HerdwatchCacheStampede`."""
    return "Herdwatch" + "".join(p.capitalize() for p in rule_id.split("_"))


@dataclass
class _Group:
    """The rules of one group in evaluation order; a recording rule is recorded once."""

    options: ExportOptions
    overrides: Mapping[str, str]
    rules: list[dict[str, Any]] = field(default_factory=list)
    recorded: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, expr: str) -> str:
        if name in self.recorded:
            if self.recorded[name] != expr:
                raise ValueError(f"{name} recorded twice with different expressions")
            return name
        self.recorded[name] = expr
        self.rules.append({"record": name, "expr": expr})
        return name

    def baseline(self, name: str, seconds: float, offset: float = 0.0) -> tuple[str, str]:
        """(median, sigma) of recorded signal `name` over the trailing `seconds` (ending
        `offset` seconds ago): quantile_over_time 0.5 and the IQR / 1.349."""
        tag = f"{round(seconds)}s" + (f"_offset{round(offset)}s" if offset else "")
        rng = f"[{dur(seconds)}]" + (f" offset {dur(offset)}" if offset else "")
        med = self.record(f"{name}:median{tag}", f"quantile_over_time(0.5, {name}{rng})")
        sigma = self.record(
            f"{name}:sigma{tag}",
            f"(quantile_over_time(0.75, {name}{rng}) - quantile_over_time(0.25, {name}{rng}))"
            f" / {IQR_TO_SIGMA}",
        )
        return med, sigma

    def sel(self, logical: str) -> list[str]:
        return input_selectors(logical, self.overrides)

    # the logical signals, as the scan derives them (herdwatch.signals._derivations)

    def counter(self, logical: str, labels: Sequence[str], name: str = "") -> str:
        name = name or f"herdwatch:{logical}:rate"
        return self.record(name, rate_sum(self.sel(logical), self.options.window, labels))

    def cache(self, labels: Sequence[str]) -> dict[str, str]:
        hits = self.counter("cache_hits", labels)
        misses = self.counter("cache_misses", labels)
        total = self.record("herdwatch:cache_requests:rate", f"{hits} + {misses}")
        ratio = self.record("herdwatch:cache_miss_ratio", f"{misses} / ({total} > 0)")
        return {"hits": hits, "misses": misses, "requests": total, "ratio": ratio}

    def requests(self) -> str:
        return self.counter("requests", ())

    def db_p99(self) -> str:
        w = self.options.window
        alts = [
            f"histogram_quantile(0.99, sum by (le) (rate({with_matcher(s, '', '_bucket')}[{w}])))"
            for s in self.sel("db_latency")
        ]
        return self.record("herdwatch:db_latency:p99", first_present(alts))

    def context_switches(self, labels: Sequence[str], name: str = "") -> str:
        return self.counter("context_switches", labels, name)

    def cpu_system_share(self, labels: Sequence[str]) -> str:
        (sel, *_) = self.sel("cpu_seconds")
        w, grp = self.options.window, by(labels)
        system = with_matcher(sel, 'mode="system"')
        return self.record(
            "herdwatch:cpu_system:share",
            f"sum {grp}(rate({system}[{w}])) / sum {grp}(rate({sel}[{w}]))",
        )

    def cpu_busy(self) -> str:
        (sel, *_) = self.sel("cpu_seconds")
        busy = with_matcher(sel, 'mode!~"idle|iowait|steal"')
        return self.record("herdwatch:cpu_busy:rate", f"sum(rate({busy}[{self.options.window}]))")

    def upstream(self) -> dict[str, str]:
        peer, code, w = [self.options.peer_label], self.options.code_label, self.options.window
        sels = self.sel("upstream_requests")
        total = self.record("herdwatch:upstream_requests:rate", rate_sum(sels, w, peer))
        errors = self.record(
            "herdwatch:upstream_errors:rate",
            f"({rate_sum(sels, w, peer, f'{code}=~{_q(ERROR_CODES)}')}) or (0 * {total})",
        )
        ok = self.record("herdwatch:upstream_ok:rate", f"{total} - {errors}")
        return {"total": total, "errors": errors, "ok": ok}

    def db_connections(self, labels: Sequence[str]) -> tuple[str, str]:
        grp, in_use = by(labels), 'state!="idle"'
        busy = first_present(
            [f"sum {grp}({with_matcher(s, in_use)})" for s in self.sel("db_connections")]
        )
        conns = self.record("herdwatch:db_connections:busy", busy)
        (mx, *_) = self.sel("db_connections_max")
        self.record(
            "herdwatch:db_connections:slots",
            first_present([f"sum {grp}({s})" for s in self.sel("db_connections")]),
        )
        usable = f"sum {grp}({mx})"
        if mx == "pg_settings_max_connections":
            # non-superusers get max_connections - superuser_reserved_connections
            usable = (
                f"({usable} - sum {grp}(pg_settings_superuser_reserved_connections)) or {usable}"
            )
        return conns, self.record("herdwatch:db_connections:max", usable)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _recommendations(rule: Rule) -> str:
    """The detector's recommendations, best first, without the numbers a finding's evidence
    would give them (PromQL has no evidence)."""
    spec = DETECTORS[rule.detector]
    probe = Finding(rule.id, 0.0, 0.0, "warning", "", {})
    lines = [f"{i}. {r.action} ({r.option})" for i, r in enumerate(spec.recommend(probe), 1)]
    return "\n".join(lines)


def _scaled(sigma: str, median: str, rel: float, floor: float) -> str:
    """The spread a z-score divides by: max(sigma, rel x median, floor)."""
    out = f"clamp_min({sigma}, {floor:g})"
    return f"({pmax(out, f'{rel:g} * {median}')})" if rel else out


def _hit_loss(ratio: str, median: str, p: Any) -> str:
    """` or <lost min_hit_loss of the hits>` where the rule has that parameter: a baseline
    miss ratio above 0.5 cannot double."""
    loss = getattr(p, "min_hit_loss", None)
    if loss is None:
        return ""
    return f"\n    or ({ratio} - {median}) / (1 - {median}) >= {loss:g}"


def _strong_p99(ratio: str, p99: str, l_med: str, align: str, p: Any) -> str:
    """` or <any rise, with the database p99 at p99_strong_factor x its median>` where the rule
    has that parameter: a partial stampede (0.10 -> 0.18 with the p99 x20)."""
    strong = getattr(p, "p99_strong_factor", None)
    if strong is None:
        return ""
    return f"\n    or ({ratio} and on() max_over_time({p99}[{align}]) >= {strong:g} * {l_med})"


def _load_share(g: _Group, c: Mapping[str, str], q_med: str, p: Any) -> str:
    """`  and <extra cache requests / extra misses <= max_load_share>` where the rule has
    that parameter: in a stampede hits turn into misses, the lookups do not grow with them."""
    share = getattr(p, "max_load_share", None)
    if share is None:
        return ""
    m_med, _ = g.baseline(c["misses"], p.baseline)
    return (
        f"  and clamp_min({c['requests']} - {q_med}, 0)"
        f" / ({c['misses']} - {m_med} > 0) <= {share:g}\n"
    )


def _cache_stampede(g: _Group, p: Any) -> tuple[str, str]:
    o = g.options
    subj = [o.subject_label]
    c = g.cache(subj)
    r_med, r_sig = g.baseline(c["ratio"], p.baseline)
    h_med, _ = g.baseline(c["hits"], p.baseline)
    q_med, _ = g.baseline(c["requests"], p.baseline)
    p99 = g.db_p99()
    l_med, l_sig = g.baseline(p99, p.baseline)
    req = g.requests()
    t_med, _ = g.baseline(req, p.baseline)
    align = dur((p.align_steps + 1) * o.interval)
    ratio = c["ratio"]
    expr = (
        f"(\n  {ratio} > {r_med} + {p.z_enter:g} * clamp_min({r_sig}, 0.002)\n"
        f"  and {ratio} - {r_med} >= {p.min_ratio_rise:g}\n"
        f"  and (\n    {ratio} >= {p.min_factor:g} * {r_med}{_hit_loss(ratio, r_med, p)}"
        f"{_strong_p99(ratio, p99, l_med, align, p)}\n  )\n"
        # hits fall: the misses replace hits, they do not come on top of them
        f"  and {c['hits']} <= {h_med}\n"
        f"  and {c['requests']} <= {p.max_traffic_ratio:g} * {q_med}\n"
        f"{_load_share(g, c, q_med, p)})\n"
        f"and on() (\n  {req} <= {p.max_traffic_ratio:g} * {t_med} or absent({req})\n)\n"
        f"and on() (\n  (\n    max_over_time({p99}[{align}]) >= {p.p99_factor:g} * {l_med}\n"
        f"    and max_over_time({p99}[{align}]) - {l_med}"
        f" >= {p.p99_z:g} * {_scaled(l_sig, l_med, 0.05, 1e-9)}\n  )\n"
        # a cache that hits almost always leaves the database idle: no p99 before (NaN), one now
        f"  or (max_over_time({p99}[{align}]) > 0 and {l_med} != {l_med})\n"
        f"  or absent({p99})\n)"
    )
    summary = (
        f"cache_stampede on {{{{ $labels.{o.subject_label} }}}}: miss ratio "
        "{{ $value | humanizePercentage }}, above its "
        f"{dur(p.baseline)} median with the database p99 up while traffic stayed flat"
    )
    return expr, summary


def _pool_exhaustion(g: _Group, p: Any) -> tuple[str, str]:
    o = g.options
    busy, mx = g.db_connections([o.subject_label])
    climb = dur(max(p.max_climb, p.climb_steps * o.interval) + o.interval)
    parts = []
    # connections in use, then every connection (idle ones hold a slot of the max as well)
    for conns in (busy, "herdwatch:db_connections:slots"):
        _, sigma = g.baseline(conns, p.baseline)
        jump = f"{conns} - min_over_time({conns}[{climb}])"
        parts.append(
            f"(\n  {conns} >= {p.fill_fraction:g} * {mx}\n"
            # every climb passes the pool's own spread (one connection at the least)
            f"  and {jump} >= {p.min_jump_z:g} * clamp_min({sigma}, 1)\n"
            # and adds min_jump_fraction of the max, unless it reached the wall
            f"  and ({jump} >= {p.min_jump_fraction:g} * {mx} or {conns} >= {mx} - 0.5)\n)"
        )
    expr = "\nor\n".join(parts)
    summary = (
        f"pool_exhaustion on {{{{ $labels.{o.subject_label} }}}}: {{{{ $value }}}} connections "
        f"in use, filled within {climb}"
    )
    return expr, summary


def _ctx_switch_burst(g: _Group, p: Any) -> tuple[str, str]:
    o = g.options
    subj = [o.subject_label]
    cs = g.context_switches(subj)
    c_med, c_sig = g.baseline(cs, p.baseline)
    share = g.cpu_system_share(subj)
    s_med, s_sig = g.baseline(share, p.baseline)
    req = g.requests()
    t_med, _ = g.baseline(req, p.baseline)
    rise = dur(max(p.max_rise, 2 * o.interval) + o.interval)
    scale = _scaled(c_sig, c_med, 0.05, 1e-9)
    expr = (
        f"(\n  {cs} > {c_med} + {p.z_enter:g} * {scale}\n"
        f"  and {cs} >= {p.min_factor:g} * {c_med}\n"
        # a burst, not a ramp: below the factor at some point of the last max_rise
        f"  and min_over_time({cs}[{rise}]) < {p.min_factor:g} * {c_med}\n)\n"
        f"and on({o.subject_label}) (\n"
        f"  ({share} - {s_med} >= {p.cpu_min_rise:g}"
        f" and {share} - {s_med} >= {p.cpu_z:g} * clamp_min({s_sig}, 0.005))\n"
        f"  or ({cs} unless on({o.subject_label}) {share})\n)\n"
        # against load: the requests' relative rise under load_share of the switches' (a 3x
        # surge raises both: more work, not a herd of wake-ups)
        f"and (\n  {p.load_share:g} * ({cs} / {c_med} - 1)"
        f" > on() group_left() ({req} / {t_med} - 1)\n"
        f"  or ({cs} unless on() {req})\n)"
    )
    summary = (
        f"ctx_switch_burst on {{{{ $labels.{o.subject_label} }}}}: {{{{ $value | humanize }}}} "
        f"context switches/s, over {p.min_factor:g}x its {dur(p.baseline)} median within "
        f"{rise}, system CPU up"
    )
    return expr, summary


def _retry_storm(g: _Group, p: Any) -> tuple[str, str]:
    o = g.options
    u = g.upstream()
    window = p.overshoot_window
    # the healthy level as it was before the outage: the baseline window ends where the
    # overshoot window begins
    t_med, t_sig = g.baseline(u["total"], p.baseline, offset=window)
    ok_med, _ = g.baseline(u["ok"], p.baseline, offset=window)
    down = g.record(
        "herdwatch:upstream_down",
        f"({u['ok']} < {p.outage_fraction:g} * {ok_med})"
        f" or ({u['errors']} / ({u['total']} > 0) >= {p.error_share:g})",
    )
    poisson = f"sqrt({t_med} / {o.interval:g})"
    scale = f"({pmax(_scaled(t_sig, t_med, 0.05, 1e-9), poisson)})"
    peer = o.peer_label
    expr = (
        f"{u['total']} >= {p.overshoot_factor:g} * {t_med}\n"
        f"and {u['total']} - {t_med} >= {p.z_enter:g} * {scale}\n"
        f"and {u['ok']} >= {p.outage_fraction:g} * {ok_med}\n"
        f"and on({peer}) count_over_time({down}[{dur(window)}]) > 0"
    )
    summary = (
        f"retry_storm to {{{{ $labels.{peer} }}}}: {{{{ $value | humanize }}}} requests/s, over "
        f"{p.overshoot_factor:g}x its healthy median on recovery from an outage"
    )
    return expr, summary


def _cron_herd(g: _Group, p: Any) -> tuple[str, str] | None:
    o = g.options
    loads = [
        ("requests", g.requests(), True),
        ("upstream_requests", g.counter("upstream_requests", (), "herdwatch:upstream:rate"), True),
        ("context_switches", g.context_switches((), "herdwatch:context_switches:fleet_rate"), True),
        ("cpu_busy", g.cpu_busy(), False),
        ("cache_misses", g.counter("cache_misses", (), "herdwatch:cache_misses:fleet_rate"), True),
    ]
    spikes = []
    for name, sig, counts in loads:
        med, sigma = g.baseline(sig, p.baseline)
        scale = _scaled(sigma, med, 0.05, 1e-9)
        if counts:
            scale = f"({pmax(scale, f'sqrt({med} / {o.interval:g})')})"
        cond = f"{sig} > {med} + {p.z_enter:g} * {scale} and {sig} >= {p.min_factor:g} * {med}"
        spikes.append(f'label_replace({cond}, "signal", "{name}", "", "")')
    spike = g.record("herdwatch:load_spike", " or ".join(f"({s})" for s in spikes))
    any_spike = g.record("herdwatch:load_spike:any", f"count({spike})")
    # an occurrence starts where no signal spiked a step before
    onset = g.record(
        "herdwatch:load_spike:onset",
        f"{any_spike} unless on() ({any_spike} offset {dur(o.interval)})",
    )
    clock = "vector(time())"
    if o.clock_offset % 86400:
        clock = f"(vector(time()) + {o.clock_offset % 86400:g})"
    # the recurrence's occurrences (min_occurrences) must be min_in_phase of all occurrences
    max_all = math.floor(p.min_occurrences / p.min_in_phase + 1e-9) if p.min_in_phase else 0
    periods = []
    for period in sorted(p.periods):
        tol = max(p.phase_tolerance * period, 2 * o.interval, p.start_delay)
        if tol >= period / 4:
            continue  # the boundary is a quarter of the period or more: no phase to test
        on_boundary = f"{any_spike} and on() ({clock} % {period:g} < {tol:g})"
        for k in range(1, p.min_occurrences):
            on_boundary += f"\n    and on() count_over_time({any_spike}[{dur(2 * tol)}]"
            on_boundary += f" offset {dur(k * period)}) > 0"
        if max_all:
            span = dur((p.min_occurrences - 1) * period + 2 * tol)
            on_boundary += f"\n    and on() count_over_time({onset}[{span}]) <= {max_all}"
        periods.append(
            f'label_replace(vector({period:g}) and on() (\n    {on_boundary}\n  ), "period", '
            f'"{dur(period)}", "", "")'
        )
    if not periods:
        return None
    recur = g.record("herdwatch:cron_recurrence", " or ".join(f"({e})" for e in periods))
    expr = f"bottomk(1, {recur})"  # the shortest period that recurs (its multiples do too)
    summary = (
        "cron_herd: load spikes at the same wall-clock phase every {{ $labels.period }} for "
        f"{p.min_occurrences} periods"
    )
    return expr, summary


_BUILDERS = {
    "cache_stampede": _cache_stampede,
    "pool_exhaustion": _pool_exhaustion,
    "ctx_switch_burst": _ctx_switch_burst,
    "retry_storm": _retry_storm,
    "cron_herd": _cron_herd,
}

_SEVERITY = {
    "cache_stampede": "critical",
    "pool_exhaustion": "critical",
    "ctx_switch_burst": "warning",
    "retry_storm": "warning",
    "cron_herd": "warning",
}


def _alert(rule: Rule, expr: str, summary: str, options: ExportOptions) -> dict[str, Any]:
    subject = [options.subject_label] if rule.detector in PARTITIONS else []
    if rule.detector == "pool_exhaustion":
        subject = [options.subject_label]
    if rule.detector == "retry_storm":
        subject = [options.peer_label]
    alert: dict[str, Any] = {"alert": alert_name(rule.id), "expr": expr}
    hold = getattr(rule.params, "min_duration", 0.0)
    if hold:
        alert["for"] = dur(hold)
    if options.keep_firing_for:
        alert["keep_firing_for"] = dur(options.keep_firing_for)
    alert["labels"] = {
        "severity": _SEVERITY[rule.detector],
        "signature": rule.id,
        "subject": ",".join(subject) or "fleet",
    }
    alert["annotations"] = {
        "summary": summary,
        "description": re.sub(r"\s+", " ", rule.description).strip(),
        "recommendations": _recommendations(rule),
        "not_seen_by_promql": GAPS[rule.detector],
    }
    return alert


def prometheus_rules(
    rules: Sequence[Rule],
    signal_overrides: Mapping[str, str] | None = None,
    options: ExportOptions | None = None,
) -> dict[str, Any]:
    """The rule file (`{"groups": [...]}`): every enabled rule PromQL can express, recording
    rules first in dependency order, then its alert. The group's interval is the scrape's."""
    opts = options or ExportOptions()
    g = _Group(opts, dict(signal_overrides or {}))
    alerts = []
    for rule in rules:
        if not rule.enabled or rule.detector not in _BUILDERS:
            continue
        built = _BUILDERS[rule.detector](g, rule.params)
        if built is not None:
            alerts.append(_alert(rule, *built, opts))
    group = {"name": "herdwatch", "interval": dur(opts.interval), "rules": g.rules + alerts}
    return {"groups": [group]}


class _Literal(str):
    """A string YAML writes as a `|` block (the PromQL stays readable)."""


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def _blocks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return _Literal(value)
    return value


def render_prometheus(rule_file: Mapping[str, Any]) -> str:
    """The rule file as YAML, multi-line expressions as `|` blocks."""
    head = (
        "# herdwatch rules for Prometheus, Thanos Ruler or Mimir: `herdwatch rules export`.\n"
        "# What each alert cannot see that the herdwatch daemon can: docs/scale.md.\n"
    )
    body = yaml.dump(_blocks(dict(rule_file)), Dumper=_Dumper, sort_keys=False, width=100)
    return head + body
