"""herdwatch.render: the rich report (rendered to a fixed-width console) and the JSON contract."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from herdwatch.model import Finding, NotEvaluated, Recommendation, ScanResult, Signal, SourceStatus
from herdwatch.render import (
    format_duration,
    format_time,
    render_json,
    render_report,
    render_rule_results,
    render_rules,
    sparkline,
)

T0 = 1764000000.0  # 2025-11-24 16:00:00 UTC
ONSET = T0 + 100.0


def console() -> Console:
    return Console(record=True, width=100, color_system=None, file=io.StringIO())


def text_of(c: Console) -> list[str]:
    return [line.rstrip() for line in c.export_text(clear=False).splitlines()]


def make_result(findings: list[Finding] | None = None) -> ScanResult:
    t = T0 + np.arange(200.0)
    miss = np.where(t >= ONSET, 1.0, 0.0)
    p99 = np.where(t >= ONSET + 2, 0.9, 0.02)
    p99[5] = np.nan
    finding = Finding(
        signature="cache_stampede",
        onset=ONSET,
        end=ONSET + 10,
        severity="critical",
        summary="miss ratio 0 → 1 with db p99 up 45x while requests stayed flat",
        evidence={
            "miss_ratio": {"before": 0.0, "after": 1.0},
            "p_value": 1.2e-9,
            "score": np.float64(38.25),
            "signals": [
                {"name": "miss_ratio", "onset": ONSET},
                {"name": "db_latency_p99", "onset": ONSET + 2},
            ],
        },
        recommendations=(
            Recommendation(
                "Jitter the TTLs",
                "spread expiries over 20 s, twice the observed burst",
                "ttl_jitter: 20",
                "HerdCache(ttl_jitter=)",
            ),
            Recommendation("Collapse loads", "one load per key across the fleet"),
        ),
        signals=("miss_ratio", "db_latency_p99", "not_derived"),
        subject=(("instance", "redis-3:9121"),),
    )
    return ScanResult(
        findings=[finding] if findings is None else findings,
        window=(T0, T0 + 199.0),
        sources=[SourceStatus("replay:incident", True), SourceStatus("redis", False, "refused")],
        signals={
            "miss_ratio": Signal("miss_ratio", t, miss, 1.0),
            "db_latency_p99": Signal("db_latency_p99", t, p99, 1.0),
        },
        not_evaluated=[NotEvaluated("ttl_cliff", "no Redis key expiry sample")],
    )


def test_sparkline_levels() -> None:
    assert sparkline(range(8)) == "▁▂▃▄▅▆▇█"
    assert sparkline([7, 0]) == "█▁"
    assert sparkline([3.0, 3.0, 3.0]) == "███"
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([95.0, 100.0, 97.0]) == "███"  # flat stays flat: scaled from zero
    assert sparkline([-1.0, 0.0, 1.0]) == "▁▅█"
    assert sparkline([0.0, math.nan, 1.0]) == "▁ █"
    assert sparkline([math.nan, math.nan]) == "  "
    assert sparkline([]) == ""
    assert sparkline([1e308, -1e308, 0.0]) == "█▁▅"  # no overflow near the float limits


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.85, "850ms"), (12.0, "12s"), (1.5, "1.5s"), (185.0, "3m05s"), (7380.0, "2h03m"),
     (3 * 86400 + 4 * 3600, "3d04h"), (-1.0, "-")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_time_is_utc() -> None:
    assert format_time(T0) == "2025-11-24 16:00:00"
    assert format_time(T0 + 0.25, date=False) == "16:00:00.250"


def test_report_header_and_summary_table() -> None:
    c = console()
    result = make_result()
    result.not_evaluated = []
    result.findings[0] = dataclasses.replace(result.findings[0], subject=())
    render_report(result, c)
    lines = text_of(c)
    assert lines[1].startswith("│ window   2025-11-24 16:00:00 → 16:03:19 UTC (3m19s)   ")
    assert len(lines[1]) == 100
    assert "│ sources  replay:incident ✓  redis ✗ (refused)" in lines[2]
    assert lines[4] == "1 finding(s)"
    row = next(line for line in lines if line.startswith("│ 1 │"))
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:5] == ["1", "cache_stampede", "16:01:40", "10s", "critical"]
    assert cells[5].startswith("miss ratio 0 → 1")


def test_finding_panel_evidence_and_recommendations() -> None:
    c = console()
    render_report(make_result(), c)
    body = [line.strip("│ ").rstrip() for line in text_of(c)]
    title = next(line for line in text_of(c) if "1. cache_stampede" in line)
    assert title.startswith("╭─ 1. cache_stampede  critical ─")
    assert "onset 2025-11-24 16:01:40 UTC · end 2025-11-24 16:01:50 UTC · lasted 10s" in body
    assert "miss_ratio  before=0, after=1" in body
    assert "p_value     1.20e-09" in body
    assert "score       38.25" in body
    assert "signals     name=miss_ratio, onset=2025-11-24 16:01:40 UTC" in body
    assert "name=db_latency_p99, onset=2025-11-24 16:01:42 UTC" in body
    i = body.index("Recommendations")
    assert body[i + 1 : i + 7] == [
        "1. Jitter the TTLs",
        "↳ HerdCache(ttl_jitter=)",
        "spread expiries over 20 s, twice the observed burst",
        "ttl_jitter: 20",
        "2. Collapse loads",
        "one load per key across the fleet",
    ]


def test_timeline_sparklines_around_the_onset() -> None:
    c = console()
    render_report(make_result(), c)
    lines = [line[2:].rstrip("│ ") for line in text_of(c)]
    i = lines.index("Timeline")
    # 20 one-second slots before the onset, the 10 s finding, 20 after: 51 slots.
    axis, miss, p99, marker = lines[i + 1 : i + 5]
    pad = " " * len("db_latency_p99 ")
    assert axis == pad + "16:01:20 UTC" + "16:02:10".rjust(51 - 12)
    assert miss == "miss_ratio     " + "▁" * 20 + "█" * 31 + " 0 … 1"
    assert p99 == "db_latency_p99 " + "▁" * 22 + "█" * 29 + " 0.02 … 0.9"
    assert marker == pad + " " * 20 + "▲ onset 16:01:40"
    assert not any("not_derived" in line for line in lines)


def test_timeline_downsamples_long_windows_keeping_peaks() -> None:
    t = T0 + np.arange(0.0, 3600.0)
    v = np.zeros_like(t)
    v[1800] = 5.0  # a one-sample spike must survive downsampling to 60 slots
    f = Finding("cron_herd", T0 + 1500, T0 + 2100, "warning", "spike", {}, (), ("load",))
    result = ScanResult([f], (T0, T0 + 3599), [], {"load": Signal("load", t, v, 1.0)})
    c = console()
    render_report(result, c)
    line = next(x for x in text_of(c) if x.startswith("│ load"))
    spark = line.split()[2]
    assert len(spark) == 60
    assert spark.count("█") == 1 and set(spark) == {"▁", "█"}


def test_no_findings() -> None:
    c = console()
    render_report(make_result(findings=[]), c)
    lines = text_of(c)
    assert lines[-1] == "No herds found in this window."
    assert not any("finding(s)" in line for line in lines)


def test_render_json_is_the_contract() -> None:
    result = make_result()
    result.findings[0].evidence["missing"] = math.nan
    result.findings[0].evidence["counts"] = np.array([1, 2], dtype=np.int64)
    out = json.loads(render_json(result))
    assert set(out) == {"findings", "window", "sources", "not_evaluated"}
    assert out["not_evaluated"] == [{"rule": "ttl_cliff", "why": "no Redis key expiry sample"}]
    f = out["findings"][0]
    assert f["signature"] == "cache_stampede"
    assert f["onset"] == ONSET and f["end"] == ONSET + 10
    assert f["severity"] == "critical"
    assert f["subject"] == {"instance": "redis-3:9121"}
    assert f["evidence"]["missing"] is None
    assert f["evidence"]["counts"] == [1, 2]
    assert f["evidence"]["score"] == 38.25
    assert f["recommendations"][0] == {
        "action": "Jitter the TTLs",
        "detail": "spread expiries over 20 s, twice the observed burst",
        "config": "ttl_jitter: 20",
        "option": "HerdCache(ttl_jitter=)",
    }
    assert out["window"] == {"start": T0, "end": T0 + 199.0}
    assert out["sources"] == [
        {"name": "replay:incident", "ok": True},
        {"name": "redis", "ok": False, "detail": "refused"},
    ]
    assert "\n" not in render_json(result)


@dataclass(frozen=True)
class FakeSpec:
    default: Any
    doc: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class FakeRule:
    id: str
    detector: str
    description: str
    enabled: bool = True
    values: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, FakeSpec] = field(default_factory=dict)

    def param_values(self) -> dict[str, Any]:
        return self.values


def test_render_rules_lists_parameters() -> None:
    rule = FakeRule(
        "cache_stampede",
        "stampede",
        "Miss ratio and db p99 rise together while requests stay flat.",
        values={"min_ratio": 0.3, "baseline": 300.0, "periods": (60, 3600)},
        parameters={
            "min_ratio": FakeSpec(0.2, "Miss ratio rise that counts.", minimum=0, maximum=1),
            "baseline": FakeSpec(300, "Trailing baseline window.", unit="s", minimum=10),
            "periods": FakeSpec([60, 3600], "Wall-clock periods.", unit="s"),
        },
    )
    off = FakeRule("cron_herd", "cron", "Wall-clock recurrences.", enabled=False)
    c = console()
    render_rules([rule, off], c)
    lines = [line[2:].rstrip("│").rstrip() for line in text_of(c)]
    assert lines[0].startswith(" cache_stampede  detector: stampede ─")
    assert lines[1:4] == [
        "Miss ratio and db p99 rise together while requests stay flat.",
        "enabled",
        "",
    ]
    assert lines[4:10] == [
        "min_ratio  0.3  (default 0.2; range 0..1) *",
        "           Miss ratio rise that counts.",
        "baseline   300 s  (range 10..)",
        "           Trailing baseline window.",
        "periods    60, 3600 s",
        "           Wall-clock periods.",
    ]
    assert "disabled" in lines


@dataclass(frozen=True)
class FakeCase:
    fixture: str
    signature: str
    expectation: str
    passed: bool
    detail: str = ""


def test_render_rule_results_like_promtool() -> None:
    cases = [
        FakeCase("stampede_1s", "cache_stampede", "fires", True, "onset 1764000727 within 1 s"),
        FakeCase("stampede_1s", "retry_storm", "silent", False, "fired at 1764000800"),
        FakeCase("surge", "cache_stampede", "silent", True),
    ]
    c = console()
    render_rule_results(cases, c)
    assert text_of(c) == [
        "Unit Testing: stampede_1s",
        "  PASS cache_stampede fires  (onset 1764000727 within 1 s)",
        "  FAIL retry_storm silent  (fired at 1764000800)",
        "Unit Testing: surge",
        "  PASS cache_stampede silent",
        "FAILED: 2 passed, 1 failed (2 fixtures)",
    ]
    c = console()
    render_rule_results(cases[2:], c)
    assert text_of(c)[-1] == "SUCCESS: 1 passed, 0 failed (1 fixtures)"


@st.composite
def scan_results(draw: st.DrawFn) -> ScanResult:
    n = draw(st.integers(0, 300))
    step = draw(st.sampled_from([0.001, 0.5, 1.0, 15.0, 3600.0]))
    t = T0 + step * np.arange(n, dtype=float)
    values = st.floats(allow_nan=True, allow_infinity=True, width=64)
    v = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=float)
    onset = T0 + draw(st.floats(-1e5, 1e6))
    end = onset + draw(st.floats(0, 1e5))
    evidence = draw(
        st.dictionaries(
            st.text(min_size=1, max_size=12),
            st.recursive(
                st.none() | st.booleans() | st.integers() | values | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=12)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4)
                ),
                max_leaves=20,
            ),
            max_size=6,
        )
    )
    finding = Finding("x", onset, end, draw(st.sampled_from(["info", "odd"])), "s", evidence,
                      (Recommendation("a", "", "k: 1"),), ("sig", "absent"))  # fmt: skip
    signals = {"sig": Signal("sig", t, v, draw(st.sampled_from([0.0, step])))}
    window = (float(t[0]), float(t[-1])) if n else None
    return ScanResult([finding], window, [], signals)


@settings(max_examples=40, deadline=None)
@given(result=scan_results(), width=st.sampled_from([40, 80, 120]))
def test_render_never_raises(result: ScanResult, width: int) -> None:
    c = Console(record=True, width=width, color_system=None, file=io.StringIO())
    render_report(result, c)
    assert "1. x" in c.export_text()
    json.loads(render_json(result))


def test_report_names_the_subject_and_what_was_not_evaluated() -> None:
    console = Console(record=True, width=120)
    render_report(make_result(), console)
    text = " ".join(console.export_text().replace("│", " ").split())
    assert "subject instance=redis-3:9121" in text
    assert "not evaluated ttl_cliff: no Redis key expiry sample" in text
    assert "cache_stampede instance=redis-3:9121" in text


def test_a_report_with_times_no_calendar_can_show() -> None:
    bad = Finding("cache_stampede", 1e20, math.inf, "critical", "s", {"onset": 1e300})
    console = Console(record=True, width=100)
    render_report(make_result([bad]), console)
    assert "cache_stampede" in console.export_text()
