"""One scan, pure: a window of raw data + rules -> findings, per subject, and what could not run.

`scan` cuts the window, derives the logical signals, runs every enabled rule and ranks the
recommendations. A rule whose detector works per server (`PARTITIONS`) runs once per subject
(each Redis, each host) as well as on the whole fleet, so a herd on one shard of twenty is not
diluted below threshold; a fleet-wide finding is kept only where no subject's finding covers it.
A rule whose inputs are absent is listed in `not_evaluated` with the families it looked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from herdwatch.detect import DETECTORS
from herdwatch.model import Finding, Labels, NotEvaluated, RawData, ScanResult, Series
from herdwatch.rules import Rule, load_rules
from herdwatch.signals import SignalSet, derive, families_for, selectors_for
from herdwatch.sources.families import Selector, family_matches

__all__ = ["PARTITIONS", "REQUIREMENTS", "SUBJECT_LABELS", "cut_window", "scan"]

#: labels that name one server of a fleet, most specific first
SUBJECT_LABELS = ("instance", "shard", "host", "hostname", "node", "pod", "server", "addr")


#: detectors that run per subject (per Redis, per host) as well as on the whole fleet, and the
#: raw logical signals split per subject before they run; the others (the database p99, the
#: front-end request rate) stay fleet-wide: they witness the load
PARTITIONS: dict[str, tuple[str, ...]] = {
    "cache_stampede": ("cache_hits", "cache_misses"),
    "ctx_switch_burst": ("context_switches", "cpu_seconds"),
}


@dataclass(frozen=True, slots=True)
class _Need:
    """What a detector cannot run without: any one of `signals` (derived), log lines, or key
    expiry samples."""

    signals: tuple[str, ...] = ()
    logs: bool = False
    key_expiry: bool = False
    #: (signal, the signal it tells nothing without): connections in use without the max
    companions: tuple[tuple[str, str], ...] = ()


#: detector -> what it needs (any one of the alternatives suffices)
REQUIREMENTS: dict[str, _Need] = {
    "cache_stampede": _Need(signals=("miss_ratio",)),
    "pool_exhaustion": _Need(
        signals=("db_connections",),
        logs=True,
        companions=(("db_connections", "db_connections_max"),),
    ),
    "ctx_switch_burst": _Need(signals=("context_switches",)),
    "lock_timeout_cluster": _Need(logs=True),
    "retry_storm": _Need(signals=("upstream_requests",)),
    "cron_herd": _Need(
        signals=(
            "requests",
            "db_connections",
            "cpu_busy",
            "context_switches",
            "cache_misses",
            "upstream_requests",
            "db_latency_p99",
        ),
    ),
    "ttl_cliff": _Need(key_expiry=True),
}


def cut_window(raw: RawData, since: float | None, until: float | None) -> RawData:
    """The part of `raw` with since <= t <= until (either bound may be None)."""
    if since is None and until is None:
        return raw
    lo = -np.inf if since is None else since
    hi = np.inf if until is None else until
    series: list[Series] = []
    for s in raw.series:
        i0 = int(np.searchsorted(s.timestamps, lo, side="left"))
        i1 = int(np.searchsorted(s.timestamps, hi, side="right"))
        if i1 > i0:
            if i0 == 0 and i1 == len(s.timestamps):
                series.append(s)
            else:
                ts, vs = s.timestamps[i0:i1], s.values[i0:i1]
                series.append(dataclasses.replace(s, timestamps=ts, values=vs))
    events = [e for e in raw.events if lo <= e.timestamp <= hi]
    key_expiry = [k for k in raw.key_expiry if lo <= k.taken_at <= hi]
    return RawData(series, events, list(raw.sources), raw.log_lines, key_expiry)


def _why_not(rule: Rule, sigs: SignalSet, raw: RawData, overrides: Mapping[str, str]) -> str | None:
    """None when the rule's detector has what it needs, else why not (one line)."""
    need = REQUIREMENTS.get(rule.detector)
    if need is None:
        return None
    companion = dict(need.companions)
    unpaired = [s for s in need.signals if sigs.get(s) is not None and s in companion and
                sigs.get(companion[s]) is None]  # fmt: skip
    if any(sigs.get(s) is not None and s not in unpaired for s in need.signals):
        return None
    if need.logs and (raw.log_lines > 0 or raw.events):
        return None
    if need.key_expiry and raw.key_expiry:
        return None
    parts = []
    for s in unpaired:
        families = ", ".join(families_for(companion[s], overrides))
        parts.append(f"{s} read but no {companion[s]} signal (looked for {families}): "
                     "how full it is cannot be told")  # fmt: skip
    if need.signals and not unpaired:
        looked = list(dict.fromkeys(f for s in need.signals for f in families_for(s, overrides)))
        what = need.signals[0] if len(need.signals) == 1 else "load"
        parts.append(f"no {what} signal (looked for {', '.join(looked)})")
    if need.logs:
        parts.append("no log lines read")
    if need.key_expiry:
        parts.append("no Redis key expiry sample (needs a direct Redis source)")
    return "; ".join(parts)


def _partition_label(series: Sequence[Series]) -> tuple[str, list[str]] | None:
    """The subject label that tells these series' servers apart, and its values; None when
    they all come from one server (or say nothing of where they come from)."""
    for label in SUBJECT_LABELS:
        values = sorted({s.label(label) for s in series} - {""})
        if values:
            return label, values
    return None


