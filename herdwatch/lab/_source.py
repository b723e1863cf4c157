"""The drivers' own measurements as a Source, named as the exporters name them.

The direct sources cannot see the database latency or the request rate of an application (in
production they come from its /metrics through Prometheus). The lab's drivers measure them
(every query's real duration, every request's status) and report cumulative counters; this
source sums the workers' latest reports at each poll into `http_requests_total{code}` and the
`db_query_duration_seconds` histogram (`_bucket{le}`, `_sum`, `_count`) and, when the workers
call an upstream, `http_client_requests_total{peer,code}`, so the Watcher derives `requests`,
`db_latency_p99` and `upstream_requests` from them exactly as from a scrape. The errors the
workers log (the driver's message, as an application logs it) become LogEvents of the kind the
log sources' classifier gives them (`lock_timeout`, `too_many_clients`, ...), each returned once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from herdwatch.lab._buckets import BOUNDS
from herdwatch.model import LogEvent, RawData, Series, SourceStatus
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.logs import classify

__all__ = ["DriverSource"]


def _one(name: str, labels: tuple[tuple[str, str], ...], t: float, v: float, fam: str,
         kind: str) -> Series:  # fmt: skip
    return Series(name, labels, np.array([t]), np.array([float(v)]), family=fam, type=kind)


class DriverSource:
    """Sums the workers' latest reports (see the module docstring) at each `collect`."""

    name = "lab drivers"
    #: the file name the workers' error lines are attributed to (one application log)
    LOG = "lab-app.log"

    def __init__(self, clock: Callable[[], float] = time.time, peer: str = "upstream") -> None:
        self.latest: dict[int, dict[str, Any]] = {}
        self.pending: list[LogEvent] = []
        self.errors_logged = 0
        self.peer = peer
        self._clock = clock

    def update(self, worker: int, report: dict[str, Any]) -> None:
        for t, msg in report.pop("ev", None) or ():
            self.errors_logged += 1
            kind = classify(msg)
            if kind is not None:
                where = f"{self.LOG}:{worker}.{self.errors_logged}"
                self.pending.append(LogEvent(float(t), kind, where, msg))
        self.latest[worker] = report

    async def collect(self, window: CollectWindow) -> RawData:
        t = self._clock()
        reports = list(self.latest.values())
        codes: dict[str, float] = {}
        buckets = np.zeros(len(BOUNDS) + 1)
        total = 0.0
        for r in reports:
            for code, n in r.get("req", {}).items():
                codes[code] = codes.get(code, 0.0) + n
            buckets += np.asarray(r.get("buckets", [0] * len(buckets)), dtype=float)
            total += float(r.get("sum", 0.0))
        codes.setdefault("200", 0.0)
        out = [
            _one("http_requests_total", (("code", c),), t, n, "http_requests", "counter")
            for c, n in sorted(codes.items())
        ]
        fam = "db_query_duration_seconds"
        cum = np.cumsum(buckets)
        les = [f"{b:g}" for b in BOUNDS] + ["+Inf"]
        out += [
            _one(f"{fam}_bucket", (("le", le),), t, c, fam, "histogram")
            for le, c in zip(les, cum, strict=True)
        ]
        out.append(_one(f"{fam}_sum", (), t, total, fam, "histogram"))
        out.append(_one(f"{fam}_count", (), t, cum[-1], fam, "histogram"))
        up: dict[str, float] = {}
        for r in reports:
            for code, n in r.get("up", {}).items():
                up[code] = up.get(code, 0.0) + n
        if up:
            up.setdefault("200", 0.0)
            out += [
                _one("http_client_requests_total", (("code", c), ("peer", self.peer)), t, n,
                     "http_client_requests", "counter")
                for c, n in sorted(up.items())
            ]  # fmt: skip
        events, self.pending = sorted(self.pending, key=lambda e: e.timestamp), []
        return RawData(series=out, events=events, sources=[SourceStatus(self.name, True)])
