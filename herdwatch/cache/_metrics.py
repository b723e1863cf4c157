"""The ``herdcache_*`` Prometheus metrics, registered once per registry."""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

RESULTS: Final = ("hit", "miss", "stale", "shed", "error")
_LOAD_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CacheMetrics:
    """The metrics herdwatch reads; see docs/cache.md for their meaning.

    - ``herdcache_requests_total{result}``: calls by outcome (hit, miss, stale, shed, error)
    - ``herdcache_loads_total``: loader calls (what the database sees)
    - ``herdcache_load_duration_seconds``: loader latency (histogram)
    - ``herdcache_waiters``: callers waiting now for a load they did not start
    - ``herdcache_lease_wait_seconds``: time spent waiting on another process's lease
    - ``herdcache_early_refresh_total``: XFetch / stale-while-revalidate refreshes started
    - ``herdcache_breaker_state{breaker}``: 0 closed, 1 half-open, 2 open (loader, redis)
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "herdcache_requests", "Cache calls by result.", ["result"], registry=registry
        )
        self.loads = Counter("herdcache_loads", "Loader calls.", registry=registry)
        self.load_duration = Histogram(
            "herdcache_load_duration_seconds",
            "Loader latency in seconds.",
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.waiters = Gauge(
            "herdcache_waiters", "Callers waiting for a load they did not start.", registry=registry
        )
        self.lease_wait = Histogram(
            "herdcache_lease_wait_seconds",
            "Seconds spent waiting on another process's lease.",
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.early_refresh = Counter(
            "herdcache_early_refresh",
            "Refreshes started before or just after expiry (XFetch, stale-while-revalidate).",
            registry=registry,
        )
        self.breaker_state = Gauge(
            "herdcache_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["breaker"],
            registry=registry,
        )
        # Bound children: the hit path pays no label lookup.
        self.hit = self.requests.labels("hit")
        self.miss = self.requests.labels("miss")
        self.stale = self.requests.labels("stale")
        self.shed = self.requests.labels("shed")
        self.error = self.requests.labels("error")
        for name in ("loader", "redis"):
            self.breaker_state.labels(name).set(0)


_lock = threading.Lock()
_by_registry: dict[int, tuple[CollectorRegistry, CacheMetrics]] = {}


def metrics_for(registry: CollectorRegistry | None = REGISTRY) -> CacheMetrics:
    """The metrics registered in ``registry`` (created on first use; None: unregistered)."""
    if registry is None:
        return CacheMetrics(None)
    with _lock:
        found = _by_registry.get(id(registry))
        if found is None or found[0] is not registry:
            found = (registry, CacheMetrics(registry))
            _by_registry[id(registry)] = found
        return found[1]
