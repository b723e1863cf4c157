"""Leadership through a Redis lease: of several daemons watching the same sources one notifies.

The lease is the reference client's scheme (herdwatch.cache): `SET key token NX PX ttl` takes
it, a compare-and-PEXPIRE script renews it every ttl/3 only while our token still holds it, a
compare-and-DEL gives it back on a clean exit. A leader that cannot renew (Redis gone, or the
lease taken) steps down before its lease can have expired, so two daemons never notify at once;
a follower takes over within one ttl of the leader's death.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

import redis.asyncio

from herdwatch.config import LeaderConfig, redact, resolve_secret
from herdwatch.daemon._aio import wait_event

__all__ = ["Lease"]

log = logging.getLogger("herdwatch.daemon")

# KEYS: lease. ARGV: token, px. (the reference client's _EXTEND)
_EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
# KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class Lease:
    """Holds (or waits for) the lease described by `cfg`; `leader` says whether we hold it."""

    def __init__(self, cfg: LeaderConfig, *, on_change: Callable[[bool], None] | None = None):
        self.cfg = cfg
        self.token = secrets.token_hex(8)
        self.leader = False
        self._until = 0.0  # monotonic time our lease surely lasts to
        self._on_change = on_change
        password = resolve_secret(cfg.password_env, cfg.password_file, key="daemon.leader.password")
        self._client = redis.asyncio.Redis.from_url(
            cfg.redis,
            password=password,
            socket_timeout=cfg.ttl / 4,
            socket_connect_timeout=cfg.ttl / 4,
        )

    def _set(self, leader: bool) -> None:
        if leader != self.leader:
            self.leader = leader
            log.warning("leadership %s (%s)", "acquired" if leader else "lost", self.cfg.key)
            if self._on_change is not None:
                self._on_change(leader)

    async def step(self) -> None:
        """Take or renew the lease once."""
        px = int(self.cfg.ttl * 1000)
        started = time.monotonic()
        try:
            if self.leader:
                ok = bool(await self._client.eval(_EXTEND, 1, self.cfg.key, self.token, px))
            else:
                ok = bool(await self._client.set(self.cfg.key, self.token, nx=True, px=px))
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("leader lease: %s", redact(f"{type(exc).__name__}: {exc}"))
            ok = False
            if self.leader and time.monotonic() < self._until - self.cfg.ttl / 3:
                return  # keep leading while our lease surely lasts; retry soon
        if ok:
            self._until = started + self.cfg.ttl
        self._set(ok)

    async def run(self, stop: asyncio.Event) -> None:
        """Take or renew every ttl/3 until `stop`, then give the lease back."""
        while not stop.is_set():
            await self.step()
            await wait_event(stop, self.cfg.ttl / 3)
        await self.release()

    async def release(self) -> None:
        try:
            if self.leader:
                await self._client.eval(_RELEASE, 1, self.cfg.key, self.token)
        except (redis.exceptions.RedisError, OSError):
            pass
        self._set(False)
        await self._client.aclose()
