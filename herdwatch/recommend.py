"""Ranked, concrete recommendations per finding, with numbers taken from its evidence.

Each recommendation names the `herdwatch.cache` option (or the external knob) that implements
it. The ranking puts first what removes the herd, then what bounds its damage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from herdwatch.model import Finding, Recommendation

__all__ = ["recommend"]


def _num(d: Any, *keys: str, default: float = math.nan) -> float:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return float(d) if isinstance(d, int | float) else default


def _nice(seconds: float) -> int:
    """Round a duration up to a figure people write in configs (1, 2, 5, 10, 15, 30, 60...)."""
    for v in (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 600, 900, 1200, 1800, 3600):
        if seconds <= v:
            return v
    return int(math.ceil(seconds / 3600) * 3600)


def _stampede(f: Finding) -> list[Recommendation]:
    ev = f.evidence
    load = _num(ev, "db_latency_p99", "peak")
    if not math.isfinite(load):
        load = 1.0
    burst = max(_num(ev, "burst_seconds", default=1.0), 1.0)
    base_misses = _num(ev, "misses_per_second", "baseline", default=0.0)
    excess = _num(ev, "excess_misses", default=0.0)
    # spread the keys that expired together so their reloads arrive at the rate the database
    # already serves in the baseline: window = excess reloads / baseline reload rate
    spread = excess / base_misses if base_misses > 0 else 10 * burst
    jitter = _nice(max(spread, 2 * burst, 10.0))
    stale = _nice(max(3 * burst, 60.0))
    lease = _nice(max(3 * load, 1.0))
    return [
        Recommendation(
            "Collapse concurrent loads of one key (one load per key per expiry, fleet-wide)",
            f"Only one caller reloads an expired key; the others wait on a Redis lease (token, "
            f"SET NX PX) and are woken when the value lands. Lease TTL ~3x the observed load "
            f"p99 ({load:g}s). Fenced writes keep a slow loader from overwriting a newer value.",
            f"HerdCache.from_url(url, ttl=TTL, lease_ttl={lease})",
            "herdwatch.cache.Settings.lease_ttl",
        ),
        Recommendation(
            "Add TTL jitter so keys written together do not expire together",
            f"About {excess:.0f} extra misses arrived within {burst:g}s; at the baseline reload "
            f"rate ({base_misses:.3g}/s) they need a window of about {jitter}s. Use a "
            f"deterministic per-key jitter so every node agrees.",
            f"HerdCache.from_url(url, ttl=TTL, ttl_jitter={jitter}, jitter_mode='hash')",
            "herdwatch.cache.Settings.ttl_jitter",
        ),
        Recommendation(
            "Refresh hot keys early with XFetch (probabilistic early expiration)",
            f"A reader refreshes when now - delta*beta*ln(U) >= expiry; delta is the measured "
            f"load time (p99 {load:g}s here). beta=1.0 is the paper's default; raise to 2 for "
            f"keys whose reload is expensive.",
            "HerdCache.from_url(url, ttl=TTL, xfetch=True, beta=1.0)",
            "herdwatch.cache.Settings.xfetch / beta",
        ),
        Recommendation(
            "Serve stale while revalidating, and stale on loader errors",
            f"Callers get the current value while one background refresh runs; if the database "
            f"fails they get data up to max_stale old instead of an error (RFC 5861). "
            f"max_stale of {stale}s (3x this burst) covers a repeat.",
            f"HerdCache.from_url(url, ttl=TTL, stale_while_revalidate={stale}, max_stale={stale})",
            "herdwatch.cache.Settings.stale_while_revalidate / max_stale",
        ),
    ]


def _pool(f: Finding) -> list[Recommendation]:
    ev = f.evidence
    mx = _num(ev, "connections", "max")
    base = _num(ev, "connections", "baseline")
    climb = _num(ev, "connections", "climb_seconds", default=1.0)
    rej = int(_num(ev, "rejections", default=0.0))
    pool_size = max(math.ceil(base * 2), 5) if math.isfinite(base) else 10
    max_txt = f"{mx:g}" if math.isfinite(mx) else "max_connections"
    return [
        Recommendation(
            "Put a pooler with a queue in front of the database",
            f"The pool went to {max_txt} in {climb:g}s; {rej} connection(s) were refused. A "
            f"transaction pooler queues excess clients instead of refusing them: pool_size "
            f"~{pool_size} (2x the normal {base:g} in use) and a bounded wait.",
            f"[pgbouncer]\npool_mode = transaction\ndefault_pool_size = {pool_size}\n"
            f"max_client_conn = {max(pool_size * 20, 200)}\nquery_wait_timeout = 5",
            "pgbouncer default_pool_size / query_wait_timeout",
        ),
        Recommendation(
            "Bound concurrent loads in the application and shed the rest fast",
            f"Cap concurrent database loads per process below {max_txt} / processes; excess "
            f"callers get Overloaded (503) at once instead of holding a connection slot.",
            f"HerdCache.from_url(url, max_concurrent_loads={max(pool_size // 2, 2)})",
            "herdwatch.cache.Settings.max_concurrent_loads",
        ),
        Recommendation(
            "Reconnect with backoff and full jitter",
            "Clients that retry connecting on a fixed schedule come back as one wave; full "
            "jitter U(0, min(cap, base*2^n)) spreads them (AWS: 0.43x the calls of no jitter).",
            "Backoff(base=0.1, cap=10, mode='full')",
            "herdwatch.cache.Backoff",
        ),
    ]


def _ctx(f: Finding) -> list[Recommendation]:
    factor = _num(f.evidence, "context_switches_per_second", "factor", default=3.0)
    return [
        Recommendation(
            "Stop waking every waiter for one event",
            f"Context switches rose x{factor:.3g}: many threads woke for the same thing. Collapse "
            f"identical requests (one leader, the rest wait on its result) and cap worker "
            f"concurrency near the core count.",
            "SingleFlight().do(key, fn)",
            "herdwatch.cache.SingleFlight",
        ),
        Recommendation(
            "Bound concurrency and shed load",
            "Limit concurrent loads and refuse the excess quickly rather than queueing threads "
            "that thrash the scheduler.",
            "HerdCache.from_url(url, max_concurrent_loads=8)",
            "herdwatch.cache.Settings.max_concurrent_loads",
        ),
    ]


def _locks(f: Finding) -> list[Recommendation]:
    n = int(_num(f.evidence, "errors", default=0.0))
    span = _num(f.evidence, "span_seconds", default=1.0)
    return [
        Recommendation(
            "Serialize writers of the hot row before they reach the database",
            f"{n} lock waits timed out within {span:g}s: many transactions queued on one lock. "
            f"Collapse identical writes (one leader per key) or take an advisory lock with "
            f"SKIP LOCKED / NOWAIT and return fast.",
            "SELECT ... FOR UPDATE SKIP LOCKED",
            "herdwatch.cache.SingleFlight",
        ),
        Recommendation(
            "Retry lock timeouts with decorrelated jitter, within a retry budget",
            "Immediate retries re-form the same queue; decorrelated jitter "
            "min(cap, U(base, prev*3)) breaks the lockstep, and a budget stops amplification.",
            "Backoff(base=0.05, cap=5, mode='decorrelated'); RetryBudget(ratio=0.1)",
            "herdwatch.cache.Backoff / RetryBudget",
        ),
        Recommendation(
            "Keep lock_timeout short and transactions small",
            "A short lock_timeout fails fast instead of stacking waiters; check what held the lock "
            "at the onset (pg_locks where not granted).",
            "SET lock_timeout = '2s';",
            "postgresql lock_timeout",
        ),
    ]


def _retry(f: Finding) -> list[Recommendation]:
    ev = f.evidence
    base = _num(ev, "requests_per_second", "baseline", default=1.0)
    outage = max(_num(ev, "outage", "seconds", default=10.0), 1.0)
    cap = _nice(max(outage, 10.0))
    return [
        Recommendation(
            "Back off with full jitter, capped near the outage length",
            f"Retries came back as one wave after a {outage:g}s outage. Full jitter "
            f"U(0, min(cap, base*2^n)) with cap ~{cap}s spreads them over the cap.",
            f"HerdCache.from_url(url, retries=3, backoff_mode='full', backoff_base=0.1, "
            f"backoff_cap={cap})",
            "herdwatch.cache.Backoff",
        ),
        Recommendation(
            "Add a retry budget",
            f"Allow retries up to ~10% of the healthy rate ({base:.3g}/s): at most "
            f"{max(base * 0.1, 1):.3g} retries/s, so a recovery never sees a multiple of its load.",
            "HerdCache.from_url(url, retry_budget_ratio=0.1)  # or RetryBudget(ratio=0.1)",
            "herdwatch.cache.RetryBudget",
        ),
        Recommendation(
            "Open a circuit breaker during the outage and probe in half-open",
            "Callers fail fast (or get stale data) while the upstream is down, and only a few "
            "probes go through on recovery.",
            f"HerdCache.from_url(url, breaker_failures=5, breaker_reset={cap})",
            "herdwatch.cache.CircuitBreaker",
        ),
        Recommendation(
            "Rate-limit the upstream's clients at its healthy capacity",
            f"A token bucket at about {base * 1.5:.3g}/s (1.5x healthy) answers 429 to the excess.",
            f"HerdCache.from_url(url, load_rate={base * 1.5:.3g}, "
            f"load_burst={max(int(base * 1.5), 1)})",
            "herdwatch.cache.TokenBucket",
        ),
    ]


def _cron(f: Finding) -> list[Recommendation]:
    period = _num(f.evidence, "period_seconds", default=3600.0)
    spike = max(_num(f.evidence, "spike_seconds", default=60.0), 1.0)
    splay = _nice(min(max(20 * spike, 60.0), period / 2))
    return [
        Recommendation(
            "Splay the scheduled job across the period",
            f"Spikes recur every {period:g}s on the boundary and last ~{spike:g}s. A random delay "
            f"up to {splay}s spreads the fleet (systemd RandomizedDelaySec, or a sleep of a "
            f"host-hashed offset in cron).",
            f"[Timer]\nRandomizedDelaySec={splay}\nFixedRandomDelay=true",
            "systemd RandomizedDelaySec",
        ),
        Recommendation(
            "Jitter token and cache lifetimes that line up with the clock",
            "Lifetimes that start at the top of the hour end together too: add per-key jitter.",
            f"HerdCache.from_url(url, ttl=TTL, ttl_jitter={splay})",
            "herdwatch.cache.Settings.ttl_jitter",
        ),
    ]


def _ttl_cliff(f: Finding) -> list[Recommendation]:
    ev = f.evidence
    rng = max(_num(ev, "ttl_range_seconds", default=3600.0), 1.0)
    widest = _num(ev, "max_window_seconds", default=0.01 * rng)
    share = _num(ev, "min_share", default=0.2)
    keys = int(_num(ev, "keys_expiring_estimate", default=_num(ev, "count", default=0.0)))
    seconds = max(_num(ev, "window", "seconds", default=1.0), 0.001)
    # Spread over J, no window of the widest tested width holds min_share of the keys: J >=
    # widest / min_share; twice that, and at least 10 % of the TTL (the usual advice).
    jitter = _nice(max(0.1 * rng, 2 * widest / share if share > 0 else 0.1 * rng, 1.0))
    pats = ev.get("patterns") if isinstance(ev.get("patterns"), list) else []
    pattern = str(pats[0].get("pattern", "*")) if pats and isinstance(pats[0], dict) else "*"
    rate = keys / jitter
    return [
        Recommendation(
            "Re-spread the TTLs of the keys in the cliff now, before the window",
            f"About {keys} keys ({pattern} first) expire within {seconds:.3g}s. Add a per-key "
            f"offset in [0, {jitter}s) to each one's remaining TTL (PEXPIRE key PTTL+offset, a "
            f"pipeline per SCAN batch): about {rate:.3g} expiries/s instead of one wave.",
            f"redis-cli --scan --pattern '{pattern}' | while read -r k; do "
            f'redis-cli PEXPIRE "$k" $(( $(redis-cli PTTL "$k") + RANDOM * {jitter} * 1000 '
            f"/ 32768 )) >/dev/null; done",
            "Redis PEXPIRE (TTL re-spread)",
        ),
        Recommendation(
            "Add TTL jitter where these keys are written, so they never line up again",
            f"Keys written together (a warm-up, a restart, a bulk load) with one TTL expire "
            f"together. Expire each over [ttl, ttl + {jitter}s); a hash of the key as the "
            f"offset keeps every node in agreement.",
            f"HerdCache.from_url(url, ttl=TTL, ttl_jitter={jitter}, jitter_mode='hash')",
            "herdwatch.cache.Settings.ttl_jitter",
        ),
        Recommendation(
            "Refresh early and serve stale while one caller reloads",
            "If the wave comes anyway, XFetch refreshes hot keys before they expire and "
            "stale-while-revalidate answers readers from the old value for up to 60s while "
            "one caller reloads it.",
            "HerdCache.from_url(url, ttl=TTL, xfetch=True, beta=1.0, stale_while_revalidate=60)",
            "herdwatch.cache.Settings.xfetch / stale_while_revalidate",
        ),
    ]


_BY_SIGNATURE: dict[str, Callable[[Finding], list[Recommendation]]] = {
    "cache_stampede": _stampede,
    "pool_exhaustion": _pool,
    "ctx_switch_burst": _ctx,
    "lock_timeout_cluster": _locks,
    "retry_storm": _retry,
    "cron_herd": _cron,
    "ttl_cliff": _ttl_cliff,
}


def recommend(f: Finding) -> tuple[Recommendation, ...]:
    """The ranked recommendations for a finding (most effective first)."""
    make = _BY_SIGNATURE.get(f.signature)
    return tuple(make(f)) if make else ()
