"""The Grafana dashboard: valid against the dashboard JSON schema, signals per subject from the
exporters' own series, findings as annotations from the daemon's `herdwatch_findings`."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from click.testing import CliRunner

from herdwatch.cli import cli
from herdwatch.export import FINDINGS_METRIC

SCHEMA = json.loads((Path(__file__).with_name("grafana_dashboard.schema.json")).read_text())


def _dashboard() -> dict:
    res = CliRunner().invoke(cli, ["rules", "export", "--format", "grafana"], env={})
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_the_dashboard_is_valid_against_the_schema() -> None:
    dash = _dashboard()
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(dash, SCHEMA, cls=jsonschema.Draft202012Validator)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_the_schema_rejects_a_broken_dashboard() -> None:
    dash = _dashboard()
    dash["panels"][1]["gridPos"]["w"] = 30
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert list(validator.iter_errors(dash))


def test_signals_per_subject_read_the_exporters_series() -> None:
    dash = _dashboard()
    exprs = {p["title"]: p["targets"][0]["expr"] for p in dash["panels"]}
    ratio = exprs["Cache miss ratio per subject"]
    assert "by (instance)" in ratio and "redis_keyspace_misses_total" in ratio
    # inlined: the panels work without the recording rules loaded
    assert not any("herdwatch:" in e for e in exprs.values())
    assert "by (peer)" in exprs["Upstream requests per peer"]


def test_findings_are_annotations_from_the_daemon_metric() -> None:
    dash = _dashboard()
    notes = {a["name"]: a for a in dash["annotations"]["list"]}
    findings = notes["herdwatch findings"]
    assert findings["expr"] == f"{FINDINGS_METRIC} > 0" == "herdwatch_findings > 0"
    assert "signature" in findings["tagKeys"] and "{{signature}}" in findings["titleFormat"]
    assert "Herdwatch" in notes["herdwatch alerts (Prometheus rules)"]["expr"]
