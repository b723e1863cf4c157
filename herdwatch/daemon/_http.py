"""/metrics (Prometheus text format) and /healthz on one small asyncio HTTP server, and the
daemon's metrics (a registry of its own, injected for tests)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["DaemonMetrics", "serve"]

log = logging.getLogger("herdwatch.daemon")


class DaemonMetrics:
    """Every metric the daemon exports, named herdwatch_*."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.ticks = Counter("herdwatch_ticks", "Ticks (scans) run.", registry=r)
        self.tick_seconds = Histogram(
            "herdwatch_tick_duration_seconds",
            "Seconds a tick's scan took.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.polls = Counter("herdwatch_polls", "Source polls.", ["source"], registry=r)
        self.poll_errors = Counter(
            "herdwatch_poll_errors", "Source polls that failed.", ["source"], registry=r
        )
        self.source_up = Gauge(
            "herdwatch_source_healthy", "1 while the source is healthy.", ["source"], registry=r
        )
        self.findings = Gauge(
            "herdwatch_findings_by_state",
            "Findings in the last Snapshot, by signature and state.",
            ["signature", "state"],
            registry=r,
        )
        self.active = ActiveFindings()
        r.register(self.active)
        self.alerts = Gauge("herdwatch_alerts", "Alerts by state.", ["state"], registry=r)
        self.sent = Counter(
            "herdwatch_notifications_sent", "Notifications accepted.", ["notifier"], registry=r
        )
        self.failed = Counter(
            "herdwatch_notifications_failed",
            "Delivery attempts that failed.",
            ["notifier"],
            registry=r,
        )
        self.queued = Gauge(
            "herdwatch_notifications_queued",
            "Notifications waiting in the outbox.",
            ["notifier"],
            registry=r,
        )
        self.dead = Gauge(
            "herdwatch_notifications_dead",
            "Dead-lettered notifications in the outbox.",
            ["notifier"],
            registry=r,
        )
        self.depth = Gauge("herdwatch_outbox_depth", "Queued rows in the outbox.", registry=r)
        self.oldest = Gauge(
            "herdwatch_outbox_oldest_age_seconds", "Age of the oldest queued row.", registry=r
        )
        self.lag = Gauge(
            "herdwatch_loop_lag_seconds",
            "How late the event loop woke a 250 ms timer.",
            registry=r,
        )
        self.leader = Gauge(
            "herdwatch_leader",
            "1 while this daemon may notify (leader or no leadership).",
            registry=r,
        )
        self.reloads = Counter(
            "herdwatch_config_reloads", "SIGHUP reloads.", ["result"], registry=r
        )
        self.not_owned = Gauge(
            "herdwatch_findings_not_owned",
            "Findings of the last tick whose subject another shard owns (daemon.shard).",
            registry=r,
        )


_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


class ActiveFindings(Collector):
    """`herdwatch_findings{signature, severity, <subject labels>} 1` per active finding (what
    the exported Grafana dashboard's annotations read). Subjects carry different label names,
    which a Gauge's fixed label names cannot hold, hence a collector of its own."""

    NAME = "herdwatch_findings"

    def __init__(self) -> None:
        self._labels: list[dict[str, str]] = []

    def set(self, findings: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> None:
        """The active findings as (signature, severity, subject labels)."""
        rows = []
        for signature, severity, subject in findings:
            labels = {"signature": signature, "severity": severity}
            for key, value in subject:
                name = _LABEL_BAD.sub("_", key)
                if name[:1].isdigit() or name.startswith("__"):
                    name = "_" + name.lstrip("_")
                # the finding's own labels win over a subject label of the same name
                labels.setdefault(name, str(value))
            rows.append(labels)
        self._labels = rows

    def collect(self) -> Iterator[Metric]:
        m = Metric(self.NAME, "1 while a finding is active.", "gauge")
        for labels in self._labels:
            m.add_sample(self.NAME, labels, 1.0)
        yield m


async def serve(
    host: str,
    port: int,
    metrics: DaemonMetrics,
    health: Callable[[], tuple[bool, dict[str, Any]]],
) -> asyncio.Server:
    """Start answering GET /metrics and GET /healthz (200 or 503 with a JSON body)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b" ", 2)
            path = parts[1].split(b"?")[0].decode() if len(parts) > 1 else "/"
            if path == "/metrics":
                status, ctype, body = (
                    "200 OK",
                    CONTENT_TYPE_LATEST,
                    generate_latest(metrics.registry),
                )
            elif path == "/healthz":
                ok, detail = health()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(detail).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
