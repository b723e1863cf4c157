"""Herds on two databases or two peers are two findings, each naming what herded (`subject`),
whether they herd at different times or at the same time."""

from __future__ import annotations

import numpy as np
import pytest

from herdwatch.detect._common import group_labels
from herdwatch.engine import scan
from herdwatch.model import Finding, RawData, Series
from tests.detect import _synth as s

STEP = 1.0
DURATION = 3600.0
MAX_CONN = 100


def _db(instance: str, t_on: float, rng: np.random.Generator) -> list[Series]:
    """One Postgres (pg_stat_activity_count by state, max_connections) whose pool fills within
    a second at t_on and drains 90 s later."""
    t = s.grid(DURATION, STEP)
    active = np.where((t >= t_on) & (t < t_on + 90), MAX_CONN - 2, 0.25 * MAX_CONN)
    active = np.clip(np.round(active + rng.normal(0, 0.6, len(t))), 0, MAX_CONN - 2)
    lab = {"instance": instance, "job": "postgres"}
    return [
        s.gauge("pg_stat_activity_count", t, active, {**lab, "state": "active"}),
        s.gauge("pg_stat_activity_count", t, np.full(len(t), 2.0), {**lab, "state": "idle"}),
        s.gauge("pg_settings_max_connections", t, np.full(len(t), float(MAX_CONN)), lab),
    ]


def _peer(peer: str, t_out: float, rng: np.random.Generator) -> list[Series]:
    """Calls to one upstream: down for 60 s from t_out, then 10x its rate for 60 s (retries)."""
    t = s.grid(DURATION, STEP)
    t_rec = t_out + 60.0
    up = (t <= t_out) | (t > t_rec)
    after = (t > t_rec) & (t <= t_rec + 60.0)
    ok_rate = np.where(up, 50.0, 0.0) * np.where(after, 10.0, 1.0)
    err_rate = np.where(up, 0.05, 60.0)
    lab = {"peer": peer, "instance": "api-1:8080"}
    return [
        s.counter("http_client_requests_total", t, ok_rate, rng, {**lab, "code": "200"}),
        s.counter("http_client_requests_total", t, err_rate, rng, {**lab, "code": "503"}),
    ]


def _found(raw: RawData, signature: str) -> list[Finding]:
    return [f for f in scan(raw).findings if f.signature == signature]


@pytest.mark.parametrize("apart", [0.0, 900.0], ids=["same_time", "apart"])
def test_two_databases_whose_pools_fill_are_two_findings(apart: float) -> None:
    rng = np.random.default_rng(11)
    t1 = s.T0 + 1800.4
    raw = RawData(series=_db("db-1:9187", t1, rng) + _db("db-2:9187", t1 + apart, rng))
    found = _found(raw, "pool_exhaustion")
    assert sorted(f.subject for f in found) == [
        (("instance", "db-1:9187"),),
        (("instance", "db-2:9187"),),
    ]
    for f in found:
        expected = t1 if f.subject_dict["instance"] == "db-1:9187" else t1 + apart
        assert abs(f.onset - expected) <= STEP + 1e-6, (f.subject, f.onset, expected)


@pytest.mark.parametrize("apart", [0.0, 900.0], ids=["same_time", "apart"])
def test_two_peers_that_storm_are_two_findings(apart: float) -> None:
    rng = np.random.default_rng(12)
    t1 = s.T0 + 1500.2
    raw = RawData(series=_peer("auth", t1, rng) + _peer("billing", t1 + apart, rng))
    found = _found(raw, "retry_storm")
    assert sorted(f.subject for f in found) == [(("peer", "auth"),), (("peer", "billing"),)]
    for f in found:
        expected = t1 + 60.0 if f.subject_dict["peer"] == "auth" else t1 + apart + 60.0
        assert abs(f.onset - expected) <= 2 * STEP + 1e-6, (f.subject, f.onset, expected)


def test_a_ttl_cliff_names_its_redis() -> None:
    from tests.detect.test_ttl_cliff import _sample, _written_at_once

    rng = np.random.default_rng(13)
    sample = _sample(_written_at_once(rng, 500, 600.0), source="redis redis://cache-2:6379/0")
    (f,) = _found(RawData(key_expiry=[sample]), "ttl_cliff")
    assert f.subject == (("source", "redis redis://cache-2:6379/0"),)


def test_group_keys_become_labels() -> None:
    assert group_labels("instance=db1:9187,job=pg") == (("instance", "db1:9187"),)
    assert group_labels("job=pg") == (("job", "pg"),)  # nothing else names the server
    assert group_labels("server=a,b,datname=app") == (("datname", "app"), ("server", "a,b"))
    assert group_labels("") == group_labels("all") == ()
