"""mitigate ttl-spread against a real Redis: dry run, apply, idempotence, undo, allow-list."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from herdwatch.mitigate.ttl_spread import KeyExpiry, plan_spread
from tests.support.servers import Server

N = 2000


def hw(*args: str, cwd: Path, env_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"HERDWATCH_STATE_DIR": str(env_dir), "PATH": "/usr/bin:/bin", "HOME": str(env_dir)}
    return subprocess.run(
        [sys.executable, "-m", "herdwatch", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def keys(redis_server: Server) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    r.eval(f"for i=0,{N - 1} do redis.call('SET','product:'..i,'v','EX',1800) end", 0)
    r.set("session:1", "v", ex=1800)
    yield r
    r.flushdb()
    r.close()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text('mitigations: {allow: ["product:*"]}\n')
    return path


def expiries(r: redis.Redis, pattern: str = "product:*") -> dict[bytes, int]:
    return {k: int(r.execute_command("PEXPIRETIME", k)) for k in r.scan_iter(pattern, count=1000)}


def test_plan_is_forward_only_and_idempotent() -> None:
    entries = [KeyExpiry(f"k:{i}".encode(), 1_000_000) for i in range(1000)]
    plan = plan_spread(entries, 600_000)
    assert len(plan.moves) == 1000 and len(plan.clusters) == 1
    assert all(1_000_000 <= m.new_ms < 1_600_000 and m.new_ms >= m.old_ms for m in plan.moves)
    again = plan_spread([KeyExpiry(m.key, m.new_ms) for m in plan.moves], 600_000)
    assert again.moves == ()  # spread already: nothing to write


def test_dry_run_apply_undo(
    keys: redis.Redis, redis_server: Server, cfg: Path, tmp_path: Path
) -> None:
    base = ["mitigate", "ttl-spread", "--config", str(cfg), "--redis", redis_server.url,
            "--match", "product:*", "--spread", "600s"]  # fmt: skip
    before = expiries(keys)
    dry = hw(*base, "--format", "json", cwd=tmp_path, env_dir=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["keys_to_move"] == N
    assert expiries(keys) == before  # the dry run changed nothing
    undo = tmp_path / "undo.jsonl"
    done = hw(*base, "--apply", "--undo-file", str(undo), cwd=tmp_path, env_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    after = expiries(keys)
    ttls = sorted(keys.pttl(k) for k in after)
    assert ttls[-1] - ttls[0] > 500_000  # spread over most of 600 s, measured with PTTL
    assert all(after[k] >= before[k] for k in before)  # never earlier
    assert keys.ttl("session:1") <= 1800  # outside the pattern: untouched
    audit = (tmp_path / "audit.log").read_text().splitlines()
    assert json.loads(audit[-1])["written"] == N
    again = hw(*base, "--apply", cwd=tmp_path, env_dir=tmp_path)
    assert again.returncode == 0 and "nothing to write" in again.stdout
    assert expiries(keys) == after  # idempotent
    restored = hw("mitigate", "undo", str(undo), cwd=tmp_path, env_dir=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert expiries(keys) == before


def test_outside_allow_list_is_refused(keys: redis.Redis, redis_server: Server, cfg: Path,
                                       tmp_path: Path) -> None:  # fmt: skip
    before = expiries(keys, "session:*")
    done = hw("mitigate", "ttl-spread", "--config", str(cfg), "--redis", redis_server.url,
              "--match", "session:*", "--spread", "60s", "--apply",
              cwd=tmp_path, env_dir=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("herdwatch: ") and len(done.stderr.splitlines()) == 1
    assert expiries(keys, "session:*") == before


def test_interrupted_apply_is_undone_completely(keys: redis.Redis, redis_server: Server,
                                                cfg: Path, tmp_path: Path) -> None:  # fmt: skip
    before = expiries(keys)
    undo = tmp_path / "undo.jsonl"
    # slow pace: 200 keys per batch, 400 keys/s; killed after about two batches
    proc = subprocess.Popen(
        [sys.executable, "-m", "herdwatch", "mitigate", "ttl-spread", "--config", str(cfg),
         "--redis", redis_server.url, "--match", "product:*", "--spread", "600s", "--apply",
         "--rate", "400", "--undo-file", str(undo)],
        env={"HERDWATCH_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if undo.exists() and len(undo.read_text().splitlines()) > 300:
                break
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait(timeout=10)
    changed = sum(1 for k, v in expiries(keys).items() if v != before[k])
    assert 0 < changed < N  # interrupted midway
    done = hw("mitigate", "undo", str(undo), cwd=tmp_path, env_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert expiries(keys) == before
