"""Plain data shared by every layer: raw series, log events, findings. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Finding",
    "FloatArray",
    "KeyExpirySample",
    "Labels",
    "LogEvent",
    "NotEvaluated",
    "RawData",
    "Recommendation",
    "ScanResult",
    "Series",
    "Signal",
    "SourceStatus",
]

FloatArray = npt.NDArray[np.float64]

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """One raw time series, named as the Prometheus exporters name it.

    `name` is the sample name (`redis_keyspace_hits_total`, `db_query_duration_seconds_bucket`),
    `family` the metric family it belongs to (`db_query_duration_seconds`) and `type` the family's
    type (counter, gauge, histogram, summary, unknown). `labels` is sorted by label name.
    `timestamps` are unix seconds, strictly increasing; `values` may hold NaN.
    """

    name: str
    labels: Labels
    timestamps: FloatArray
    values: FloatArray
    family: str = ""
    type: str = "unknown"

    def label(self, key: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return default

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One log line that matched an error pattern.

    `kind` is one of lock_timeout, too_many_clients, connection_refused, deadlock.
    `where` is `file:line`, for the evidence.
    """

    timestamp: float
    kind: str
    where: str
    message: str


@dataclass(frozen=True, slots=True, eq=False)
class KeyExpirySample:
    """A bounded sample of key TTLs from one Redis, taken at `taken_at` (unix seconds).

    `ttls` are seconds until expiry of the sampled keys that have one (PTTL > 0), `patterns`
    the key pattern of each (`user:*`), same length; `keys_total` is DBSIZE, `sampled` how many
    keys the SCAN visited (with or without a TTL).
    """

    source: str
    taken_at: float
    keys_total: int
    sampled: int
    ttls: FloatArray
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    name: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class RawData:
    """Everything a source returns: raw series, matched log events and what was read."""

    series: list[Series] = field(default_factory=list)
    events: list[LogEvent] = field(default_factory=list)
    sources: list[SourceStatus] = field(default_factory=list)
    log_lines: int = 0
    key_expiry: list[KeyExpirySample] = field(default_factory=list)

    def families(self) -> set[str]:
        return {s.family or s.name for s in self.series}

    def window(self) -> tuple[float, float] | None:
        starts = [float(s.timestamps[0]) for s in self.series if len(s.timestamps)]
        ends = [float(s.timestamps[-1]) for s in self.series if len(s.timestamps)]
        starts += [e.timestamp for e in self.events]
        ends += [e.timestamp for e in self.events]
        if not starts:
            return None
        return min(starts), max(ends)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A concrete change, most effective first. `config` is a snippet the user can paste;
    `option` names the herdwatch.cache option (or other knob) that implements it."""

    action: str
    detail: str
    config: str = ""
    option: str = ""
    #: a `herdwatch mitigate ...` command that applies it, where one exists
    command: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "detail": self.detail, "config": self.config}
        if self.option:
            out["option"] = self.option
        if self.command:
            out["command"] = self.command
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected herd. Times are unix seconds. `evidence` is JSON-ready plain data;
    `signals` names the logical signals involved (the renderer draws them around the onset).
    `subject` is the label set naming what herded (`(("instance", "redis-3:9121"),)`; empty for
    the whole fleet), sorted by label name."""

    signature: str
    onset: float
    end: float
    severity: str
    summary: str
    evidence: dict[str, Any]
    recommendations: tuple[Recommendation, ...] = ()
    signals: tuple[str, ...] = ()
    subject: Labels = ()

    @property
    def subject_dict(self) -> dict[str, str]:
        return dict(self.subject)

    def to_json(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "onset": round(self.onset, 3),
            "end": round(self.end, 3),
            "severity": self.severity,
            "summary": self.summary,
            "evidence": self.evidence,
            "subject": dict(self.subject),
            "recommendations": [r.to_json() for r in self.recommendations],
        }


@dataclass(frozen=True, slots=True, eq=False)
class Signal:
    """A logical signal (the table in docs/detection.md) on its own time grid.

    `name` is the logical name (`miss_ratio`, `db_latency_p99`, `cache_requests`, ...),
    `step` the grid's sample interval in seconds, `derived_from` a human-readable recipe
    such as `rate(redis_keyspace_misses_total)`.
    """

    name: str
    t: FloatArray
    v: FloatArray
    step: float
    derived_from: str = ""


@dataclass(frozen=True, slots=True)
class NotEvaluated:
    """A rule that could not run, and why (`no miss_ratio signal (looked for ...)`)."""

    rule: str
    why: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "why": self.why}


@dataclass(slots=True)
class ScanResult:
    """What one scan produced: findings, the window scanned, the sources read, the rules that
    could not run, and the logical signals (the renderer draws sparklines from them; it computes
    nothing). `subject_signals` holds the per-subject signals of rules that run per server;
    `evaluated` counts the rules that did run."""

    findings: list[Finding]
    window: tuple[float, float] | None
    sources: list[SourceStatus]
    signals: dict[str, Signal] = field(default_factory=dict)
    not_evaluated: list[NotEvaluated] = field(default_factory=list)
    evaluated: int = 0
    subject_signals: dict[Labels, dict[str, Signal]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        start, end = self.window if self.window else (None, None)
        return {
            "findings": [f.to_json() for f in self.findings],
            "window": {"start": start, "end": end},
            "sources": [
                {"name": s.name, "ok": s.ok, **({"detail": s.detail} if s.detail else {})}
                for s in self.sources
            ],
            "not_evaluated": [n.to_json() for n in self.not_evaluated],
        }
