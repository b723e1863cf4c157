"""Redis read directly: `INFO` sampled into redis_exporter series, and a bounded key-expiry profile.

The key-expiry profile comes first: it walks the keyspace with `SCAN ... COUNT` (never `KEYS`)
and pipelined `PTTL`, and stops at `sample_keys` keys or `time_budget` seconds, whichever comes
first, so it costs a busy server a few cheap round trips. Then `INFO stats`, `INFO clients` and
`INFO keyspace` are read every `interval` seconds for the window's `duration` (one sample at the
least) and named as redis_exporter names them, with an `instance` label (`host:port`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import redis.asyncio
import redis.exceptions

from herdwatch.config import RedisConfig, redact, resolve_secret
from herdwatch.errors import SourceError
from herdwatch.model import FloatArray, KeyExpirySample, RawData, Series, SourceStatus
from herdwatch.sources.base import CollectWindow

__all__ = ["RedisDirectSource", "key_pattern"]

#: INFO field -> redis_exporter counter sample name
_COUNTERS = {
    "keyspace_hits": "redis_keyspace_hits_total",
    "keyspace_misses": "redis_keyspace_misses_total",
    "total_commands_processed": "redis_commands_processed_total",
    "expired_keys": "redis_expired_keys_total",
    "evicted_keys": "redis_evicted_keys_total",
    "rejected_connections": "redis_rejected_connections_total",
}
#: INFO field -> redis_exporter gauge name
_GAUGES = {
    "connected_clients": "redis_connected_clients",
    "blocked_clients": "redis_blocked_clients",
}
#: INFO keyspace field -> (redis_exporter gauge name, factor to its unit)
_DB_GAUGES = {
    "keys": ("redis_db_keys", 1.0),
    "expires": ("redis_db_keys_expiring", 1.0),
    "avg_ttl": ("redis_db_avg_ttl_seconds", 0.001),  # INFO gives milliseconds
}

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SEPARATORS = re.compile(r"([:/|.#@=,;{}\[\]()\s]+)")
_WORD_SEPARATORS = re.compile(r"([-_]+)")
_HEX = re.compile(r"[0-9a-fA-F]+")
_TOKEN = re.compile(r"[A-Za-z0-9+/=]+")
_MAX_PATTERN = 200
# Redis' `databases` setting has no upper limit of its own; no real server has more.
_MAX_DB = 1 << 31


def _variable(part: str) -> bool:
    """True for a segment that names one instance rather than a kind: a number, a hex id
    (>= 8 hex digits with a digit in it), or a long random-looking token with letters and digits."""
    if not part:
        return False
    if part.isdigit():
        return True
    has_digit = any(c.isdigit() for c in part)
    if len(part) >= 8 and has_digit and _HEX.fullmatch(part):
        return True
    return (
        len(part) >= 16
        and has_digit
        and any(c.isalpha() for c in part)
        and bool(_TOKEN.fullmatch(part))
    )


def key_pattern(key: str) -> str:
    """The key with its variable segments replaced by `*`: numbers, uuids, hex ids and random
    tokens between separators (`user:123:profile` -> `user:*:profile`, `img_42.png` ->
    `img_*.png`)."""
    key = _UUID.sub("*", key)
    out: list[str] = []
    for i, seg in enumerate(_SEPARATORS.split(key)):
        if i % 2 or not seg or seg == "*":
            out.append(seg)
        elif _variable(seg):
            out.append("*")
        else:
            words = _WORD_SEPARATORS.split(seg)
            out.extend("*" if j % 2 == 0 and _variable(w) else w for j, w in enumerate(words))
    pattern = "".join(out)
    return pattern if len(pattern) <= _MAX_PATTERN else pattern[: _MAX_PATTERN - 1] + "*"


def _text(key: bytes | str) -> str:
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key


def _check_db(name: str, url: str) -> None:
    """Refuse a database redis-py would silently read as 0 (`/notanumber`, `?db=x`, `/-1`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise SourceError(name, "not a Redis URL (redis://, rediss:// or unix://)")
    candidates = [unquote(v) for k, v in parse_qsl(parts.query) if k == "db"]
    if parts.scheme != "unix" and parts.path.strip("/"):
        candidates.append(unquote(parts.path.strip("/")))
    for db in candidates:
        if not (db.isascii() and db.isdigit()) or int(db) > _MAX_DB:
            raise SourceError(
                name,
                f"database {redact(db)!r} is not a number from 0 to {_MAX_DB} "
                "(as in redis://host:6379/0)",
            )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)


