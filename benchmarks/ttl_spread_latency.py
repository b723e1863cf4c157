"""Benchmark: Redis latency while `herdwatch mitigate ttl-spread --apply` re-spreads 1 M keys
(issue 12: "Redis latency during apply stays under 5 ms p99 with 1 M keys").

    .venv/bin/python benchmarks/ttl_spread_latency.py [--keys 1000000] [--spread 600s]

Starts a Redis of its own on a free loopback port (tests.support.servers), writes `--keys` keys
`product:N` with one TTL (a cliff), and probes it from this process with a PING every
millisecond on a connection of its own, as an application's request would wait behind the
mitigation. Three phases, one run, side by side:

1. idle: the probe alone for 5 s;
2. apply: `herdwatch mitigate ttl-spread --apply` with its defaults (SCAN + pipelined PTTL of
   every key, then batches of 200 keys paced to 50,000 keys/s), the command as a user runs it;
3. unpaced (the same keys written again with one TTL first): `--batch 10000 --rate 1e9`, what
   the pacing prevents.

For each: the probe's p50 / p99 / max round trip (the Python client's own ~0.05 ms included
in all three), the command's wall time, and afterwards the distinct TTLs of 1,000 sampled keys
(the keys were spread). The server is stopped by pid at the end. A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support lives in the repository, not in the package

from tests.support.servers import start_redis  # noqa: E402

TARGET_P99_MS = 5.0
CHUNK = 100_000


def write_cliff(r: redis.Redis, n: int, ttl: int = 1800) -> None:
    """`n` keys product:0.. with one TTL, in Lua chunks (blocking the server: setup only)."""
    script = "for i=ARGV[1],ARGV[2] do redis.call('SET','product:'..i,'v','EX',ARGV[3]) end"
    for lo in range(0, n, CHUNK):
        r.eval(script, 0, lo, min(lo + CHUNK, n) - 1, ttl)


class Probe:
    """PING every `interval` seconds on its own connection, recording round trips (ms)."""

    def __init__(self, url: str, interval: float = 0.001) -> None:
        self.r = redis.Redis.from_url(url)
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        nxt = time.perf_counter()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            self.r.ping()
            self.samples.append((time.perf_counter() - t0) * 1000)
            nxt += self.interval
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.perf_counter()

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=1000, method="inclusive")[int(q * 10) - 1]


def spread_seen(r: redis.Redis, n: int) -> int:
    keys = [f"product:{i}" for i in range(0, n, max(1, n // 1000))]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.ttl(k)
    return len(set(pipe.execute()))


def apply(url: str, cfg: Path, spread: str, extra: list[str], work: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "herdwatch", "mitigate", "ttl-spread", "--config", str(cfg),
           "--redis", url, "--match", "product:*", "--spread", spread, "--apply",
           "--undo-file", str(work / f"undo{len(extra)}.json"),
           "--audit-log", str(work / "audit.log"), *extra]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"ttl-spread failed ({done.returncode}): {done.stderr.strip()}")
    return time.perf_counter() - t0, done.stdout.strip().splitlines()[-1] if done.stdout else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--spread", default="600s")
    args = ap.parse_args()
    rows: list[tuple[str, list[float], float, int]] = []
    with start_redis() as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = work / "cfg.yaml"
        cfg.write_text('mitigations: {allow: ["product:*"]}\n')
        r = redis.Redis.from_url(server.url)
        for name, extra in (("apply (defaults)", []),
                            ("unpaced (--batch 10000 --rate 1e9)", ["--batch", "10000", "--rate",
                                                                   "1e9"])):  # fmt: skip
            write_cliff(r, args.keys)
            if not rows:
                with Probe(server.url) as idle:
                    time.sleep(5.0)
                rows.append(("idle", idle.samples, 5.0, 1))
            with Probe(server.url) as probe:
                took, _ = apply(server.url, cfg, args.spread, extra, work)
            rows.append((name, probe.samples, took, spread_seen(r, args.keys)))
        r.close()
    print(f"ttl_spread_latency: {args.keys:,} keys, spread {args.spread}, PING every 1 ms")
    print(f"  {'phase':<36} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'wall s':>7} "
          f"{'distinct TTLs in 1000 keys':>27}")  # fmt: skip
    for name, xs, took, distinct in rows:
        print(f"  {name:<36} {pct(xs, 50):7.3f} {pct(xs, 99):7.3f} {max(xs):7.2f} {took:7.1f} "
              f"{distinct:>27}")  # fmt: skip
    p99 = pct(rows[1][1], 99)
    verdict = "met" if p99 < TARGET_P99_MS else "MISSED"
    print(f"  target: p99 < {TARGET_P99_MS} ms during apply: {verdict} ({p99:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
