"""herdwatch's detections for the tools a fleet already runs: Prometheus rules (recording and
alerting, for Prometheus, Thanos Ruler or Mimir), promtool unit tests built from the fixtures,
and a Grafana dashboard. What each exported rule cannot see that the daemon can: `GAPS`."""

from herdwatch.export.grafana import FINDINGS_METRIC, grafana_dashboard
from herdwatch.export.prometheus import (
    EXPORTABLE,
    GAPS,
    ExportOptions,
    alert_name,
    prometheus_rules,
    render_prometheus,
)
from herdwatch.export.promtool_tests import promtool_tests

__all__ = [
    "EXPORTABLE",
    "FINDINGS_METRIC",
    "GAPS",
    "ExportOptions",
    "alert_name",
    "grafana_dashboard",
    "prometheus_rules",
    "promtool_tests",
    "render_prometheus",
]
