"""The real-exporter captures are ingestible and their expected onsets match the data."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import statistics
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INCIDENTS = ROOT / "fixtures" / "incidents"
REAL = sorted(p for p in INCIDENTS.glob("real_*") if p.is_dir())
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+) (\S+)$")


def _metrics_file(d: Path) -> Path:
    (path,) = [p for p in (d / "metrics.om", d / "metrics.om.gz") if p.exists()]
    return path


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()


def _sum_by_step(text: str, name: str) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m[1] == name:
            out[float(m[4])] += float(m[3])
    return dict(out)


def test_the_real_captures_are_there() -> None:
    assert {p.name for p in REAL} >= {
        "real_pool_exhaustion",
        "real_cache_stampede",
        "real_traffic_surge",
    }


@pytest.mark.parametrize("incident", REAL, ids=lambda p: p.name)
def test_capture_is_ingestible_and_documented(incident: Path, tmp_path: Path) -> None:
    path = _metrics_file(incident)
    assert _text(path).endswith("# EOF\n")
    om = tmp_path / "metrics.om"
    om.write_text(_text(path))
    res = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(tmp_path / "tsdb")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    expected = json.loads((incident / "expected.json").read_text())
    assert expected["resolution"] == 1.0 and expected["must_not"]
    assert expected["must"] or incident.name.startswith("real_traffic")
    # real_X was recorded by capture_X.py; a second recording real_X_<what> by the same script
    name = incident.name.removeprefix("real_")
    scripts = [
        s
        for s in (ROOT / "fixtures" / "capture").glob("capture_*.py")
        if name == s.stem.removeprefix("capture_")
        or name.startswith(s.stem.removeprefix("capture_") + "_")
    ]
    assert scripts, f"the capture script capture_{name}.py must sit beside the fixtures"
    assert scripts[0].stem.removeprefix("capture_") + ".py" in expected["description"] or (
        scripts[0].name in expected["description"]
    )


def test_pool_onset_is_the_first_rejection() -> None:
    d = INCIDENTS / "real_pool_exhaustion"
    (must,) = json.loads((d / "expected.json").read_text())["must"]
    first = next(
        line for line in (d / "postgres.log").read_text().splitlines() if "too many clients" in line
    )
    stamp = datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    assert must["signature"] == "pool_exhaustion"
    assert must["onset"] == pytest.approx(stamp.timestamp(), abs=1e-3)
    # Connections in use are near the max within two scrapes of the first rejection.
    text = _text(_metrics_file(d))
    busy: dict[float, float] = defaultdict(float)
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m[1] == "pg_stat_activity_count" and 'state="idle"' not in (m[2] or ""):
            busy[float(m[4])] += float(m[3])
    before = [v for t, v in busy.items() if t < must["onset"] - 5]
    after = [v for t, v in busy.items() if must["onset"] < t <= must["onset"] + 2]
    assert max(before) <= 3 and max(after) >= 12


def _cache_rates(d: Path) -> tuple[dict[float, float], dict[float, float]]:
    """Per-step miss ratio and cache request count from the recorded Redis counters."""
    text = _text(_metrics_file(d))
    hits = _sum_by_step(text, "redis_keyspace_hits_total")
    misses = _sum_by_step(text, "redis_keyspace_misses_total")
    ratio, rate = {}, {}
    for a, b in itertools.pairwise(sorted(misses)):
        dh, dm = hits[b] - hits[a], misses[b] - misses[a]
        ratio[b], rate[b] = dm / (dh + dm), dh + dm
    return ratio, rate


def test_stampede_onset_is_where_the_miss_ratio_leaves_baseline() -> None:
    d = INCIDENTS / "real_cache_stampede"
    (must,) = json.loads((d / "expected.json").read_text())["must"]
    ratio, rate = _cache_rates(d)
    onset = must["onset"]
    base = [r for t, r in ratio.items() if t < onset - 5]
    med = statistics.median(base)
    first_high = min(t for t, r in ratio.items() if r > med + 0.3)
    assert first_high == onset
    assert ratio[onset - 1] < med + 0.1
    # The cache request rate stays flat through the stampede.
    base_rate = statistics.median(v for t, v in rate.items() if t < onset - 5)
    assert all(abs(rate[onset + k] / base_rate - 1) < 0.1 for k in range(10))


def test_surge_raises_requests_but_not_the_miss_ratio() -> None:
    ratio, rate = _cache_rates(INCIDENTS / "real_traffic_surge")
    steps = sorted(rate)
    first, last = steps[: len(steps) // 3], steps[-len(steps) // 4 :]
    assert statistics.median(rate[t] for t in last) > 1.5 * statistics.median(
        rate[t] for t in first
    )
    r0 = statistics.median(ratio[t] for t in first)
    r1 = statistics.median(ratio[t] for t in last)
    assert abs(r1 - r0) < 0.02
