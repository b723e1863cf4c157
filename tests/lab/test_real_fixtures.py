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
        "real_cache_stampede_one_shard",
        "real_pool_exhaustion_idle_slots",
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
    # real_X was recorded by capture_X.py, a second recording real_X_<what> by the same script
    # or by one that writes NAME = "real_X_<what>" (capture_shard_stampede.py); the description
    # names it
    name = incident.name.removeprefix("real_")
    scripts = [
        s
        for s in sorted((ROOT / "fixtures" / "capture").glob("capture_*.py"))
        if name == s.stem.removeprefix("capture_")
        or f'NAME = "{incident.name}"' in s.read_text()
        or name.startswith(s.stem.removeprefix("capture_") + "_")
    ]
    assert scripts, f"the capture script capture_{name}.py must sit beside the fixtures"
    assert any(s.name in expected["description"] for s in scripts) or (
        scripts[0].stem.removeprefix("capture_") + ".py" in expected["description"]
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


def _shard_rates(d: Path) -> dict[str, tuple[dict[float, float], dict[float, float]]]:
    """Per redis_exporter instance, at each of its own scrapes: the miss ratio and the cache
    requests since its previous one."""
    text = _text(_metrics_file(d))
    samples: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m[1] in ("redis_keyspace_hits_total", "redis_keyspace_misses_total"):
            (instance,) = re.findall(r'instance="([^"]*)"', m[2])
            samples[instance, m[1]][float(m[4])] = float(m[3])
    out = {}
    for instance in {i for i, _ in samples}:
        hits = samples[instance, "redis_keyspace_hits_total"]
        misses = samples[instance, "redis_keyspace_misses_total"]
        ratio, rate = {}, {}
        for a, b in itertools.pairwise(sorted(misses)):
            dh, dm = hits[b] - hits[a], misses[b] - misses[a]
            ratio[b], rate[b] = dm / (dh + dm), dh + dm
        out[instance] = (ratio, rate)
    return out


def test_one_shard_stampedes_and_the_others_keep_their_hit_ratio() -> None:
    d = INCIDENTS / "real_cache_stampede_one_shard"
    (must,) = json.loads((d / "expected.json").read_text())["must"]
    shards = _shard_rates(d)
    onset, subject = must["onset"], must["subject"]["instance"]
    assert len(shards) >= 3 and subject in shards
    # every exporter is scraped on a phase of its own
    phases = {round(min(ratio) % 1.0, 3) for ratio, _ in shards.values()}
    assert len(phases) == len(shards)
    for instance, (ratio, rate) in shards.items():
        base = [r for t, r in ratio.items() if t < onset - 5]
        med = statistics.median(base)
        high = sorted(t for t, r in ratio.items() if r > med + 0.3)
        if instance == subject:
            # the stampeding shard's first sample after the expiry is the onset
            assert high and high[0] == onset
            assert max(r for t, r in ratio.items() if t < onset) < med + 0.1
        else:
            assert not high, instance
        # each shard's cache request rate stays flat through the stampede (over 10 s: one
        # second's share of the requests that hash to a shard is binomial)
        base_rate = statistics.median(v for t, v in rate.items() if t < onset - 5)
        after = statistics.mean(v for t, v in rate.items() if onset <= t < onset + 10)
        assert abs(after / base_rate - 1) < 0.1, instance


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