def _matching(raw: RawData, names: Sequence[str], overrides: Mapping[str, str]) -> list[Series]:
    """Every raw series that any family these logical signals are looked up under matches
    (splitting a family the derivation then passes over is harmless)."""
    selectors = [sel for name in names for sel in selectors_for(name, overrides)]
    # A selector first compares a series' name and family with its own family, then (if it
    # has label matchers) the labels: the first part is decided once per (name, family), not
    # once per series (a fleet has hundreds of series, a dozen names), and only the selectors
    # with matchers whose family fits are tried on each series' labels.
    known: dict[tuple[str, str], tuple[bool, list[Selector]]] = {}
    out = []
    for s in raw.series:
        key = (s.name, s.family)
        seen = known.get(key)
        if seen is None:
            fits = [sel for sel in selectors if family_matches(sel.family, s)]
            seen = known[key] = (
                any(not sel.matchers for sel in fits),
                [sel for sel in fits if sel.matchers],
            )
        plain, labelled = seen
        if plain or any(sel.matches(s) for sel in labelled):
            out.append(s)
    return out


def _overlaps(a: Finding, b: Finding) -> bool:
    return a.onset <= b.end and b.onset <= a.end


@dataclass(slots=True)
class _Context:
    """What one scan shares between its rules: the raw window, overrides, derived sets."""

    raw: RawData
    overrides: Mapping[str, str]
    fleet: SignalSet
    per_subject: dict[tuple[str, ...], list[tuple[Labels, SignalSet]]]

    def subjects(self, detector: str) -> tuple[Labels, list[tuple[Labels, SignalSet]]]:
        """(the fleet finding's subject, per-subject signal sets) for a detector."""
        names = PARTITIONS.get(detector)
        if names is None:
            return (), []
        series = _matching(self.raw, names, self.overrides)
        part = _partition_label(series)
        if part is None:
            return (), []
        label, values = part
        if len(values) == 1:
            return ((label, values[0]),), []
        key = (*names, label)
        if key not in self.per_subject:
            sets: list[tuple[Labels, SignalSet]] = []
            for value in values:
                # derive(only=names) reads nothing but these inputs: hand it only this subject's
                sub = dataclasses.replace(
                    self.raw, series=[s for s in series if s.label(label) == value]
                )
                # only what the split inputs feed is derived again; the rest is the fleet's
                own = derive(sub, self.overrides, only=names)
                sigs = dataclasses.replace(
                    self.fleet,
                    signals={**self.fleet.signals, **own.signals},
                    groups={**self.fleet.groups, **own.groups},
                )
                sets.append((((label, value),), sigs))
            self.per_subject[key] = sets
        return (), self.per_subject[key]


def _run_rule(rule: Rule, ctx: _Context) -> list[Finding]:
    spec = DETECTORS[rule.detector]
    fleet_subject, subjects = ctx.subjects(rule.detector)
    found: list[Finding] = []
    for subject, sigs in subjects:
        found += [dataclasses.replace(f, subject=subject) for f in spec.run(sigs, rule.params)]
    for f in spec.run(ctx.fleet, rule.params):
        if subjects and any(_overlaps(f, g) for g in found):
            continue  # a subject's finding already names this herd more precisely
        found.append(f if f.subject else dataclasses.replace(f, subject=fleet_subject))
    out = []
    for f in found:
        if f.signature != rule.id:
            f = dataclasses.replace(f, signature=rule.id)
        recs = tuple(spec.recommend(f))
        out.append(dataclasses.replace(f, recommendations=recs))
    return out


def _window(
    data: tuple[float, float] | None, since: float | None, until: float | None
) -> tuple[float, float] | None:
    """The window scanned: the asked bounds, each missing one taken from the data; None when a
    bound is neither asked nor in the data (no data at all)."""
    lo = since if since is not None else (data[0] if data else None)
    hi = until if until is not None else (data[1] if data else None)
    return (lo, hi) if lo is not None and hi is not None else None


def scan(
    raw: RawData,
    *,
    signal_overrides: Mapping[str, str] | None = None,
    rule_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    since: float | None = None,
    until: float | None = None,
    rules: Sequence[Rule] | None = None,
) -> ScanResult:
    """Detect every enabled signature in `raw`; findings sorted by onset, recommendations ranked,
    and `not_evaluated` naming each enabled rule that had nothing to read."""
    raw = cut_window(raw, since, until)
    active = list(rules) if rules is not None else load_rules(rule_overrides)
    overrides = dict(signal_overrides or {})
    ctx = _Context(raw, overrides, derive(raw, overrides), {})
    findings: list[Finding] = []
    skipped: list[NotEvaluated] = []
    for rule in active:
        if not rule.enabled:
            continue
        why = _why_not(rule, ctx.fleet, raw, overrides)
        if why is not None:
            skipped.append(NotEvaluated(rule.id, why))
            continue
        findings += _run_rule(rule, ctx)
    findings.sort(key=lambda f: (f.onset, f.signature, f.subject))
    window = _window(raw.window(), since, until)
    subject_signals = {
        subject: {k: v for k, v in sigs.signals.items() if ctx.fleet.signals.get(k) is not v}
        for sets in ctx.per_subject.values()
        for subject, sigs in sets
    }
    return ScanResult(
        findings,
        window,
        list(raw.sources),
        dict(ctx.fleet.signals),
        not_evaluated=skipped,
        evaluated=sum(1 for r in active if r.enabled) - len(skipped),
        subject_signals=subject_signals,
    )
