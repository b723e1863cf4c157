"""mitigate client against a real Redis: a running HerdCache applies the push and confirms it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import redis.asyncio
from prometheus_client import CollectorRegistry

from herdwatch.cache import HerdCache
from herdwatch.mitigate.client import confirm_applied
from tests.support.servers import Server


async def hw(*args: str, state: Path) -> tuple[int, str, str]:
    env = {"HERDWATCH_STATE_DIR": str(state), "PATH": "/usr/bin:/bin", "HOME": str(state)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herdwatch", *args, env=env, cwd=state,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_settings_reach_a_running_herdcache_and_it_confirms(
    redis_server: Server, tmp_path: Path
) -> None:
    ns = "mitigate-test"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f'mitigations: {{allow: ["client:{ns}"]}}\n')
    r = redis.asyncio.Redis.from_url(redis_server.url)
    await r.delete(f"{ns}:settings", f"{ns}:applied")
    cache = HerdCache.from_url(redis_server.url, namespace=ns, registry=CollectorRegistry())
    await cache.start()
    stop = asyncio.Event()
    confirmer = asyncio.create_task(confirm_applied(cache, r, ns, client_id="test", stop=stop))
    try:
        base = ["mitigate", "client", "--config", str(cfg), "--redis", redis_server.url,
                "--namespace", ns]  # fmt: skip
        rc, _, err = await hw(*base, "--set", "ttl_jitter=-5", "--apply", state=tmp_path)
        assert rc == 2 and err.startswith("herdwatch: ") and "ttl_jitter" in err
        assert await r.get(f"{ns}:settings") is None  # refused before anything was sent
        rc, out, _ = await hw(*base, "--set", "ttl_jitter=120", "--set", "xfetch_beta=1.5",
                              state=tmp_path)  # fmt: skip
        assert rc == 0 and "dry run" in out and cache.settings.ttl_jitter == 0
        undo = tmp_path / "undo.jsonl"
        rc, out, err = await hw(*base, "--set", "ttl_jitter=120", "--set", "xfetch_beta=1.5",
                                "--apply", "--undo-file", str(undo), state=tmp_path)  # fmt: skip
        assert rc == 0, err
        for _ in range(100):
            if cache.settings.ttl_jitter == 120 and cache.settings.beta == 1.5:
                break
            await asyncio.sleep(0.05)
        assert (cache.settings.ttl_jitter, cache.settings.beta) == (120, 1.5)
        for _ in range(100):
            rc, out, _ = await hw(*base, "--status", "--format", "json", state=tmp_path)
            st = json.loads(out)
            if st["clients"] and st["clients"][0]["in_sync"]:
                break
            await asyncio.sleep(0.1)
        assert st["clients"][0]["client"] == "test"
        assert st["clients"][0]["overrides"] == {"beta": 1.5, "ttl_jitter": 120}
        assert json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])["namespace"] == ns
        rc, _, err = await hw("mitigate", "undo", str(undo), state=tmp_path)
        assert rc == 0, err
        for _ in range(100):
            if cache.settings.ttl_jitter == 0:
                break
            await asyncio.sleep(0.05)
        assert (cache.settings.ttl_jitter, cache.settings.beta) == (0, 1.0)
    finally:
        stop.set()
        await confirmer
        await cache.aclose()
        await r.aclose()
