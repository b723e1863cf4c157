"""Recommendations name real herdwatch.cache settings, with values the client accepts."""

from __future__ import annotations

import pytest

from herdwatch.cache import Settings
from herdwatch.detect import DETECTORS, recommend
from herdwatch.model import Finding
from tests._snippets import from_url_kwargs

EVIDENCE = {
    "cache_stampede": {
        "db_latency_p99": {"peak": 0.4},
        "burst_seconds": 12.0,
        "misses_per_second": {"baseline": 50.0},
        "excess_misses": 9000.0,
    },
    "pool_exhaustion": {
        "connections": {"max": 100, "baseline": 12, "climb_seconds": 1.0},
        "rejections": 40,
    },
    "ctx_switch_burst": {"context_switches_per_second": {"factor": 9.0}},
    "lock_timeout_cluster": {"errors": 60, "span_seconds": 3.0},
    "retry_storm": {"requests_per_second": {"baseline": 120.0}, "outage": {"seconds": 45.0}},
    "cron_herd": {"period_seconds": 3600.0, "spike_seconds": 90.0},
    "ttl_cliff": {
        "ttl_range_seconds": 600.0,
        "max_window_seconds": 6.0,
        "min_share": 0.2,
        "keys_expiring_estimate": 10000,
        "window": {"seconds": 0.5},
        "patterns": [{"pattern": "user:*:profile", "count": 1900}],
    },
}


@pytest.mark.parametrize("signature", sorted(EVIDENCE))
def test_recommendations_are_ranked_concrete_and_valid(signature: str) -> None:
    f = Finding(signature, 0.0, 1.0, "warning", "", EVIDENCE[signature])
    recs = recommend(f)
    assert len(recs) >= 2
    for r in recs:
        assert r.action and r.detail and r.config and r.option
        if "HerdCache.from_url" in r.config:
            kwargs = from_url_kwargs(r.config)
            kwargs.pop("ttl", None)
            Settings().replace(kwargs)  # raises SettingsError on a name or value it rejects


def test_stampede_jitter_window_comes_from_the_evidence() -> None:
    ev = dict(EVIDENCE["cache_stampede"])
    (collapse, jitter, *_rest) = recommend(Finding("cache_stampede", 0, 1, "critical", "", ev))
    # 9000 excess reloads at the 50/s the database already serves: 180 s of spread
    assert from_url_kwargs(jitter.config)["ttl_jitter"] == 180
    assert from_url_kwargs(collapse.config)["lease_ttl"] == 2  # ~3 x 0.4 s, rounded up


def test_a_rule_that_reuses_a_detector_under_another_id_keeps_its_recommendations() -> None:
    f = Finding("checkout_stampede", 0, 1, "critical", "", EVIDENCE["cache_stampede"])
    assert recommend(f) == ()  # no detector of that name: nothing to go by
    by_detector = recommend(f, "cache_stampede")
    assert by_detector == tuple(DETECTORS["cache_stampede"].recommend(f))
    assert by_detector == recommend(Finding("cache_stampede", 0, 1, "critical", "", f.evidence))


def test_every_detector_has_a_recommender() -> None:
    for name, spec in DETECTORS.items():
        f = Finding(name, 0.0, 1.0, "warning", "", EVIDENCE[name])
        assert spec.recommend(f), name


def test_mitigations_that_herdwatch_applies_carry_the_command() -> None:
    stampede = recommend(
        Finding("cache_stampede", 0, 1, "critical", "", EVIDENCE["cache_stampede"])
    )
    assert [r.command for r in stampede if r.command] == [
        "herdwatch mitigate client --redis URL --set ttl_jitter=180"
    ]
    ev = {**EVIDENCE["ttl_cliff"], "source": "redis redis://127.0.0.1:6379/0"}
    respread, jitter, *_ = recommend(Finding("ttl_cliff", 0, 1, "critical", "", ev))
    assert respread.command == (
        "herdwatch mitigate ttl-spread --redis redis://127.0.0.1:6379/0 "
        "--match 'user:*:profile' --spread 60s"
    )
    assert jitter.command == (
        "herdwatch mitigate client --redis redis://127.0.0.1:6379/0 --set ttl_jitter=60"
    )
    redacted = {**ev, "source": "redis redis://:***@cache:6379/0"}
    respread, *_ = recommend(Finding("ttl_cliff", 0, 1, "critical", "", redacted))
    assert "--redis URL " in respread.command  # never a URL that cannot work


@pytest.mark.parametrize("signature", sorted(EVIDENCE))
def test_recommendations_survive_absurd_evidence(signature: str) -> None:
    """Evidence from a broken exporter (the largest floats, infinities, None, strings) still
    yields recommendations with finite settings."""

    def absurd(ev: object) -> object:
        if isinstance(ev, dict):
            return {k: absurd(v) for k, v in ev.items()}
        if isinstance(ev, list):
            return [absurd(v) for v in ev]
        return 1.7976931348623157e308 if isinstance(ev, int | float) else ev

    for ev in (absurd(EVIDENCE[signature]), {}, {"connections": None, "outage": "x"}):
        recs = recommend(Finding(signature, 0.0, 1.0, "warning", "", ev))  # type: ignore[arg-type]
        assert recs and all(r.action and r.config for r in recs)
        assert "inf" not in " ".join(r.config for r in recs)
