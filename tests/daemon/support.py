"""Run `herdwatch daemon` as a child process and read its outbox and /metrics."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAMPEDE = ROOT / "fixtures" / "incidents" / "real_cache_stampede"


def start_daemon(cfg: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """`herdwatch daemon --config cfg ARGS`, stderr to `log`."""
    cmd = [sys.executable, "-m", "herdwatch", "daemon", "--config", str(cfg), *args]
    with open(log, "ab") as err:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_for(check: Callable[[], object], timeout: float = 60.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def outbox_states(path: Path) -> list[tuple[str, str, str]]:
    """(key, notifier, state) of every row, or [] before the outbox exists."""
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path) as db:
            return list(db.execute("SELECT key, notifier, state FROM outbox ORDER BY seq"))
    except sqlite3.OperationalError:
        return []


def metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if p.poll() is None:
        p.send_signal(sig)
    return p.wait(timeout)
