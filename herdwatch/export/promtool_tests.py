"""promtool unit tests (`promtool test rules`) built from the recorded incidents in fixtures/.

Each fixture with metrics becomes one test file: its series, on the grid of its resolution,
as `input_series`, and one check per expectation of its expected.json that the exported rules
can answer: a `must` signature's alert fires near the onset (a cron herd's by the end, since
PromQL needs the earlier periods), a `must_not` one never fires. The rules are exported for
the fixture's own resolution (rate windows are four scrapes), with its `signals:` overrides.

promtool starts every test at t=0 (the unix epoch); each fixture is shifted there (by whole
steps) and its rule file adds the shift back where a rule tests a clock boundary
(`ExportOptions.clock_offset`), so the cron herd's phases stay where they were. Expectations
the exported rules are known to miss (`KNOWN_MISSES`, measured: docs/scale.md) are left out,
with a comment.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from herdwatch.config import load_config
from herdwatch.export._promql import dur
from herdwatch.export.prometheus import (
    ExportOptions,
    prometheus_rules,
    render_prometheus,
)
from herdwatch.model import Series
from herdwatch.rules import Rule
from herdwatch.sources.replay import load_replay, replay_files

__all__ = [
    "KNOWN_MISSES",
    "Check",
    "FixtureTest",
    "fixture_test",
    "promtool_tests",
    "rule_file_name",
]

_MANY_PERIODS = (
    "false alarm: spikes at a clock boundary three periods running at one of the 19 periods "
    "tested; the daemon corrects its binomial test for testing them all (Bonferroni), a "
    "boundary check per period cannot (alpha is not used)"
)
_OFF_CLOCK = (
    "phase off the clock's boundary: the exported rule checks clock boundaries only "
    "(minute 0 of the period, midnight UTC); the daemon finds the phase"
)
#: (fixture, signature) -> why the exported rules miss it (measured 2026-12-08 with
#: tests/export/measure.py over all 62 fixtures: docs/scale.md)
KNOWN_MISSES: dict[tuple[str, str], str] = {
    ("fleet_stampede_first_samples_15s", "cache_stampede"): "the stampede starts at the 4th "
    "scrape: the p99 has no past level to rise from (the daemon takes the level it returns "
    "to afterwards; PromQL sees no future)",
    ("fleet_stampede_two_bucket_layouts_15s", "cache_stampede"): "two histogram layouts "
    "under one family: sum by (le) mixes their bucket bounds, so histogram_quantile's p99 is "
    "not the daemon's (which interpolates each layout onto the union of bounds)",
    ("real_cache_stampede", "cache_stampede"): "not caught (measured; the cause is not yet "
    "analysed: open in docs/scale.md)",
    ("real_cache_stampede_one_shard", "cache_stampede"): "the p99 sits inside the client's "
    "default 0.1-0.25 s bucket before and during (0.241 -> 0.247 s) and the export has no "
    "stand-in for it; the daemon confirms the load by the median (db_latency_p50) "
    "(measured 2026-12-08 with promtool test rules on its generated test)",
    ("cron_herd_minute7_unrelated_15s", "cron_herd"): _OFF_CLOCK + " (minute 7)",
    ("cron_herd_local_midnight_est_60s", "cron_herd"): _OFF_CLOCK + " (a local midnight)",
    ("cron_herd_local_midnight_ist_60s", "cron_herd"): _OFF_CLOCK + " (a local midnight)",
    ("cron_token_expiry_auth_900s_15s", "cron_herd"): _OFF_CLOCK + " (a token lifetime "
    "from its issuance, 317 s after the boundary, and calls to one peer only)",
    ("cron_token_expiry_accounts_3600s_30s", "cron_herd"): _OFF_CLOCK + " (a token "
    "lifetime from its issuance)",
    ("cron_herd_every_2min_5s", "cron_herd"): "not caught (measured; on the boundary, "
    "the cause is not yet analysed: open in docs/scale.md)",
    ("neg_rate_limited_surge_15s", "retry_storm"): "false alarm: 429s count as errors, so "
    "up to 75 % of calls answered 429 read as an outage (error_share) although successes "
    "never fell; the daemon's outage test does not take it for one",
    ("neg_rate_limited_surge_15s", "cron_herd"): _MANY_PERIODS,
    ("neg_fleet_ctx_with_traffic_15s", "cron_herd"): _MANY_PERIODS,
    ("stampede_catalog_1s", "cron_herd"): _MANY_PERIODS,
    ("stampede_checkout_15s", "cron_herd"): _MANY_PERIODS,
    ("stampede_sessions_5s", "cron_herd"): _MANY_PERIODS,
}

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass(frozen=True, slots=True)
class Check:
    """One expectation turned into a promql_expr_test: `fires` or not, for `signature`."""

    signature: str
    fires: bool
    expr: str
    eval_time: float
    labels: str


@dataclass(frozen=True, slots=True)
class FixtureTest:
    """The test of one fixture: its promtool document, the rule file it reads, its checks
    and the expectations left out (signature, why)."""

    name: str
    interval: float
    rule_file: str
    rule_text: str
    document: dict[str, Any]
    checks: tuple[Check, ...]
    skipped: tuple[tuple[str, str], ...]


def rule_file_name(interval: float, fixture: str = "") -> str:
    """The rule file exported for one scrape interval: `herdwatch.rules.15s.yml` (with a
    fixture's own `signals:`, `herdwatch.rules.15s.<fixture>.yml`)."""
    return f"herdwatch.rules.{dur(interval)}{'.' + fixture if fixture else ''}.yml"


def _fmt(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else ("_" if math.isnan(v) else str(v))


def _on_grid(s: Series, grid: np.ndarray, step: float) -> str:
    """The series as promtool values on `grid`: the last sample at or before each point, `_`
    where none is younger than 1.5 steps (a missed scrape), runs of `_` folded as `_xN`."""
    idx = np.searchsorted(s.timestamps, grid, side="right") - 1
    out: list[str] = []
    gap = 0
    for t, i in zip(grid, idx, strict=True):
        if i < 0 or t - s.timestamps[i] >= 1.5 * step or not math.isfinite(s.values[i]):
            gap += 1
            continue
        if gap:
            out.append("_" if gap == 1 else f"_x{gap}")
            gap = 0
        out.append(_fmt(float(s.values[i])))
    return " ".join(out)


def _series_text(s: Series) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in s.labels)
    return f"{s.name}{{{inner}}}" if inner else s.name


def _alerts_selector(name: str, firing: bool) -> str:
    state = ',alertstate="firing"' if firing else ""
    return f'ALERTS{{alertname="{name}"{state}}}'


def _read_expected(fixture: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((fixture / "expected.json").read_text())
    return data


def fixture_test(
    fixture: Path,
    rules: Sequence[Rule],
    signal_overrides: Mapping[str, str] | None = None,
    options: ExportOptions | None = None,
    known_misses: Mapping[tuple[str, str], str] | None = None,
) -> FixtureTest | None:
    """The promtool test of one fixture (None when it has no metrics or nothing to check),
    reading its own rule file.
    The fixture's own `signals:` (its herdwatch.yaml) win over `signal_overrides`."""
    if not replay_files(fixture)[0] or not (fixture / "expected.json").is_file():
        return None
    expected = _read_expected(fixture)
    interval = float(expected.get("resolution") or 15.0)
    opts = replace(options or ExportOptions(), interval=interval)
    own = _fixture_signals(fixture)
    overrides = {**dict(signal_overrides or {}), **own}
    names = {
        m
        for r in prometheus_rules(rules, overrides, opts)["groups"][0]["rules"]
        for m in _NAME.findall(r["expr"])
    }
    raw = load_replay(fixture)
    series = [s for s in raw.series if s.name in names and len(s.timestamps)]
    if not series:
        return None
    first = min(float(s.timestamps[0]) for s in series)
    last = max(float(s.timestamps[-1]) for s in series)
    # the data starts at promtool's t=0; the clock-boundary tests add the shift back, so the
    # fixture's wall-clock phases (minute 0, midnight UTC) stay where they were
    shift = math.floor(first / interval) * interval
    opts = replace(opts, clock_offset=shift % 86400)
    rule_doc = prometheus_rules(rules, overrides, opts)
    # each fixture reads its own rule file (its clock offset, its own `signals:`)
    rule_file = rule_file_name(interval, fixture.name)
    alerts = {r["labels"]["signature"]: r["alert"] for r in rule_doc["groups"][0]["rules"]
              if "alert" in r}  # fmt: skip
    # the grid starts at 0 (promtool's start), the data some whole steps later
    grid = np.arange(0.0, last - shift + interval, interval) + shift
    end = float(grid[-1] - shift)
    input_series = [
        {"series": _series_text(s), "values": _on_grid(s, grid, interval)} for s in series
    ]
    misses = known_misses if known_misses is not None else KNOWN_MISSES
    checks: list[Check] = []
    skipped: list[tuple[str, str]] = []
    for must in expected.get("must", []):
        sig = must["signature"]
        if sig not in alerts:
            continue
        if (fixture.name, sig) in misses:
            skipped.append((sig, misses[(fixture.name, sig)]))
            continue
        onset = float(must["onset"]) - shift
        lo = max(onset - max(2 * interval, float(must.get("tolerance", 0.0))), 0.0)
        hi = end if sig == "cron_herd" else min(onset + max(8 * interval, 60.0), end)
        hi = math.ceil(hi / interval) * interval
        sel = _alerts_selector(alerts[sig], True)
        expr = f"clamp_max(count(count_over_time({sel}[{dur(hi - lo)}])), 1)"
        checks.append(Check(sig, True, expr, hi, "{}"))
    for sig in expected.get("must_not", []):
        if sig not in alerts:
            continue
        if (fixture.name, sig) in misses:
            skipped.append((sig, misses[(fixture.name, sig)]))
            continue
        expr = f"absent_over_time({_alerts_selector(alerts[sig], False)}[{dur(end + interval)}])"
        checks.append(Check(sig, False, expr, end, f'{{alertname="{alerts[sig]}"}}'))
    if not checks:
        return None
    doc = {
        "rule_files": [rule_file],
        "evaluation_interval": dur(interval),
        "tests": [
            {
                "name": fixture.name,
                "interval": dur(interval),
                "input_series": input_series,
                "promql_expr_test": [
                    {
                        "expr": c.expr,
                        "eval_time": dur(c.eval_time),
                        "exp_samples": [{"labels": c.labels, "value": 1}],
                    }
                    for c in checks
                ],
            }
        ],
    }
    return FixtureTest(
        fixture.name,
        interval,
        rule_file,
        render_prometheus(rule_doc),
        doc,
        tuple(checks),
        tuple(skipped),
    )


def _fixture_signals(fixture: Path) -> dict[str, str]:
    if not (fixture / "herdwatch.yaml").is_file():
        return {}
    cfg = load_config(None, replay_dir=fixture, discover=False, environ={}, cwd=fixture)
    return dict(cfg.signals)


def promtool_tests(
    rules: Sequence[Rule],
    fixtures: Path,
    signal_overrides: Mapping[str, str] | None = None,
    options: ExportOptions | None = None,
    known_misses: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, str]:
    """File name -> text: one `<fixture>.test.yml` per fixture under `fixtures` and the rule
    files they read (one per fixture), ready for `promtool test rules *.test.yml`."""
    files: dict[str, str] = {}
    opts = options or ExportOptions()
    for fixture in sorted(p for p in fixtures.iterdir() if p.is_dir()):
        test = fixture_test(fixture, rules, signal_overrides, opts, known_misses)
        if test is None:
            continue
        files[test.rule_file] = test.rule_text
        head = f"# promtool unit test from fixtures/incidents/{test.name} (herdwatch export)\n"
        for sig, why in test.skipped:
            head += f"# not checked: {sig}: {why}\n"
        files[f"{test.name}.test.yml"] = head + yaml.safe_dump(
            test.document, sort_keys=False, width=10**9
        )
    return files
