"""Issue 8, "TTLs": a cliff seconds ahead is found; sliding TTLs (re-armed on every access, so
the remaining TTLs of recently touched keys bunch just under the full TTL) are no cliff.

One sample cannot tell a re-armed bunch from a batch written a moment ago; two can: a cliff's
keys expire at a fixed time, a re-armed bunch stays at the same remaining TTLs as the clock
moves (ttl_cliff's module doc). The live check against a real Redis is
tests/e2e/test_redis_ttl_cliff.py."""

from __future__ import annotations

import numpy as np
import pytest

from herdwatch.model import FloatArray
from tests.detect.test_ttl_cliff import T0, _cliffs, _sample


def _sliding(rng: np.random.Generator, n: int, ttl: float, touch_every: float) -> FloatArray:
    """Keys re-armed to `ttl` on every access, accessed every `touch_every` s on average
    (Poisson): the ages since the last touch are exponential."""
    age = rng.exponential(touch_every, n)
    out: FloatArray = ttl - age[age < ttl]
    return out


@pytest.mark.parametrize("ttl", [60.0, 3600.0])
def test_a_cliff_seconds_ahead_is_found(ttl: float) -> None:
    rng = np.random.default_rng(3)
    n = 500
    k = int(0.4 * n)
    ttls = np.concatenate([5.0 + rng.uniform(0.0, 1.0, k), rng.uniform(0.0, ttl, n - k)])
    (f,) = _cliffs(_sample(ttls))
    assert 0.0 <= f.onset - T0 <= 6.0


@pytest.mark.parametrize(("ttl", "touch_every"), [(60.0, 1.0), (60.0, 3.0), (3600.0, 20.0)])
@pytest.mark.parametrize("n", [200, 2000])
def test_sliding_ttls_in_a_watchers_history_are_no_cliff(
    n: int, ttl: float, touch_every: float
) -> None:
    """The daemon's view: a sample each second, kept ever sparser with age (engine Buffer)."""
    rng = np.random.default_rng(n + int(ttl + touch_every))
    now = _sample(_sliding(rng, n, ttl, touch_every), taken_at=T0)
    assert _cliffs(now), "alone, the draw shows no bunch: the test would prove nothing"
    history = [
        _sample(_sliding(rng, n, ttl, touch_every), taken_at=T0 - d)
        for d in (300.0, 120.0, 60.0, 30.0, 16.0, 8.0, 4.0, 2.0, 1.0)
    ]
    assert _cliffs(*history, now) == []


@pytest.mark.parametrize("touch_every", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("n", [200, 2000])
def test_sliding_ttls_in_a_one_shot_scan_are_no_cliff(n: int, touch_every: float) -> None:
    """`herdwatch scan --redis`: one sample at the start and one at the end of its 10 s."""
    rng = np.random.default_rng(n + int(10 * touch_every))
    before = _sample(_sliding(rng, n, 60.0, touch_every), taken_at=T0 - 10.0)
    now = _sample(_sliding(rng, n, 60.0, touch_every), taken_at=T0)
    assert _cliffs(now), "alone, the draw shows no bunch: the test would prove nothing"
    assert _cliffs(before, now) == []


def test_keys_touched_less_often_than_the_samples_are_apart_stay_a_cliff() -> None:
    """Keys re-armed every 3 s on average, sampled 2 s apart: half the bunch has not moved yet
    and may still expire together; the forecast stands (the evidence shows why)."""
    rng = np.random.default_rng(2)
    before = _sample(_sliding(rng, 2000, 60.0, 3.0), taken_at=T0 - 2.0)
    now = _sample(_sliding(rng, 2000, 60.0, 3.0), taken_at=T0)
    found = _cliffs(before, now)
    assert found
    for f in found:
        seen = f.evidence["earlier_sample"]
        assert seen["seconds_before"] == 2.0
        assert seen["share_now_where_they_were"] > 0.2 * seen["share_same_ttls"]


@pytest.mark.parametrize("seconds_apart", [2.0, 10.0, 30.0])
@pytest.mark.parametrize("ttl", [60.0, 3600.0])
def test_a_batch_written_between_the_samples_is_a_cliff(ttl: float, seconds_apart: float) -> None:
    rng = np.random.default_rng(int(ttl + seconds_apart))
    spread = rng.uniform(0.0, ttl, 300)
    before = _sample(spread, taken_at=T0 - seconds_apart)
    batch = ttl - rng.uniform(0.0, 0.5, 300)  # written just before the latest sample
    now = _sample(np.concatenate([spread - seconds_apart, batch]), taken_at=T0)
    (f,) = _cliffs(before, now)
    seen = f.evidence["earlier_sample"]
    assert seen["share_same_ttls"] < 0.05 and seen["share_same_expiry"] < 0.05  # newer than it
    assert f.onset == pytest.approx(T0 + batch.min(), abs=1e-6)


@pytest.mark.parametrize("seconds_apart", [2.0, 10.0, 30.0])
def test_a_cliff_seen_in_both_samples_waits_in_place(seconds_apart: float) -> None:
    rng = np.random.default_rng(int(seconds_apart))
    ttl = 600.0
    spread = rng.uniform(0.0, ttl, 300)
    batch = 400.0 + rng.uniform(0.0, 0.5, 300)  # expires 400 s after the earlier sample
    before = _sample(np.concatenate([spread, batch]), taken_at=T0 - seconds_apart)
    now = _sample(np.concatenate([spread, batch]) - seconds_apart, taken_at=T0)
    (f,) = _cliffs(before, now)
    seen = f.evidence["earlier_sample"]
    assert seen["seconds_before"] == pytest.approx(seconds_apart)
    assert seen["share_same_expiry"] == pytest.approx(0.5, abs=0.05)  # waiting since
    assert seen["share_same_ttls"] < 0.05
    assert f.onset == pytest.approx(T0 - seconds_apart + batch.min(), abs=1e-6)


def test_batches_of_new_keys_each_minute_stay_cliffs() -> None:
    """A job writing a new batch of keys every minute with one TTL: a bunch at the top of every
    sample, like sliding TTLs, but each batch waits for its expiry: the earlier ones stand."""
    rng = np.random.default_rng(5)
    ttl = 3600.0

    written = (T0 - 600.0 + 60.0 * np.arange(11))[:, None] + rng.uniform(0, 0.5, (11, 100))

    def at(t: float) -> FloatArray:
        out: FloatArray = written[written <= t] + ttl - t
        return out

    before, now = _sample(at(T0 - 60.0), taken_at=T0 - 60.0), _sample(at(T0), taken_at=T0)
    # each batch is a tenth of the keys: below the default min_share
    found = _cliffs(before, now, min_share=0.05)
    assert len(found) == 3  # max_cliffs: the strongest batches, each waiting in place


def test_one_sample_alone_is_judged_on_its_own() -> None:
    """Without an earlier sample a bunch under the full TTL may be a batch written a moment
    ago: it is reported, and the evidence says no earlier sample was compared."""
    rng = np.random.default_rng(1)
    found = _cliffs(_sample(_sliding(rng, 500, 60.0, 3.0)))
    assert found and all(f.evidence["earlier_sample"] is None for f in found)
