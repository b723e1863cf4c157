"""A Grafana dashboard: herdwatch's logical signals per subject, and the findings as annotations.

The panels query the same PromQL the exported recording rules record (so the dashboard works
whether or not the rules are loaded); the annotations read the daemon's `/metrics`
(`herdwatch_findings{signature, severity, <subject labels>}`, 1 while a finding is active)
and the exported alerts (`ALERTS{alertname=~"Herdwatch.*"}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FINDINGS_METRIC", "grafana_dashboard"]

#: the daemon's gauge of active findings (labels: signature, severity and the subject's labels)
FINDINGS_METRIC = "herdwatch_findings"

_DS = {"type": "prometheus", "uid": "${datasource}"}

#: (panel title, recorded signal, unit, legend)
_PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("Cache miss ratio per subject", "herdwatch:cache_miss_ratio", "percentunit", "{{instance}}"),
    ("Cache requests per subject", "herdwatch:cache_requests:rate", "reqps", "{{instance}}"),
    ("Database p99 (fleet)", "herdwatch:db_latency:p99", "s", "p99"),
    ("Requests (fleet)", "herdwatch:requests:rate", "reqps", "requests"),
    ("Context switches per subject", "herdwatch:context_switches:rate", "ops", "{{instance}}"),
    ("System CPU share per subject", "herdwatch:cpu_system:share", "percentunit", "{{instance}}"),
    ("Upstream requests per peer", "herdwatch:upstream_requests:rate", "reqps", "{{peer}}"),
    ("Upstream errors per peer", "herdwatch:upstream_errors:rate", "reqps", "{{peer}}"),
    ("Database connections in use", "herdwatch:db_connections:busy", "short", "{{instance}}"),
    ("Database connections usable", "herdwatch:db_connections:max", "short", "max {{instance}}"),
)


def _panel(i: int, title: str, expr: str, unit: str, legend: str) -> dict[str, Any]:
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": _DS,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2) + 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": "A", "datasource": _DS, "expr": expr, "legendFormat": legend}],
    }


def _findings_panel() -> dict[str, Any]:
    return {
        "id": 100,
        "type": "table",
        "title": "Active findings (herdwatch daemon)",
        "datasource": _DS,
        "gridPos": {"h": 8, "w": 24, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "targets": [
            {
                "refId": "A",
                "datasource": _DS,
                "expr": f"{FINDINGS_METRIC} > 0",
                "format": "table",
                "instant": True,
            }
        ],
    }


def _annotations(subject: str) -> list[dict[str, Any]]:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    findings = {
        "datasource": _DS,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "name": "herdwatch findings",
        "expr": f"{FINDINGS_METRIC} > 0",
        "step": "15s",
        "titleFormat": "{{signature}} ({{severity}})",
        "textFormat": "{{instance}}{{peer}}{{host}}{{datname}}",
        "tagKeys": "signature,severity",
        "useValueForTime": False,
    }
    alerts = {
        "datasource": _DS,
        "enable": True,
        "hide": False,
        "iconColor": "orange",
        "name": "herdwatch alerts (Prometheus rules)",
        "expr": 'ALERTS{alertname=~"Herdwatch.*", alertstate="firing"}',
        "step": "15s",
        "titleFormat": "{{alertname}}",
        "textFormat": f"{{{{{subject}}}}}{{{{peer}}}}",
        "tagKeys": "signature,severity",
        "useValueForTime": False,
    }
    return [builtin, findings, alerts]


_NAME = re.compile(r"herdwatch:[a-zA-Z0-9_:]*")


def _inline(expr: str, recorded: Mapping[str, str]) -> str:
    """`expr` with every recorded name it reads replaced by its own (inlined) expression: the
    signal panels read the exporters' series, with or without the rules loaded."""
    return _NAME.sub(
        lambda m: (
            f"({_inline(recorded[m.group(0)], recorded)})" if m.group(0) in recorded else m.group(0)
        ),
        expr,
    )


def grafana_dashboard(
    rule_file: Mapping[str, Any], subject_label: str = "instance"
) -> dict[str, Any]:
    """The dashboard JSON model for an exported rule file (`prometheus_rules`): one time-series
    panel per recorded signal it holds, each querying that signal's PromQL, the per-subject
    ones labelled by `subject_label` (the export's)."""
    recorded = {
        r["record"]: r["expr"] for grp in rule_file["groups"] for r in grp["rules"] if "record" in r
    }
    panels = [_findings_panel()]
    shown = [p for p in _PANELS if p[1] in recorded]
    for i, (title, name, unit, legend) in enumerate(shown):
        legend = legend.replace("{{instance}}", f"{{{{{subject_label}}}}}")
        panels.append(_panel(i, title, _inline(recorded[name], recorded), unit, legend))
    return {
        "uid": "herdwatch",
        "title": "herdwatch: thundering herds",
        "tags": ["herdwatch"],
        "timezone": "utc",
        "schemaVersion": 37,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "annotations": {"list": _annotations(subject_label)},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }
