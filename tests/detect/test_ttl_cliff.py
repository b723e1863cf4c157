"""ttl_cliff fires on keys that will expire together and stays silent on spread expiries, at 200
and 50,000 sampled keys and TTLs of 60 s and one day; the recommended re-spread clears it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdwatch.cache import Settings
from herdwatch.detect.ttl_cliff import TtlCliffParams, detect_ttl_cliff
from herdwatch.engine import scan
from herdwatch.model import Finding, FloatArray, KeyExpirySample, RawData
from herdwatch.signals import SignalSet
from tests._snippets import from_url_kwargs

T0 = 1_764_000_000.0
SIZES = [200, 50_000]
TTLS = [60.0, 86_400.0]


def _sample(
    ttls: FloatArray,
    patterns: list[str] | None = None,
    *,
    sampled: int | None = None,
    keys_total: int | None = None,
    source: str = "redis redis://127.0.0.1:6379/0",
    taken_at: float = T0,
) -> KeyExpirySample:
    n = len(ttls)
    return KeyExpirySample(
        source,
        taken_at,
        keys_total if keys_total is not None else 4 * n,
        sampled if sampled is not None else n,
        np.asarray(ttls, dtype=np.float64),
        tuple(patterns if patterns is not None else ["user:*:profile"] * n),
    )


def _cliffs(*samples: KeyExpirySample, **overrides: object) -> list[Finding]:
    raw = RawData(key_expiry=list(samples))
    rules = {"ttl_cliff": overrides} if overrides else None
    return [f for f in scan(raw, rule_overrides=rules).findings if f.signature == "ttl_cliff"]


def _written_at_once(rng: np.random.Generator, n: int, ttl: float) -> FloatArray:
    """Keys written within half a second with one TTL, sampled a moment later."""
    out: FloatArray = ttl - rng.uniform(0.0, 0.5, n)
    return out


def _steady(rng: np.random.Generator, n: int, ttl: float) -> FloatArray:
    """Keys written at a steady rate with one TTL: remaining TTLs uniform on (0, ttl]."""
    out: FloatArray = rng.uniform(0.0, ttl, n)
    return out


@pytest.mark.parametrize("ttl", TTLS)
@pytest.mark.parametrize("n", SIZES)
def test_keys_written_together_are_a_cliff(n: int, ttl: float) -> None:
    rng = np.random.default_rng(n + int(ttl))
    ttls = _written_at_once(rng, n, ttl)
    (f,) = _cliffs(_sample(ttls))
    ev = f.evidence
    assert f.onset == pytest.approx(T0 + ttls.min(), abs=1e-6)
    assert f.end == pytest.approx(T0 + ttls.max(), abs=1e-6)
    assert ev["window"]["start"] == f.onset and ev["window"]["end"] == f.end
    assert ev["count"] == n and ev["share"] == 1.0 and f.severity == "critical"
    assert ev["patterns"] == [{"pattern": "user:*:profile", "count": n}]
    assert ev["expected_share"] < 0.05 and ev["factor"] > 20
    assert ev["p_value"] < 1e-6 and ev["log10_p_value"] < -6
    assert ev["keys_total"] == 4 * n and ev["keys_expiring_estimate"] == 4 * n
    assert f.recommendations  # the engine attached them


@pytest.mark.parametrize("ttl", TTLS)
@pytest.mark.parametrize("n", SIZES)
def test_spread_expiries_are_not_a_cliff(n: int, ttl: float) -> None:
    rng = np.random.default_rng(7 * n + int(ttl))
    assert _cliffs(_sample(_steady(rng, n, ttl))) == []


@pytest.mark.parametrize("ttl", TTLS)
@pytest.mark.parametrize("n", SIZES)
def test_a_third_of_the_keys_in_one_second_among_spread_keys(n: int, ttl: float) -> None:
    rng = np.random.default_rng(3 * n + int(ttl))
    k = n // 3
    at = ttl / 2
    cliff = at - rng.uniform(0, 0.5, k)
    ttls = np.concatenate([_steady(rng, n - k, ttl), cliff])
    pats = ["session:*"] * (n - k) + ["product:*"] * k
    (f,) = _cliffs(_sample(ttls, pats))
    ev = f.evidence
    # the window may start at a spread key just before the cliff, within one tested width
    width = ev["window"]["tested_width"]
    assert T0 + cliff.min() - width <= f.onset <= T0 + cliff.min() + 1e-6
    assert f.end <= T0 + at + ev["window"]["tested_width"]
    assert ev["count"] >= k and ev["share"] == pytest.approx(k / n, abs=0.02)
    assert ev["patterns"][0] == {"pattern": "product:*", "count": k}
    assert f.severity == "warning"


@pytest.mark.parametrize("n", SIZES)
def test_jittered_ttls_written_together_are_spread_enough(n: int) -> None:
    rng = np.random.default_rng(n)
    ttl = 3600.0
    ttls = ttl + rng.uniform(0, 0.1 * ttl, n)  # ttl_jitter = 10 % of the TTL
    assert _cliffs(_sample(ttls)) == []
    # ... and 1 % jitter is still one wave
    assert len(_cliffs(_sample(ttl + rng.uniform(0, 0.01 * ttl, n)))) == 1


@pytest.mark.parametrize("n", SIZES)
def test_short_and_long_ttls_in_one_cache_are_not_a_cliff(n: int) -> None:
    """Half the keys live 60 s, half a day, all written steadily: half of them expire within a
    minute, but as a spread, not a cliff (one key pattern, or each key its own)."""
    rng = np.random.default_rng(n + 1)
    ttls = np.concatenate([_steady(rng, n // 2, 60.0), _steady(rng, n - n // 2, 86_400.0)])
    assert _cliffs(_sample(ttls, ["cache:*"] * n)) == []
    assert _cliffs(_sample(ttls, [f"k{i}" for i in range(n)])) == []


def test_growing_traffic_and_diurnal_writes_are_not_a_cliff() -> None:
    rng = np.random.default_rng(11)
    ramp = 86_400.0 * np.sqrt(rng.uniform(0, 1, 20_000))  # write rate doubling over the day
    assert _cliffs(_sample(ramp)) == []
    day = np.concatenate([_steady(rng, 20_000, 86_400.0), rng.uniform(30_000, 60_000, 10_000)])
    assert _cliffs(_sample(day)) == []


def test_a_restart_warms_the_cache_in_a_burst() -> None:
    """Flushed 10 minutes ago with TTL 1 h: the keys spread over the last 10 minutes are fine,
    the burst of reloads in the first 30 s after the flush is the cliff to come."""
    rng = np.random.default_rng(5)
    steady = rng.uniform(3000, 3600, 14_000)
    assert _cliffs(_sample(steady)) == []
    burst = rng.uniform(3570, 3600, 6_000)
    (f,) = _cliffs(_sample(np.concatenate([steady, burst])))
    assert 3565 <= f.onset - T0 <= 3571 and f.end - T0 == pytest.approx(3600, abs=0.1)


def test_several_cliffs_strongest_first_and_adjacent_windows_merge() -> None:
    rng = np.random.default_rng(9)
    a = 1000 - rng.uniform(0, 0.5, 4000)
    b = 2000 - rng.uniform(0, 0.5, 2500)
    c = _steady(rng, 3500, 3600.0)
    found = _cliffs(_sample(np.concatenate([a, b, c])))
    assert [round(f.onset - T0, -1) for f in found] == [1000, 2000]
    assert found[0].evidence["count"] >= 4000 and found[1].evidence["count"] >= 2500
    # 2 % jitter written at once: one wave, reported once though it spans many windows
    wave = 86_400 + rng.uniform(0, 0.02 * 86_400, 50_000)
    (f,) = _cliffs(_sample(wave))
    assert f.evidence["share"] > 0.8
    assert f.end - f.onset > 0.8 * 0.02 * 86_400


def test_parameters_bound_what_fires() -> None:
    rng = np.random.default_rng(2)
    k, n = 300, 1000
    ttls = np.concatenate([_steady(rng, n - k, 600.0), 300 - rng.uniform(0, 0.5, k)])
    assert len(_cliffs(_sample(ttls))) == 1
    assert _cliffs(_sample(ttls), min_share=0.5) == []
    assert _cliffs(_sample(ttls), min_count=k + 50) == []
    assert _cliffs(_sample(ttls), enabled=False) == []
    # too few keys with a TTL say nothing
    assert _cliffs(_sample(ttls[-15:])) == []
    assert len(_cliffs(_sample(ttls[-15:]), min_keys=10, min_count=5)) == 1


def test_latest_sample_per_source_and_each_source_on_its_own() -> None:
    rng = np.random.default_rng(4)
    cliff = _sample(_written_at_once(rng, 500, 600.0), taken_at=T0)
    later = _sample(_steady(rng, 500, 600.0), taken_at=T0 + 5)
    assert _cliffs(cliff, later) == []  # the cliff was re-spread since
    other = _sample(_written_at_once(rng, 500, 600.0), source="redis redis://10.0.0.2:6379/0")
    (f,) = _cliffs(cliff, later, other)
    assert f.evidence["source"] == "redis redis://10.0.0.2:6379/0"


def test_share_of_sampled_and_the_whole_database_estimate() -> None:
    rng = np.random.default_rng(8)
    ttls = np.concatenate([_written_at_once(rng, 400, 900.0), _steady(rng, 100, 900.0)])
    (f,) = _cliffs(_sample(ttls, sampled=1000, keys_total=250_000))
    ev = f.evidence
    assert ev["with_ttl"] == 500 and ev["sampled"] == 1000
    assert ev["share"] == pytest.approx(ev["count"] / 500)
    assert ev["share_of_sampled"] == pytest.approx(ev["count"] / 1000)
    assert ev["keys_expiring_estimate"] == round(ev["count"] / 1000 * 250_000)


@pytest.mark.parametrize("ttl", [*TTLS, 3600.0])
@pytest.mark.parametrize("n", SIZES)
def test_recommended_jitter_is_valid_and_clears_the_cliff(n: int, ttl: float) -> None:
    rng = np.random.default_rng(n * 3 + int(ttl))
    ttls = _written_at_once(rng, n, ttl)
    (f,) = _cliffs(_sample(ttls))
    respread, jitter, *rest = f.recommendations
    assert "PEXPIRE" in respread.config and "user:*:profile" in respread.config
    assert jitter.option == "herdwatch.cache.Settings.ttl_jitter"
    for r in (jitter, *rest):
        kwargs = from_url_kwargs(r.config)
        Settings().replace(kwargs)  # raises on a setting name or value the client rejects
    spread = float(from_url_kwargs(jitter.config)["ttl_jitter"])  # type: ignore[arg-type]
    assert spread >= 0.1 * ttl
    m = re.search(r"RANDOM \* (\d+) \* 1000", respread.config)
    assert m and float(m.group(1)) == spread
    # re-spread as advised: each key gets an offset in [0, spread)
    assert _cliffs(_sample(ttls + rng.uniform(0, spread, n))) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(min_value=-10, max_value=1e7), st.just(float("nan"))), max_size=300
    ),
    st.integers(min_value=1, max_value=4),
)
def test_never_raises_on_odd_samples(values: list[float], n_patterns: int) -> None:
    ttls = np.array(values, dtype=np.float64)
    pats = [f"p{i % n_patterns}" for i in range(len(values))]
    for f in detect_ttl_cliff(SignalSet(key_expiry=[_sample(ttls, pats)]), TtlCliffParams()):
        assert f.onset <= f.end
        assert 0 < f.evidence["share"] <= 1
