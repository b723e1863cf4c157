"""A scan over HTTP from a real Prometheus finds what a replay of the same recording finds.

Every incident fixture (synthetic at 1 s to 30 s, and the real-exporter captures) is backfilled
with promtool into a real Prometheus; fixtures whose time ranges are apart share one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from herdwatch.config import PrometheusConfig
from herdwatch.engine import scan
from herdwatch.model import RawData, ScanResult
from herdwatch.sources.prometheus import PrometheusSource, scan_overrides
from herdwatch.sources.replay import load_replay
from tests.sources.prometheus_lab import backfilled_prometheus, disjoint_groups, fixture_dirs

FIXTURES = fixture_dirs()
#: the first test also waits for every fixture's backfill (promtool, then a Prometheus per
#: group of disjoint time ranges): 40-95 s on the 2-core machine as the fixtures stand
pytestmark = pytest.mark.timeout(300)
#: fleets of many targets, each scraped at its own phase with jitter: the Prometheus source reads
#: each family on one phase grid and loses some of their raw samples (up to 8 % here), so only
#: the findings are compared for them until it reads raw samples per target (issue 8)
FINDINGS_ONLY = {
    "fleet_stampede_one_shard_of_20_15s",
    "neg_fleet_ctx_with_traffic_15s",
    "neg_fleet_one_service_surge_15s",
}


@dataclass(frozen=True)
class Case:
    replay: RawData
    signals: dict[str, str]
    rules: dict[str, Any]
    expected: dict[str, Any]


def _config(d: Path) -> tuple[dict[str, str], dict[str, Any]]:
    path = d / "herdwatch.yaml"
    doc = yaml.safe_load(path.read_text()) if path.exists() else None
    doc = doc or {}
    return dict(doc.get("signals") or {}), dict(doc.get("rules") or {})


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    out: dict[str, Case] = {}
    for d in FIXTURES:
        signals, rules = _config(d)
        expected = json.loads((d / "expected.json").read_text())
        out[d.name] = Case(load_replay(d), signals, rules, expected)
    return out


@pytest.fixture(scope="module")
def prometheus_for(cases: dict[str, Case]) -> Iterator[dict[str, str]]:
    """fixture name -> URL of a running Prometheus that holds its backfilled metrics."""
    windows = {}
    for name, case in cases.items():
        w = case.replay.window()
        assert w is not None, name
        windows[name] = w
    urls: dict[str, str] = {}
    stack = []
    try:
        for group in disjoint_groups(windows):
            cm = backfilled_prometheus([d for d in FIXTURES if d.name in group])
            prom = cm.__enter__()
            stack.append(cm)
            urls.update(dict.fromkeys(group, prom.url))
        yield urls
    finally:
        for cm in reversed(stack):
            cm.__exit__(None, None, None)


def _key(result: ScanResult) -> list[tuple[str, float]]:
    return [(f.signature, f.onset) for f in result.findings]


def test_enough_fixtures_are_compared() -> None:
    names = {d.name for d in FIXTURES}
    assert len(names) >= 8
    assert any(n.endswith("_1s") for n in names) and any(n.endswith("_15s") for n in names)


@pytest.mark.parametrize("fixture", [d.name for d in FIXTURES])
def test_prometheus_scan_equals_replay(
    fixture: str, cases: dict[str, Case], prometheus_for: dict[str, str]
) -> None:
    case = cases[fixture]
    lo, hi = case.replay.window() or (0.0, 0.0)
    source = PrometheusSource(PrometheusConfig(url=prometheus_for[fixture]), case.signals)
    live = source.fetch(lo, hi)
    assert live.sources[0].ok
    # Prometheus holds the metrics; the fixture's logs come from their own (log) source.
    live.events = list(case.replay.events)
    want = scan(case.replay, signal_overrides=case.signals, rule_overrides=case.rules)
    got = scan(live, signal_overrides=scan_overrides(case.signals), rule_overrides=case.rules)
    step = source.step
    assert step == pytest.approx(float(case.expected["resolution"]), rel=0.01)
    assert [s for s, _ in _key(got)] == [s for s, _ in _key(want)], (
        f"prometheus {_key(got)} != replay {_key(want)}"
    )
    for (_, a), (_, b) in zip(_key(got), _key(want), strict=True):
        assert abs(a - b) <= step, f"prometheus {_key(got)} vs replay {_key(want)}"
    # The metric-level view is the same too: every series of the default families, sample
    # for sample.
    if fixture in FINDINGS_ONLY:
        return
    families = {s.family for s in live.series}
    replay_series = {(s.name, s.labels): s for s in case.replay.series if s.family in families}
    live_series = {(s.name, s.labels): s for s in live.series}
    assert set(live_series) == set(replay_series)
    for key, s in live_series.items():
        r = replay_series[key]
        np.testing.assert_array_equal(s.timestamps, r.timestamps, err_msg=str(key))
        np.testing.assert_array_equal(s.values, r.values, err_msg=str(key))
        assert (s.family, s.type) == (r.family, r.type), key
