"""Pure anti-herd policies: TTL jitter, XFetch, backoff, retry budget, breaker, bucket, shedder.

Every policy takes its clock and random source from the caller, so tests drive them exactly.
None of them does I/O or sleeps.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Literal

from herdwatch.cache._clock import Clock
from herdwatch.cache.errors import CircuitOpen, Overloaded, RateLimited

JitterMode = Literal["uniform", "hash"]
BackoffMode = Literal["full", "equal", "decorrelated"]


def key_fraction(key: str) -> float:
    """A number in [0, 1) fixed by the key (blake2b), the same on every node and every run."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def jittered_ttl(ttl: float, jitter: float, *, key: str, mode: JitterMode, rng: Random) -> float:
    """The TTL to store: ``ttl + jitter * f`` with f = U[0, 1) or, in hash mode, ``key_fraction``.

    Never shorter than ``ttl``, always shorter than ``ttl + jitter`` (for jitter > 0), so keys
    written together expire spread over a window of ``jitter`` seconds instead of all at once.
    """
    if jitter <= 0:
        return ttl
    frac = key_fraction(key) if mode == "hash" else rng.random()
    return ttl + jitter * frac


def xfetch_gap(delta: float, beta: float, u: float) -> float:
    """How early this reader refreshes: ``-delta * beta * ln(u)`` for u in (0, 1] (>= 0)."""
    return -delta * beta * math.log(u)


def xfetch_due(now: float, expiry: float, delta: float, beta: float, rng: Random) -> bool:
    """True when this caller should refresh early: now - delta*beta*ln(U) >= expiry (Vattani 2015).

    U is uniform in (0, 1]; ``delta`` is the measured recompute time stored with the value.
    The probability at ``r = expiry - now > 0`` is exactly ``exp(-r / (delta * beta))``.
    """
    u = 1.0 - rng.random()  # random() is in [0, 1); ln needs (0, 1]
    return now + xfetch_gap(delta, beta, u) >= expiry


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter (Brooker, AWS Architecture Blog 2015).

    With ``t = min(cap, base * 2**attempt)``: full = U(0, t); equal = t/2 + U(0, t/2);
    decorrelated = min(cap, U(base, 3 * previous)), where previous starts at ``base``.
    """

    base: float = 0.05
    cap: float = 2.0
    mode: BackoffMode = "full"

    def __post_init__(self) -> None:
        if not (0 <= self.base <= self.cap):
            raise ValueError("backoff needs 0 <= base <= cap")
        if self.mode not in ("full", "equal", "decorrelated"):
            raise ValueError(f"unknown backoff mode {self.mode!r}")

    def delay(self, attempt: int, previous: float, rng: Random) -> float:
        """The sleep before retry number ``attempt`` (0-based); ``previous`` is the last delay."""
        if self.mode == "decorrelated":
            prev = max(previous, self.base)
            return min(self.cap, rng.uniform(self.base, prev * 3))
        t = min(self.cap, self.base * 2.0 ** min(attempt, 1024))
        if self.mode == "full":
            return rng.uniform(0, t)
        return t / 2 + rng.uniform(0, t / 2)


class RetryBudget:
    """Retries allowed as a share of calls: each call deposits ``ratio``, each retry costs 1.

    Tokens never exceed ``max_tokens``; starting with ``initial`` lets a quiet client retry at all.
    A retry storm is then bounded by ``ratio`` times the call rate, whatever the attempt limit.
    """

    __slots__ = ("_tokens", "max_tokens", "ratio")

    def __init__(self, ratio: float = 0.1, *, max_tokens: float = 10.0, initial: float = 3.0):
        if ratio < 0 or max_tokens < 0:
            raise ValueError("a retry budget needs ratio >= 0 and max_tokens >= 0")
        self.ratio, self.max_tokens = ratio, max_tokens
        self._tokens = min(initial, max_tokens)

    @property
    def tokens(self) -> float:
        return self._tokens

    def deposit(self) -> None:
        """Credit one call."""
        self._tokens = min(self.max_tokens, self._tokens + self.ratio)

    def try_withdraw(self) -> bool:
        """Spend one retry; False when the budget is exhausted."""
        if self._tokens >= 1.0 - 1e-9:  # ten deposits of 0.1 sum to 0.999...
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


class BreakerState(enum.IntEnum):
    """Exported as ``herdcache_breaker_state``: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Closed / open / half-open breaker counting consecutive failures.

    After ``failure_threshold`` consecutive failures it opens for ``reset_timeout`` seconds;
    then up to ``half_open_calls`` trial calls pass; one success closes it, a failure reopens it.
    """

    __slots__ = (
        "_clock", "_failures", "_on_change", "_opened_at", "_state", "_trials",
        "failure_threshold", "half_open_calls", "is_closed", "name", "reset_timeout",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        *,
        clock: Clock,
        failure_threshold: int = 5,
        reset_timeout: float = 5.0,
        half_open_calls: int = 1,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout < 0 or half_open_calls < 1:
            raise ValueError("breaker needs failure_threshold >= 1, reset_timeout >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_calls = half_open_calls
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self.is_closed = True  # read on every cache hit: a plain attribute, not a property
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose timeout passed reads as half-open)."""
        if (
            self._state is BreakerState.OPEN
            and self._clock.monotonic() - self._opened_at >= self.reset_timeout
        ):
            self._set(BreakerState.HALF_OPEN)
            self._trials = 0
        return self._state

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            self.is_closed = state is BreakerState.CLOSED
            if self._on_change is not None:
                self._on_change(state)

    def allow(self) -> bool:
        """Whether a call may go through now (counts a half-open trial when it does)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._trials < self.half_open_calls:
            self._trials += 1
            return True
        return False

    def check(self) -> None:
        """Like :meth:`allow`, but raise :class:`CircuitOpen` instead of returning False."""
        if not self.allow():
            remaining = self.reset_timeout - (self._clock.monotonic() - self._opened_at)
            raise CircuitOpen(self.name, max(0.0, remaining))

    def record_success(self) -> None:
        self._failures = 0
        if not self.is_closed:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock.monotonic()
            self._trials = 0
            self._set(BreakerState.OPEN)


class TokenBucket:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` stored (429 when empty)."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, *, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def try_acquire(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if present."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def acquire(self, n: float = 1.0) -> None:
        """Take ``n`` tokens or raise :class:`RateLimited` with the wait until they are due."""
        if not self.try_acquire(n):
            raise RateLimited((n - self._tokens) / self.rate)


class LoadShedder:
    """At most ``limit`` concurrent loads; the next one fails at once with :class:`Overloaded`.

    Failing fast (no queue) keeps latency bounded when the database is saturated, like a 503.
    """

    __slots__ = ("_active", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("load shedding limit must be >= 1")
        self.limit = limit
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def enter(self) -> None:
        """Take a slot or raise :class:`Overloaded`; pair with :meth:`leave`."""
        if self._active >= self.limit:
            raise Overloaded(self.limit)
        self._active += 1

    def leave(self) -> None:
        self._active -= 1
