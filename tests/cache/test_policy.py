"""Exact and property tests of the pure policies, driven by an injected clock and random source."""

from __future__ import annotations

import math
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdwatch.cache import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    FakeClock,
    LoadShedder,
    Overloaded,
    RateLimited,
    RetryBudget,
    TokenBucket,
    jittered_ttl,
    key_fraction,
    xfetch_due,
    xfetch_gap,
)


class FixedRandom(Random):
    """random() returns the given values in turn; uniform(a, b) uses them as fractions."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self._values = list(values)

    def random(self) -> float:
        return self._values.pop(0)


ttls = st.floats(min_value=0.001, max_value=1e6, allow_nan=False)
jitters = st.floats(min_value=0.001, max_value=1e5, allow_nan=False)


@given(ttl=ttls, jitter=jitters, key=st.text(max_size=40), seed=st.integers(0, 2**32))
def test_uniform_jitter_stays_in_window(ttl: float, jitter: float, key: str, seed: int) -> None:
    got = jittered_ttl(ttl, jitter, key=key, mode="uniform", rng=Random(seed))
    assert ttl <= got <= ttl + jitter


@given(ttl=ttls, jitter=jitters, key=st.text(max_size=40), s1=st.integers(), s2=st.integers())
def test_hash_jitter_is_the_same_on_every_node(
    ttl: float, jitter: float, key: str, s1: int, s2: int
) -> None:
    a = jittered_ttl(ttl, jitter, key=key, mode="hash", rng=Random(s1))
    b = jittered_ttl(ttl, jitter, key=key, mode="hash", rng=Random(s2))
    assert a == b == ttl + jitter * key_fraction(key)
    assert ttl <= a <= ttl + jitter
    assert 0 <= key_fraction(key) < 1


def test_hash_jitter_spreads_keys_over_the_window() -> None:
    fractions = sorted(key_fraction(f"user:{i}") for i in range(10_000))
    # Ten equal bins each hold 10 % +- 1.5 % of the keys: uniform enough to break a cliff.
    for b in range(10):
        share = sum(b / 10 <= f < (b + 1) / 10 for f in fractions) / len(fractions)
        assert abs(share - 0.1) < 0.015


def test_zero_jitter_is_the_plain_ttl() -> None:
    assert jittered_ttl(60.0, 0.0, key="k", mode="uniform", rng=FixedRandom()) == 60.0


@given(
    now=st.floats(0, 1e6),
    ahead=st.floats(0, 100),
    delta=st.floats(0.001, 10),
    beta=st.floats(0.1, 5),
    u=st.floats(1e-12, 1.0, exclude_min=False),
)
def test_xfetch_rule_is_the_paper_formula(
    now: float, ahead: float, delta: float, beta: float, u: float
) -> None:
    expiry = now + ahead
    # random() returns 1 - u, so the rule sees exactly u.
    due = xfetch_due(now, expiry, delta, beta, FixedRandom(1.0 - u))
    assert due == (now - delta * beta * math.log(u) >= expiry)
    assert xfetch_gap(delta, beta, u) >= 0


def test_xfetch_is_always_due_at_or_after_expiry() -> None:
    rng = Random(1)
    assert all(xfetch_due(100.0, 100.0, 1.0, 1.0, rng) for _ in range(1000))
    assert all(xfetch_due(101.0, 100.0, 1.0, 1.0, rng) for _ in range(1000))


@settings(max_examples=25, deadline=None)
@given(
    r_over_scale=st.floats(0.05, 4.0),
    delta=st.floats(0.01, 5.0),
    beta=st.floats(0.25, 4.0),
    seed=st.integers(0, 2**32),
)
def test_xfetch_probability_is_exp_of_minus_gap(
    r_over_scale: float, delta: float, beta: float, seed: int
) -> None:
    """P(early refresh at r seconds before expiry) = exp(-r / (delta * beta))."""
    r = r_over_scale * delta * beta
    p = math.exp(-r / (delta * beta))
    n = 4000
    rng = Random(seed)
    hits = sum(xfetch_due(1000.0 - r, 1000.0, delta, beta, rng) for _ in range(n))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(hits - n * p) <= 5 * sigma + 1


@given(
    base=st.floats(0.001, 1.0),
    cap=st.floats(1.0, 60.0),
    attempt=st.integers(0, 40),
    seed=st.integers(0, 2**32),
)
def test_full_and_equal_jitter_bounds(base: float, cap: float, attempt: int, seed: int) -> None:
    t = min(cap, base * 2.0**attempt)
    full = Backoff(base, cap, "full").delay(attempt, 0.0, Random(seed))
    equal = Backoff(base, cap, "equal").delay(attempt, 0.0, Random(seed))
    assert 0 <= full <= t
    assert t / 2 <= equal <= t


@given(
    base=st.floats(0.001, 1.0),
    cap=st.floats(1.0, 60.0),
    prev=st.floats(0.0, 100.0),
    seed=st.integers(0, 2**32),
)
def test_decorrelated_jitter_bounds(base: float, cap: float, prev: float, seed: int) -> None:
    got = Backoff(base, cap, "decorrelated").delay(3, prev, Random(seed))
    assert got <= cap
    assert got >= min(cap, base)
    assert got <= max(base, max(prev, base) * 3)


def test_backoff_formulas_exactly() -> None:
    # uniform(a, b) = a + (b - a) * random(): pin random() to 0.25.
    assert Backoff(0.1, 10, "full").delay(3, 0, FixedRandom(0.25)) == pytest.approx(0.2)
    assert Backoff(0.1, 10, "equal").delay(3, 0, FixedRandom(0.25)) == pytest.approx(0.5)
    assert Backoff(0.1, 0.5, "full").delay(10, 0, FixedRandom(1.0)) == pytest.approx(0.5)
    # decorrelated: U(base, 3 * prev) = 0.1 + (0.9 - 0.1) * 0.25
    assert Backoff(0.1, 10, "decorrelated").delay(0, 0.3, FixedRandom(0.25)) == pytest.approx(0.3)
    assert Backoff(0.1, 0.2, "decorrelated").delay(0, 5.0, FixedRandom(0.9)) == 0.2
    with pytest.raises(ValueError):
        Backoff(1.0, 0.5)


def test_retry_budget_bounds_retries_to_a_share_of_calls() -> None:
    budget = RetryBudget(0.1, max_tokens=10, initial=0)
    for _ in range(100):
        budget.deposit()
    granted = sum(budget.try_withdraw() for _ in range(100))
    assert granted == 10
    assert not budget.try_withdraw()


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(
        "db", clock=clock, failure_threshold=3, reset_timeout=5.0, on_change=seen.append
    )
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_success()  # consecutive failures only
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as info:
        breaker.check()
    assert info.value.retry_after == pytest.approx(5.0)
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert seen == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_token_bucket_refills_at_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 5, clock=clock)
    assert sum(bucket.try_acquire() for _ in range(20)) == 5
    with pytest.raises(RateLimited) as info:
        bucket.acquire()
    assert info.value.retry_after == pytest.approx(0.1)
    assert info.value.status == 429
    clock.advance(0.35)
    assert sum(bucket.try_acquire() for _ in range(20)) == 3
    clock.advance(100)
    assert sum(bucket.try_acquire() for _ in range(20)) == 5


def test_load_shedder_fails_fast_beyond_limit() -> None:
    shedder = LoadShedder(2)
    shedder.enter()
    shedder.enter()
    with pytest.raises(Overloaded) as info:
        shedder.enter()
    assert info.value.status == 503 and shedder.active == 2
    shedder.leave()
    shedder.enter()
    assert shedder.active == 2