class RedisDirectSource:
    """A Redis server read directly (see the module docstring). `name` is `redis <url>` with any
    password redacted; driver errors become `SourceError(name, one line)`."""

    def __init__(
        self,
        cfg: RedisConfig,
        *,
        interval: float = 1.0,
        sample_keys: int = 2000,
        scan_count: int = 200,
        time_budget: float = 1.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        if sample_keys < 0 or scan_count < 1:
            raise ValueError("sample_keys must be >= 0 and scan_count >= 1")
        self.cfg = cfg
        self.name = f"redis {redact(cfg.url)}"
        _check_db(self.name, cfg.url)
        self.interval = interval
        self.sample_keys = sample_keys
        self.scan_count = scan_count
        self.time_budget = time_budget
        self.timeout = timeout
        self._clock = clock
        self._password = resolve_secret(
            cfg.password_env, cfg.password_file, key="sources.redis.password", environ=environ
        )

    def _client(self) -> redis.asyncio.Redis:
        kwargs: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }
        if self._password is not None:
            kwargs["password"] = self._password
        try:
            return redis.asyncio.Redis.from_url(self.cfg.url, **kwargs)
        except ValueError as exc:
            raise SourceError(self.name, f"not a Redis URL: {_one_line(exc)}") from None

    async def collect(self, window: CollectWindow) -> RawData:
        """One key-expiry profile, then INFO sampled for `window.duration` seconds; a window of
        two INFO intervals or more ends with a second profile (ttl_cliff tells keys that expire
        together from TTLs re-armed on every access by two samples apart)."""
        client = self._client()
        try:
            # PTTL counts as a keyspace hit (a miss for a key gone meanwhile): profiling before
            # the first INFO and after the last keeps those out of every INFO sample's rate.
            profiles = [await self._expiry_profile(client)]
            series = await self._sample_info(client, window.duration)
            if window.duration >= 2 * self.interval:
                profiles.append(await self._expiry_profile(client))
        except (redis.exceptions.RedisError, OSError) as exc:
            raise SourceError(self.name, _one_line(exc)) from None
        finally:
            await client.aclose()
        return RawData(series=series, sources=[SourceStatus(self.name, True)], key_expiry=profiles)

    def _instance(self, client: redis.asyncio.Redis) -> str:
        kw = client.connection_pool.connection_kwargs
        if "path" in kw:
            return str(kw["path"])
        return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    async def _info(self, client: redis.asyncio.Redis) -> dict[str, Any]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.info("stats")
            pipe.info("clients")
            pipe.info("keyspace")
            stats, clients, keyspace = await pipe.execute()
        return {**stats, **clients, "keyspace": keyspace}

    async def _sample_info(self, client: redis.asyncio.Redis, duration: float) -> list[Series]:
        """INFO at 0, interval, 2 interval, ... <= duration seconds (scheduled, so no drift)."""
        rows: list[tuple[float, dict[str, Any]]] = []
        start = time.monotonic()
        k = 0
        while True:
            info = await self._info(client)
            rows.append((self._clock(), info))
            k += 1
            due = k * self.interval
            if due > duration + 1e-9:
                break
            await asyncio.sleep(max(0.0, start + due - time.monotonic()))
        return self._series(rows, client)

    def _series(
        self, rows: list[tuple[float, dict[str, Any]]], client: redis.asyncio.Redis
    ) -> list[Series]:
        inst = ("instance", self._instance(client))
        ts = np.array([t for t, _ in rows], dtype=np.float64)
        out: list[Series] = []

        def column(values: list[Any]) -> FloatArray:
            return np.array(
                [float(v) if isinstance(v, int | float) else np.nan for v in values],
                dtype=np.float64,
            )

        for field, name in _COUNTERS.items():
            v = column([info.get(field) for _, info in rows])
            out.append(
                Series(name, (inst,), ts, v, family=name.removesuffix("_total"), type="counter")
            )
        for field, name in _GAUGES.items():
            v = column([info.get(field) for _, info in rows])
            out.append(Series(name, (inst,), ts, v, family=name, type="gauge"))
        # a database drops out of INFO keyspace when it empties: it then has 0 keys, not a gap
        dbs = sorted({db for _, info in rows for db in info["keyspace"]})
        selected = f"db{client.connection_pool.connection_kwargs.get('db', 0)}"
        if selected not in dbs:
            dbs.append(selected)
        for db in dbs:
            for field, (name, factor) in _DB_GAUGES.items():
                v = column([info["keyspace"].get(db, {}).get(field, 0) for _, info in rows])
                labels = (("db", db), inst)
                out.append(Series(name, labels, ts, v * factor, family=name, type="gauge"))
        return out

    async def _expiry_profile(self, client: redis.asyncio.Redis) -> KeyExpirySample:
        """TTLs of up to `sample_keys` keys found by SCAN, relative to `taken_at`."""
        deadline = time.monotonic() + self.time_budget
        taken_at = self._clock()
        keys_total = int(await client.dbsize())
        seen: set[bytes | str] = set()
        ttls: list[float] = []
        patterns: list[str] = []
        cursor = 0
        while len(seen) < self.sample_keys:
            cursor, batch = await client.scan(cursor=cursor, count=self.scan_count)
            # SCAN may return a key twice (the table can rehash between calls)
            fresh = [k for k in dict.fromkeys(batch) if k not in seen]
            fresh = fresh[: self.sample_keys - len(seen)]
            if fresh:
                sent = self._clock()
                async with client.pipeline(transaction=False) as pipe:
                    for key in fresh:
                        pipe.pttl(key)
                    replies = await pipe.execute()
                # each PTTL counts from when it ran: shift it to count from taken_at
                shift = (sent + self._clock()) / 2 - taken_at
                for key, ms in zip(fresh, replies, strict=True):
                    seen.add(key)
                    if isinstance(ms, int) and ms > 0:
                        ttls.append(ms / 1000.0 + shift)
                        patterns.append(key_pattern(_text(key)))
            if cursor == 0 or time.monotonic() >= deadline:
                break
        return KeyExpirySample(
            source=self.name,
            taken_at=taken_at,
            keys_total=keys_total,
            sampled=len(seen),
            ttls=np.array(ttls, dtype=np.float64),
            patterns=tuple(patterns),
        )
