"""herdwatch.cache: a cache-aside client on Redis that cannot stampede.

Standalone: it imports nothing else of herdwatch (no scipy, no rich)::

    from herdwatch.cache import HerdCache, SingleFlight
    cache = HerdCache.from_url("redis://127.0.0.1:6379/0", ttl=3600, ttl_jitter=120)
    value = await cache.get_or_load("user:123", loader)

See docs/cache.md for the guarantees, the settings and the metrics.
"""

from herdwatch.cache._client import HerdCache, make_key
from herdwatch.cache._clock import Clock, FakeClock, SystemClock
from herdwatch.cache._codec import BytesCodec, Codec, JsonCodec
from herdwatch.cache._metrics import CacheMetrics, metrics_for
from herdwatch.cache._policy import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    LoadShedder,
    RetryBudget,
    TokenBucket,
    jittered_ttl,
    key_fraction,
    xfetch_due,
    xfetch_gap,
)
from herdwatch.cache._settings import (
    Settings,
    publish_settings,
    publish_settings_sync,
    settings_channel,
    settings_key,
)
from herdwatch.cache._singleflight import SingleFlight, ThreadSingleFlight
from herdwatch.cache._sync import SyncHerdCache
from herdwatch.cache.errors import (
    CacheError,
    CircuitOpen,
    CodecError,
    LeaseLostError,
    Overloaded,
    RateLimited,
    SettingsError,
)

__all__ = [
    "Backoff",
    "BreakerState",
    "BytesCodec",
    "CacheError",
    "CacheMetrics",
    "CircuitBreaker",
    "CircuitOpen",
    "Clock",
    "Codec",
    "CodecError",
    "FakeClock",
    "HerdCache",
    "JsonCodec",
    "LeaseLostError",
    "LoadShedder",
    "Overloaded",
    "RateLimited",
    "RetryBudget",
    "Settings",
    "SettingsError",
    "SingleFlight",
    "SyncHerdCache",
    "SystemClock",
    "ThreadSingleFlight",
    "TokenBucket",
    "jittered_ttl",
    "key_fraction",
    "make_key",
    "metrics_for",
    "publish_settings",
    "publish_settings_sync",
    "settings_channel",
    "settings_key",
    "xfetch_due",
    "xfetch_gap",
]
