"""Tunable settings, their validation, and the Redis key/channel that pushes them at runtime."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from herdwatch.cache.errors import SettingsError


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of :class:`HerdCache`; all of them can be pushed at runtime.

    Times are seconds. ``ttl_jitter`` spreads expiries over ``[ttl, ttl + ttl_jitter)``;
    ``beta`` scales XFetch (1 is the paper's default, larger refreshes earlier);
    ``stale_while_revalidate`` serves an expired value while one background refresh runs;
    ``max_stale`` is how long past expiry a value may be served when loads fail;
    ``max_concurrent_loads`` sheds loads beyond it; ``load_rate`` (per second, 0 = off)
    rate-limits loads with a bucket of ``load_burst``.
    """

    ttl: float = 3600.0
    ttl_jitter: float = 0.0
    jitter_mode: str = "uniform"
    xfetch: bool = True
    beta: float = 1.0
    stale_while_revalidate: float = 0.0
    max_stale: float = 0.0
    lease_ttl: float = 10.0
    poll_interval: float = 0.2
    wait_timeout: float = 30.0
    load_timeout: float = 30.0
    max_concurrent_loads: int = 64
    load_rate: float = 0.0
    load_burst: int = 10
    retries: int = 0
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    backoff_mode: str = "full"
    retry_budget_ratio: float = 0.1
    breaker_failures: int = 5
    breaker_reset: float = 5.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field.name, getattr(self, field.name))

    def replace(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with ``changes`` applied; SettingsError names the first bad key."""
        for key in changes:
            if key not in _FIELDS:
                raise SettingsError(key, f"unknown setting (known: {', '.join(sorted(_FIELDS))})")
        coerced = {k: _coerce(k, v) for k, v in changes.items()}
        return dataclasses.replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f.type for f in dataclasses.fields(Settings)}
_POSITIVE = {"ttl", "lease_ttl", "poll_interval", "wait_timeout", "load_timeout", "backoff_cap"}
_NON_NEGATIVE = {
    "ttl_jitter", "stale_while_revalidate", "max_stale", "load_rate", "backoff_base",
    "retry_budget_ratio", "breaker_reset", "retries",
}  # fmt: skip
_AT_LEAST_ONE = {"max_concurrent_loads", "load_burst", "breaker_failures"}
_CHOICES = {
    "jitter_mode": ("uniform", "hash"),
    "backoff_mode": ("full", "equal", "decorrelated"),
}


def _coerce(key: str, value: Any) -> Any:
    kind = _FIELDS[key]
    if kind == "bool":
        if not isinstance(value, bool):
            raise SettingsError(key, f"expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(key, f"expected an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(key, f"expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise SettingsError(key, f"expected a string, got {value!r}")
    return value


def _check(key: str, value: Any) -> None:
    _coerce(key, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(key, f"must be finite, got {value!r}")
    if key in _POSITIVE and value <= 0:
        raise SettingsError(key, f"must be > 0, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise SettingsError(key, f"must be >= 0, got {value!r}")
    if key in _AT_LEAST_ONE and value < 1:
        raise SettingsError(key, f"must be >= 1, got {value!r}")
    if key == "beta" and value <= 0:
        raise SettingsError(key, f"must be > 0, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise SettingsError(key, f"must be one of {', '.join(_CHOICES[key])}, got {value!r}")


def settings_key(namespace: str) -> str:
    """The Redis key holding the pushed settings (a JSON object of overrides)."""
    return f"{namespace}:settings"


def settings_channel(namespace: str) -> str:
    """The pub/sub channel on which pushed settings are announced."""
    return f"{namespace}:settings"


def parse_overrides(data: bytes | str) -> dict[str, Any]:
    """Decode and validate a pushed settings document; SettingsError when it is not valid."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SettingsError("<document>", f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SettingsError("<document>", "must be a JSON object of setting: value")
    Settings().replace(doc)  # raises on the first bad key
    return doc


def _merge(current: bytes | str | None, changes: Mapping[str, Any]) -> str:
    base = parse_overrides(current) if current else {}
    merged = {**base, **changes}
    Settings().replace(merged)
    return json.dumps(merged, sort_keys=True)


async def publish_settings(
    client: redis.asyncio.Redis, namespace: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate ``changes``, merge them into the stored overrides, store and announce them.

    Every HerdCache on ``namespace`` applies them without a restart. Returns the overrides now
    in force; SettingsError (nothing stored) when a key or value is invalid.
    """
    Settings().replace(changes)
    doc = _merge(await client.get(settings_key(namespace)), changes)
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(settings_key(namespace), doc)
        pipe.publish(settings_channel(namespace), doc)
        await pipe.execute()
    return dict(json.loads(doc))


def publish_settings_sync(
    client: redis.Redis, namespace: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """The blocking form of :func:`publish_settings`, for redis-py's sync client."""
    Settings().replace(changes)
    doc = _merge(client.get(settings_key(namespace)), changes)
    with client.pipeline(transaction=True) as pipe:
        pipe.set(settings_key(namespace), doc)
        pipe.publish(settings_channel(namespace), doc)
        pipe.execute()
    return dict(json.loads(doc))
