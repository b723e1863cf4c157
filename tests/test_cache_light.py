"""The cache embeds light: the herdwatch-cache distribution (cache-dist/) installs into a fresh
venv with redis and prometheus-client alone, and `herdwatch.cache` works there against a real
Redis while numpy, scipy and rich cannot even be found."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIST = ROOT / "cache-dist"
HEAVY = ("numpy", "scipy", "rich", "click", "yaml", "psycopg")

# Runs inside the light venv with -I (no cwd, no PYTHONPATH, no user site): the repository's
# herdwatch/ must not leak in. Prints one JSON object the test asserts on.
PROBE = """
import asyncio, importlib.util, json, sys
import herdwatch, herdwatch.cache
from herdwatch.cache import HerdCache, SingleFlight
from prometheus_client import CollectorRegistry

async def main(url):
    flight = SingleFlight()
    calls = 0
    async def load():
        nonlocal calls
        calls += 1
        return {"sku": 42}
    shared = await flight.do("k", load)
    cache = HerdCache.from_url(url, ttl=60, ttl_jitter=5, registry=CollectorRegistry())
    try:
        first = await cache.get_or_load("light:probe", load)
        again = await cache.get_or_load("light:probe", load)
    finally:
        await cache.aclose()
    return shared, first, again, calls

shared, first, again, calls = asyncio.run(main(sys.argv[1]))
print(json.dumps({
    "cache_file": herdwatch.cache.__file__,
    "herdwatch_file": getattr(herdwatch, "__file__", None),
    "found": {m: importlib.util.find_spec(m) is not None for m in sys.argv[2].split(",")},
    "loaded": sorted(m for m in sys.argv[2].split(",") if m in sys.modules),
    "flight": shared, "first": first, "again": again, "calls": calls,
}))
"""


def pip(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """This environment's pip (so the machine's index and pip cache), output captured."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def build_light_wheel(out: Path) -> Path:
    """herdwatch-cache's wheel, built offline by this environment's hatchling."""
    pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(CACHE_DIST))
    (wheel,) = out.glob("herdwatch_cache-*.whl")
    return wheel


def test_the_light_wheel_is_herdwatch_cache_and_nothing_else(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_light_wheel(tmp_path)) as zf:
        names = {n for n in zf.namelist() if ".dist-info/" not in n}
        licenses = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    tracked = subprocess.run(
        ["git", "ls-files", "herdwatch/cache"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "herdwatch/cache/py.typed" in tracked
    # Exactly the tracked files: no herdwatch/__init__.py (it would clash with herdwatch's own).
    assert names == set(tracked)
    assert licenses


@pytest.mark.timeout(240)
def test_the_cache_installs_and_runs_without_the_heavy_dependencies(
    tmp_path: Path,
    redis_server: Any,  # conftest's real Redis; only its .url is used
) -> None:
    wheel = build_light_wheel(tmp_path / "dist")
    env_dir = tmp_path / "light"
    # No pip inside (ensurepip costs seconds); this pip installs into it with --python.
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # The versions this suite already runs, so pip's cache usually serves them; the wheel's own
    # metadata has to bring them in (no --no-deps): that is what is being proved.
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "".join(f"{d}=={importlib.metadata.version(d)}\n" for d in ("redis", "prometheus-client"))
    )
    pip("--python", str(python), "install", "-q", "-c", str(constraints), str(wheel), timeout=180)

    listed = pip("--python", str(python), "list", "--format", "json").stdout
    installed = {d["name"].lower().replace("_", "-") for d in json.loads(listed)}
    assert installed == {"herdwatch-cache", "redis", "prometheus-client"}

    done = subprocess.run(
        [str(python), "-I", "-c", PROBE, redis_server.url, ",".join(HEAVY)],
        cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert Path(probe["cache_file"]).is_relative_to(env_dir)
    assert probe["herdwatch_file"] is None, "alone, herdwatch is a namespace package"
    assert probe["found"] == dict.fromkeys(HEAVY, False)
    assert probe["loaded"] == []
    assert probe["flight"] == probe["first"] == probe["again"] == {"sku": 42}
    assert probe["calls"] == 2, "one SingleFlight call, one cache load; the second get hits"
    site = Path(probe["cache_file"]).parent
    assert (site / "py.typed").is_file()


def test_the_two_distributions_are_released_together() -> None:
    full = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    light = tomllib.loads((CACHE_DIST / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert light["version"] == full["version"]
    assert light["license"] == full["license"] == "Apache-2.0"
    assert (CACHE_DIST / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert any(d.startswith("herdwatch-cache") for d in full["dependencies"])
    # Everything herdwatch.cache imports outside the standard library is the light one's.
    names = {d.split(">")[0].split("=")[0].split("@")[0].strip() for d in light["dependencies"]}
    assert names == {"redis", "prometheus-client"}
