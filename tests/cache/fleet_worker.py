"""One process of a fleet: N concurrent callers of one key through HerdCache (run as a script).

Protocol on stdout, one JSON object per line: ``ready`` once connected, then (after the parent
pushes to ``<ns>:go``) ``started``, ``loading`` if this process's loader runs, and ``done``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import psycopg
import redis.asyncio

from herdwatch.cache import HerdCache


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


async def main(cfg: dict[str, Any]) -> None:
    cache = HerdCache.from_url(
        cfg["redis"],
        namespace=cfg["ns"],
        registry=None,
        ttl=60,
        lease_ttl=cfg["lease_ttl"],
        poll_interval=cfg["poll"],
    )
    await cache.start()
    control = redis.asyncio.Redis.from_url(cfg["redis"])

    async def load() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(cfg["dsn"], autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO herdcache_loads (k, pid) VALUES (%s, %s)", (cfg["key"], os.getpid())
            )
            say("loading")
            cur = await conn.execute(
                "SELECT v, pg_sleep(%s) FROM herdcache_items WHERE k = %s",
                (cfg["load_sleep"], cfg["key"]),
            )
            row = await cur.fetchone()
        assert row is not None
        return {"v": row[0], "loader": os.getpid()}

    say("ready")
    await control.blpop([f"{cfg['ns']}:go"], timeout=60)
    say("started")
    results = await asyncio.gather(
        *(cache.get_or_load(cfg["key"], load) for _ in range(cfg["callers"])),
        return_exceptions=True,
    )
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    values = sorted(
        {json.dumps(r, sort_keys=True) for r in results if not isinstance(r, BaseException)}
    )
    say("done", values=values, errors=errors[:5], n_errors=len(errors))
    await control.aclose()
    await cache.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
