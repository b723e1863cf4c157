"""Benchmark: herdwatch's whole scan of a 24 h, 1 s capture against promtool's ingest of it.

    .venv/bin/python benchmarks/scan_large.py [--hours 24] [--keep DIR]

Generates (deterministically, vectorized) about 100 series of the standard exporter families
at 1 s resolution into a temporary replay dir (24 h: 8.64 M samples, about 600 MB of
OpenMetrics), then times, each as a child process measured with wait4 (wall time, peak RSS):

* `herdwatch scan --replay DIR --format json` when `herdwatch.cli` is importable, else
  `load_replay(DIR)` alone (the script says which stage it timed);
* `promtool tsdb create-blocks-from openmetrics FILE OUT` when promtool is on PATH.

It prints both times, the ratio and herdwatch's peak RSS. A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

START = 1_764_000_000  # 2025-11-24 16:00 UTC, a round start for readable onsets
STAMPEDE_AT = 12 * 3600 + 17  # seconds after START: a synchronized expiry, 60 s long
RSS_LIMIT_MB = 1536

IntArray = npt.NDArray[np.int64]
Col = npt.NDArray[Any]  # exact integers (int64) or preformatted decimals (bytes)


def _families(n: int, rng: np.random.Generator) -> list[tuple[str, str, list[tuple[str, Col]]]]:
    """(family, type, [(sample key text, values)]) for every family; values are int64 arrays
    (exact integers) or, for `_sum`/cpu seconds, preformatted via millis (see _fmt)."""
    t = np.arange(n)
    day = 1.0 + 0.3 * np.sin(2 * np.pi * t / 86400.0)
    surge = np.zeros(n)
    s0, s1 = min(STAMPEDE_AT, n - 1), min(STAMPEDE_AT + 60, n)
    surge[s0:s1] = 1.0

    def counter(rate: npt.NDArray[np.float64]) -> IntArray:
        return np.cumsum(rng.poisson(rate)).astype(np.int64)

    fams: list[tuple[str, str, list[tuple[str, Col]]]] = []
    hits_rate = 900.0 * day * (1 - 0.8 * surge)
    miss_rate = 50.0 * day + 900.0 * day * 0.8 * surge
    fams.append(
        (
            "redis_keyspace_hits_total",
            "counter",
            [("redis_keyspace_hits_total", counter(hits_rate))],
        )
    )
    fams.append(
        (
            "redis_keyspace_misses_total",
            "counter",
            [("redis_keyspace_misses_total", counter(miss_rate))],
        )
    )
    fams.append(
        (
            "redis_expired_keys_total",
            "counter",
            [("redis_expired_keys_total", counter(5.0 + 400 * surge))],
        )
    )
    fams.append(
        (
            "redis_evicted_keys_total",
            "counter",
            [("redis_evicted_keys_total", counter(0.01 + 0 * day))],
        )
    )
    fams.append(
        (
            "redis_commands_processed_total",
            "counter",
            [("redis_commands_processed_total", counter(1000.0 * day))],
        )
    )
    fams.append(
        ("redis_connected_clients", "gauge", [("redis_connected_clients", rng.integers(40, 44, n))])
    )
    fams.append(
        (
            "redis_memory_used_bytes",
            "gauge",
            [("redis_memory_used_bytes", 2_000_000_000 + np.cumsum(rng.integers(-100, 101, n)))],
        )
    )

    # Histogram: per-second observations spread over buckets; slow during the stampede.
    les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"]
    q = 100.0 * day + 800 * surge
    shares = np.array([0.1, 0.2, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01, 0.005, 0.004, 0.001])
    slow = np.array([0.0, 0.0, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.2, 0.05, 0.05])
    mix = shares[None, :] * (1 - surge[:, None]) + slow[None, :] * surge[:, None]
    per_bucket = rng.poisson(q[:, None] * mix)
    cum = np.cumsum(np.cumsum(per_bucket, axis=1), axis=0).astype(np.int64)
    mids_ms = np.array([3, 8, 18, 40, 80, 180, 400, 800, 1800, 4000, 8000])
    sum_ms = np.cumsum(per_bucket @ mids_ms).astype(np.int64)
    samples: list[tuple[str, Col]] = [
        (f'db_query_duration_seconds_bucket{{le="{le}"}}', cum[:, i]) for i, le in enumerate(les)
    ]
    samples += [
        ("db_query_duration_seconds_count", cum[:, -1]),
        ("db_query_duration_seconds_sum", _milli(sum_ms)),
    ]
    fams.append(("db_query_duration_seconds", "histogram", samples))

    samples = []
    for method in ("GET", "POST"):
        for code, share in (
            ("200", 0.9),
            ("201", 0.03),
            ("301", 0.02),
            ("404", 0.03),
            ("500", 0.01),
            ("503", 0.01),
        ):
            key = f'http_requests_total{{code="{code}",method="{method}"}}'
            samples.append((key, counter(400.0 * share * day * (1.0 if method == "GET" else 0.3))))
    fams.append(("http_requests_total", "counter", samples))

    samples = []
    for db in ("app", "postgres"):
        for state in (
            "active",
            "idle",
            "idle in transaction",
            "idle in transaction (aborted)",
            "fastpath function call",
            "disabled",
        ):
            base = {"active": 8, "idle": 20, "idle in transaction": 2}.get(state, 0)
            val = rng.poisson(base * (1 if db == "app" else 0.1), n).astype(np.int64)
            if db == "app" and state == "active":
                val = val + (70 * surge).astype(np.int64)
            samples.append((f'pg_stat_activity_count{{datname="{db}",state="{state}"}}', val))
    fams.append(("pg_stat_activity_count", "gauge", samples))
    fams.append(
        (
            "pg_settings_max_connections",
            "gauge",
            [("pg_settings_max_connections", np.full(n, 100, np.int64))],
        )
    )
    fams.append(
        (
            "pg_settings_superuser_reserved_connections",
            "gauge",
            [("pg_settings_superuser_reserved_connections", np.full(n, 3, np.int64))],
        )
    )
    samples = []
    for mode in (
        "AccessShareLock",
        "RowShareLock",
        "RowExclusiveLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ):
        samples.append(
            (f'pg_locks_count{{datname="app",mode="{mode}"}}', rng.poisson(3, n).astype(np.int64))
        )
    fams.append(("pg_locks_count", "gauge", samples))
    fams.append(
        (
            "pg_stat_database_deadlocks",
            "counter",
            [
                (f'pg_stat_database_deadlocks{{datname="{d}"}}', counter(0.0001 + 0 * day))
                for d in ("app", "postgres")
            ],
        )
    )
    fams.append(
        (
            "pg_stat_database_xact_rollback",
            "counter",
            [
                (f'pg_stat_database_xact_rollback{{datname="{d}"}}', counter(0.5 * day))
                for d in ("app", "postgres")
            ],
        )
    )

    fams.append(
        (
            "node_context_switches_total",
            "counter",
            [("node_context_switches_total", counter(20000.0 * day + 30000 * surge))],
        )
    )
    samples = []
    for cpu in ("0", "1"):
        for mode, share in (
            ("idle", 600),
            ("iowait", 10),
            ("irq", 1),
            ("nice", 1),
            ("softirq", 5),
            ("steal", 1),
            ("system", 80),
            ("user", 300),
        ):
            samples.append(
                (
                    f'node_cpu_seconds_total{{cpu="{cpu}",mode="{mode}"}}',
                    _centi(counter(share * day)),
                )
            )
    fams.append(("node_cpu_seconds_total", "counter", samples))
    fams.append(("node_load1", "gauge", [("node_load1", _centi(rng.integers(20, 300, n)))]))
    fams.append(("node_load5", "gauge", [("node_load5", _centi(rng.integers(20, 300, n)))]))
    fams.append(("node_load15", "gauge", [("node_load15", _centi(rng.integers(20, 300, n)))]))

    samples = []
    for peer in ("payments", "search", "users"):
        for code in ("200", "500", "503"):
            share = {"200": 0.98, "500": 0.01, "503": 0.01}[code]
            samples.append(
                (
                    f'http_client_requests_total{{code="{code}",peer="{peer}"}}',
                    counter(60.0 * share * day),
                )
            )
    fams.append(("http_client_requests_total", "counter", samples))
    les2 = ["0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"]
    per = rng.poisson(
        60.0 * day[:, None] * np.array([0.2, 0.4, 0.2, 0.1, 0.05, 0.03, 0.01, 0.005, 0.005])
    )
    cum2 = np.cumsum(np.cumsum(per, axis=1), axis=0).astype(np.int64)
    samples = [
        (f'http_client_request_duration_seconds_bucket{{le="{le}"}}', cum2[:, i])
        for i, le in enumerate(les2)
    ]
    samples += [
        ("http_client_request_duration_seconds_count", cum2[:, -1]),
        (
            "http_client_request_duration_seconds_sum",
            _milli(
                np.cumsum(per @ np.array([5, 30, 80, 180, 400, 800, 1800, 4000, 8000])).astype(
                    np.int64
                )
            ),
        ),
    ]
    fams.append(("http_client_request_duration_seconds", "histogram", samples))
    fams.append(("up", "gauge", [('up{job="node"}', np.ones(n, np.int64))]))
    fams.append(("go_goroutines", "gauge", [("go_goroutines", rng.integers(30, 60, n))]))
    return fams


def _fixed(v: IntArray, scale: int, digits: int) -> npt.NDArray[np.bytes_]:
    ip = (v // scale).astype("S20")
    fp = np.strings.zfill((v % scale).astype("S20"), digits)
    return np.strings.add(np.strings.add(ip, b"."), fp)


def _milli(v: IntArray) -> npt.NDArray[np.bytes_]:
    return _fixed(v, 1000, 3)


def _centi(v: IntArray) -> npt.NDArray[np.bytes_]:
    return _fixed(v, 100, 2)


def generate(out: Path, hours: float) -> tuple[int, int]:
    """Write DIR/metrics.om scrape by scrape (every series at each second). Returns
    (series, samples)."""
    n = int(hours * 3600)
    rng = np.random.default_rng(20251124)
    fams = _families(n, rng)
    keys: list[bytes] = []
    cols: list[npt.NDArray[np.bytes_]] = []
    header = []
    for fam, typ, samples in fams:
        header.append(
            f"# HELP {fam} Synthetic {fam} for the herdwatch benchmark.\n# TYPE {fam} {typ}\n"
        )
        for key, vals in samples:
            keys.append(key.encode() + b" ")
            cols.append(vals if vals.dtype.kind == "S" else vals.astype("S20"))
    ts = (START + np.arange(n)).astype("S12")
    with open(out / "metrics.om", "wb") as fh:
        fh.write("".join(header).encode())
        step = 3600
        for a in range(0, n, step):
            b = min(n, a + step)
            tail = np.strings.add(np.strings.add(b" ", ts[a:b]), b"\n")
            rows = [
                np.strings.add(np.strings.add(k, c[a:b]), tail)
                for k, c in zip(keys, cols, strict=True)
            ]
            block = np.stack(rows, axis=1).ravel()
            fh.write(b"".join(block.tolist()))
        fh.write(b"# EOF\n")
    return len(keys), len(keys) * n


def _measure(cmd: list[str]) -> tuple[float, float, float, int, str]:
    """Run `cmd` and wait4 it directly, so the figures are this child's alone:
    (wall s, CPU s (user + sys), peak RSS MB, exit code, stderr tail)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024.0, proc.returncode, err.decode(errors="replace")[-800:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--keep", type=Path, help="write the replay dir here and keep it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="herdwatch-bench-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    replay = tmp / "replay"
    replay.mkdir(exist_ok=True)
    try:
        t0 = time.perf_counter()
        n_series, n_samples = generate(replay, args.hours)
        size = (replay / "metrics.om").stat().st_size
        print(
            f"generated {n_series} series, {n_samples:,} samples, {size / 1e6:.0f} MB "
            f"in {time.perf_counter() - t0:.1f} s -> {replay}"
        )

        print(
            f"load average before timing: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
            "(wall times stretch on a busy machine; CPU times less so)"
        )
        have_cli = importlib.util.find_spec("herdwatch.cli") is not None
        load = (
            "import sys; from pathlib import Path; "
            "from herdwatch.sources.replay import load_replay; "
            "load_replay(Path(sys.argv[1]))"
        )
        if have_cli:
            stage = "herdwatch scan --replay DIR --format json (parse + derive + detect)"
            cmd = [sys.executable, "-m", "herdwatch", "scan", "--replay", str(replay),
                   "--format", "json"]  # fmt: skip
        else:
            stage = "load_replay only (herdwatch.cli not available yet)"
            cmd = [sys.executable, "-c", load, str(replay)]
        hw, hcpu, rss, rc, err = _measure(cmd)
        print(f"herdwatch stage timed: {stage}")
        print(f"herdwatch: {hw:.2f} s wall, {hcpu:.2f} s CPU, peak RSS {rss:.0f} MB, exit {rc}")
        if rc not in (0, 1):
            print(f"herdwatch failed: {err.strip()}")
        if have_cli:
            pw, pcpu, prss, prc, _ = _measure([sys.executable, "-c", load, str(replay)])
            print(
                f"  of which load_replay alone: {pw:.2f} s wall, {pcpu:.2f} s CPU, "
                f"peak RSS {prss:.0f} MB, exit {prc}"
            )

        promtool = shutil.which("promtool")
        if promtool is None:
            print("promtool not on PATH: no comparison")
            return 0 if rc in (0, 1) else 1
        blocks = tmp / "blocks"
        pt, tcpu, trss, trc, terr = _measure(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(replay / "metrics.om"),
             str(blocks)]
        )  # fmt: skip
        print(
            f"promtool tsdb create-blocks-from openmetrics: {pt:.2f} s wall, {tcpu:.2f} s CPU, "
            f"peak RSS {trss:.0f} MB, exit {trc}"
        )
        if trc != 0:
            print(f"promtool failed: {terr.strip()}")
        print(
            f"ratio herdwatch/promtool: {hw / pt:.2f} wall, {hcpu / tcpu:.2f} CPU "
            f"(target <= 1.00); herdwatch peak RSS {rss:.0f} MB (target < {RSS_LIMIT_MB} MB)"
        )
        ok = rc in (0, 1) and hw <= pt and rss < RSS_LIMIT_MB
        print("TARGET MET" if ok else "TARGET MISSED")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
