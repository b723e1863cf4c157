"""Leadership through a real Redis lease: one holder; another takes over within one TTL."""

from __future__ import annotations

import asyncio
import time

from herdwatch.config import LeaderConfig
from herdwatch.daemon import Lease
from tests.support.servers import Server


async def test_one_leader_and_a_takeover_within_one_ttl(redis_server: Server) -> None:
    cfg = LeaderConfig(redis=redis_server.url, key=f"hw:test:{time.time_ns()}", ttl=1.0)
    a, b = Lease(cfg), Lease(cfg)
    await a.step()
    await b.step()
    assert a.leader and not b.leader
    await a.step()  # renewal keeps it
    assert a.leader
    # a dies without giving the lease back: b holds it within one TTL
    await a._client.aclose()
    started = time.monotonic()
    while not b.leader:
        await b.step()
        await asyncio.sleep(0.1)
    assert time.monotonic() - started <= cfg.ttl + 0.3
    await b.release()
    assert not b.leader
