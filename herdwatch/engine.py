"""One scan: cut the window, derive the logical signals, run every enabled rule, recommend."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from herdwatch.detect import DETECTORS
from herdwatch.model import Finding, RawData, ScanResult, Series
from herdwatch.recommend import recommend
from herdwatch.rules import Rule, load_rules
from herdwatch.signals import derive

__all__ = ["cut_window", "scan"]


def cut_window(raw: RawData, since: float | None, until: float | None) -> RawData:
    """The part of `raw` with since <= t <= until (either bound may be None)."""
    if since is None and until is None:
        return raw
    lo = -np.inf if since is None else since
    hi = np.inf if until is None else until
    series: list[Series] = []
    for s in raw.series:
        keep = (s.timestamps >= lo) & (s.timestamps <= hi)
        if keep.any():
            series.append(
                dataclasses.replace(s, timestamps=s.timestamps[keep], values=s.values[keep])
            )
    events = [e for e in raw.events if lo <= e.timestamp <= hi]
    return RawData(series, events, list(raw.sources), raw.log_lines, list(raw.key_expiry))


def scan(
    raw: RawData,
    *,
    signal_overrides: Mapping[str, str] | None = None,
    rule_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    since: float | None = None,
    until: float | None = None,
    rules: Sequence[Rule] | None = None,
) -> ScanResult:
    """Detect every enabled signature in `raw`; findings sorted by onset, recommendations ranked."""
    raw = cut_window(raw, since, until)
    active = list(rules) if rules is not None else load_rules(rule_overrides)
    sigs = derive(raw, signal_overrides)
    findings: list[Finding] = []
    for rule in active:
        if not rule.enabled:
            continue
        for f in DETECTORS[rule.detector].run(sigs, rule.params):
            if f.signature != rule.id:
                f = dataclasses.replace(f, signature=rule.id)
            findings.append(dataclasses.replace(f, recommendations=recommend(f)))
    findings.sort(key=lambda f: (f.onset, f.signature))
    window = raw.window()
    if since is not None or until is not None:
        lo, hi = window if window else (since, until)
        window = (since if since is not None else lo, until if until is not None else hi)  # type: ignore[assignment]
    return ScanResult(findings, window, list(raw.sources), dict(sigs.signals))
