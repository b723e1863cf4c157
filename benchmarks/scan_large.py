"""Benchmark: herdwatch's whole scan against promtool's ingest, from a bundled incident to 24 h.

    .venv/bin/python benchmarks/scan_large.py [--sizes 30m,6h,24h] [--reps 5] [--keep DIR]

One run measures every size, so machine noise is shared; the load average is printed before and
after. Sizes:

* `30m`: the bundled 30-minute incident (`--fixture`, default stampede_catalog_1s), scanned
  `--reps` times, and promtool's ingest of its metrics (gunzipped) as many times;
* `6h`, `24h` (any `<n>h` or `<n>m`): a synthetic capture of about 100 series of the standard
  exporter families at 1 s (24 h: 8.64 M samples, 543 MB), generated deterministically and
  vectorized, timed `--large-reps` times (default 3). It is written as `herdwatch capture`
  writes (`herdwatch.sources.omwrite`): families in name order, each family's samples
  contiguous, series by series, a histogram's buckets, `_count` and `_sum` together at each
  timestamp. The generator checks itself byte for byte against `write_openmetrics` before
  timing. `--layout` writes another layout for comparison: `time` interleaves every series
  scrape by scrape (what this benchmark wrote before), `series` writes histogram series one by
  one too. promtool 2.42 is about as fast on `family` as on `series` and slowest on `time`.

It measures the tree it belongs to: children run in the repository root, so a copy of the
repository at another commit measures that commit. Each command is a child process measured
with wait4 (wall, user + sys CPU, peak RSS; medians over the repetitions, RSS the maximum):
`herdwatch scan --replay DIR` (`--format json`, and for the bundled incident the default report
too) and `promtool tsdb create-blocks-from openmetrics FILE OUT` (promtool from PATH, a fresh
OUT each time), alternately, so a burst of load hits both. Printed beside the figures, the
targets: a bundled incident scans in under 0.5 s wall; herdwatch's whole scan takes at most
promtool's ingest at 6 h and 24 h; peak RSS under 1.5 GB. A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the omwrite check, too, reads this tree's herdwatch
FIXTURE = REPO / "fixtures" / "incidents" / "stampede_catalog_1s"
START = 1_764_000_000  # 2025-11-24 16:00 UTC, a round start for readable onsets
STAMPEDE_FROM_END = 0.5  # the synchronized expiry (60 s long) sits at half the capture
RSS_LIMIT_MB = 1536
FIXTURE_WALL_LIMIT = 0.5
LAYOUTS = ("family", "series", "time")

IntArray = npt.NDArray[np.int64]
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Col:
    """One synthetic series: exact values as integers `ints / scale` (scale 1, 100 or 1000),
    so that the text is exact and cheap to write."""

    name: str
    labels: Labels
    ints: IntArray
    scale: int = 1


Family = tuple[str, str, list[Col]]  # (family, type, series)


def _lab(**kv: str) -> Labels:
    return tuple(sorted(kv.items()))


def _families(n: int, rng: np.random.Generator, step: int = 1) -> list[Family]:
    """Every synthetic family over n samples `step` seconds apart: redis, postgres, node, HTTP
    server and client, with a diurnal swing and a 60 s cache stampede at half the capture."""
    t = np.arange(n) * step
    day = 1.0 + 0.3 * np.sin(2 * np.pi * t / 86400.0)
    surge = np.zeros(n)
    s0 = int(n * STAMPEDE_FROM_END) + 17 // step
    surge[min(s0, n - 1) : min(s0 + max(1, 60 // step), n)] = 1.0

    def counter(rate: npt.NDArray[np.float64]) -> IntArray:
        return np.cumsum(rng.poisson(rate * step)).astype(np.int64)

    def one(name: str, typ: str, ints: IntArray, scale: int = 1) -> Family:
        return (name, typ, [Col(name, (), ints, scale)])

    fams: list[Family] = [
        one("redis_keyspace_hits_total", "counter", counter(900.0 * day * (1 - 0.8 * surge))),
        one("redis_keyspace_misses_total", "counter", counter(50.0 * day + 720.0 * day * surge)),
        one("redis_expired_keys_total", "counter", counter(5.0 + 400 * surge)),
        one("redis_evicted_keys_total", "counter", counter(0.01 + 0 * day)),
        one("redis_commands_processed_total", "counter", counter(1000.0 * day)),
        one("redis_connected_clients", "gauge", rng.integers(40, 44, n)),
        one(
            "redis_memory_used_bytes",
            "gauge",
            2_000_000_000 + np.cumsum(rng.integers(-100, 101, n)),
        ),
    ]
    # Histograms: per-second observations spread over buckets; slow during the stampede.
    shares = [0.1, 0.2, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01, 0.005, 0.004, 0.001]
    slow = [0.0, 0.0, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.2, 0.05, 0.05]
    mix = np.outer(1 - surge, shares) + np.outer(surge, slow)
    fams.append(
        _histogram(
            "db_query_duration_seconds",
            ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"],
            rng.poisson(step * (100.0 * day + 800 * surge)[:, None] * mix),
            [3, 8, 18, 40, 80, 180, 400, 800, 1800, 4000, 8000],
        )
    )
    shares2 = [0.2, 0.4, 0.2, 0.1, 0.05, 0.03, 0.01, 0.005, 0.005]
    fams.append(
        _histogram(
            "http_client_request_duration_seconds",
            ["0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"],
            rng.poisson(step * 60.0 * day[:, None] * np.array(shares2)),
            [5, 30, 80, 180, 400, 800, 1800, 4000, 8000],
        )
    )

    codes = (("200", 0.9), ("201", 0.03), ("301", 0.02), ("404", 0.03), ("500", 0.01),
             ("503", 0.01))  # fmt: skip
    http = [
        Col("http_requests_total", _lab(code=c, method=m),
            counter(400.0 * share * day * (1.0 if m == "GET" else 0.3)))
        for m in ("GET", "POST") for c, share in codes
    ]  # fmt: skip
    fams.append(("http_requests_total", "counter", http))
    client = [
        Col("http_client_requests_total", _lab(code=c, peer=p), counter(60.0 * share * day))
        for p in ("payments", "search", "users")
        for c, share in (("200", 0.98), ("500", 0.01), ("503", 0.01))
    ]
    fams.append(("http_client_requests_total", "counter", client))

    states = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
              "fastpath function call", "disabled")  # fmt: skip
    activity = []
    for db in ("app", "postgres"):
        for state in states:
            base = {"active": 8, "idle": 20, "idle in transaction": 2}.get(state, 0)
            val = rng.poisson(base * (1 if db == "app" else 0.1), n).astype(np.int64)
            if db == "app" and state == "active":
                val = val + (70 * surge).astype(np.int64)
            activity.append(Col("pg_stat_activity_count", _lab(datname=db, state=state), val))
    fams.append(("pg_stat_activity_count", "gauge", activity))
    fams.append(one("pg_settings_max_connections", "gauge", np.full(n, 100, np.int64)))
    fams.append(one("pg_settings_superuser_reserved_connections", "gauge", np.full(n, 3, np.int64)))
    modes = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
             "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock",
             "AccessExclusiveLock")  # fmt: skip
    locks = [
        Col("pg_locks_count", _lab(datname="app", mode=m), rng.poisson(3, n).astype(np.int64))
        for m in modes
    ]
    fams.append(("pg_locks_count", "gauge", locks))
    for fam, rate in (
        ("pg_stat_database_deadlocks", 0.0001),
        ("pg_stat_database_xact_rollback", 0.5),
    ):
        cols = [Col(fam, _lab(datname=d), counter(rate * day)) for d in ("app", "postgres")]
        fams.append((fam, "counter", cols))

    fams.append(
        one("node_context_switches_total", "counter", counter(20000.0 * day + 30000 * surge))
    )
    cpu_modes = (("idle", 600), ("iowait", 10), ("irq", 1), ("nice", 1), ("softirq", 5),
                 ("steal", 1), ("system", 80), ("user", 300))  # fmt: skip
    cpus = [
        Col("node_cpu_seconds_total", _lab(cpu=c, mode=m), counter(share * day), 100)
        for c in ("0", "1") for m, share in cpu_modes
    ]  # fmt: skip
    fams.append(("node_cpu_seconds_total", "counter", cpus))
    for load in ("node_load1", "node_load5", "node_load15"):
        fams.append(one(load, "gauge", rng.integers(20, 300, n), 100))
    fams.append(("up", "gauge", [Col("up", _lab(job="node"), np.ones(n, np.int64))]))
    fams.append(one("go_goroutines", "gauge", rng.integers(30, 60, n)))
    return fams


def _histogram(family: str, les: list[str], per_bucket: IntArray, mids_ms: list[int]) -> Family:
    """A cumulative histogram family from per-second, per-bucket observation counts."""
    cum = np.cumsum(np.cumsum(per_bucket, axis=1), axis=0).astype(np.int64)
    cols = [Col(family + "_bucket", _lab(le=le), cum[:, i]) for i, le in enumerate(les)]
    cols.append(Col(family + "_count", (), cum[:, -1]))
    sum_ms = np.cumsum(per_bucket @ np.array(mids_ms)).astype(np.int64)
    cols.append(Col(family + "_sum", (), sum_ms, 1000))
    return (family, "histogram", cols)


def _text(col: Col) -> npt.NDArray[np.bytes_]:
    """Values as OpenMetrics text, the way omwrite.format_value writes them (`12.5`, `7`)."""
    if col.scale == 1:
        return col.ints.astype("S20")
    digits = len(str(col.scale)) - 1
    ip = (col.ints // col.scale).astype("S20")
    fp = np.strings.zfill((col.ints % col.scale).astype("S20"), digits)
    fixed = np.strings.add(np.strings.add(ip, b"."), fp)
    return np.strings.rstrip(np.strings.rstrip(fixed, b"0"), b".")


def _le(col: Col) -> float:
    return float(dict(col.labels).get("le", "inf"))


def _blocks(fams: list[Family], layout: str) -> Iterator[tuple[str, list[Col]]]:
    """(header text, series written together timestamp by timestamp) in file order.

    `family` is omwrite's order: families sorted by (name, type); a plain family's series
    sorted by (name, labels), one after the other; a histogram's buckets (by `le`), `_count`
    and `_sum` interleaved per timestamp. `series` writes histogram series one by one too;
    `time` puts every `# TYPE` first and interleaves all series."""
    ordered = sorted(fams, key=lambda f: (f[0], f[1]))
    if layout == "time":
        header = "".join(f"# TYPE {fam} {typ}\n" for fam, typ, _ in ordered)
        yield header, [c for fam, typ, cols in ordered for c in _in_family_order(typ, cols)]
        return
    for fam, typ, cols in ordered:
        header = f"# TYPE {fam} {typ}\n"
        cols = _in_family_order(typ, cols)
        if typ == "histogram" and layout == "family":
            # a label group's buckets, _count and _sum together (one group per instance)
            groups: dict[Labels, list[Col]] = {}
            for c in cols:
                groups.setdefault(tuple(kv for kv in c.labels if kv[0] != "le"), []).append(c)
            for i, (_, group) in enumerate(sorted(groups.items())):
                yield (header if i == 0 else ""), group
            continue
        for i, col in enumerate(cols):
            yield (header if i == 0 else ""), [col]


def _in_family_order(typ: str, cols: list[Col]) -> list[Col]:
    if typ != "histogram":
        return sorted(cols, key=lambda c: (c.name, c.labels))
    buckets = sorted((c for c in cols if c.name.endswith("_bucket")), key=_le)
    return (
        buckets
        + [c for c in cols if c.name.endswith("_count")]
        + [c for c in cols if c.name.endswith("_sum")]
    )


def write_capture(
    path: Path, fams: list[Family], n: int, layout: str = "family", step: int = 1
) -> None:
    """Write the families over n samples `step` seconds apart from START as one OpenMetrics
    file."""
    from herdwatch.sources.omwrite import format_labels

    ts = (START + step * np.arange(n)).astype("S12")
    rows_per_write = 3600  # bounds the memory of the text being joined
    with open(path, "wb") as fh:
        for header, cols in _blocks(fams, layout):
            fh.write(header.encode())
            keys = [(c.name + format_labels(c.labels) + " ").encode() for c in cols]
            texts = [_text(c) for c in cols]
            for a in range(0, n, rows_per_write):
                b = a + rows_per_write
                tail = np.strings.add(np.strings.add(b" ", ts[a:b]), b"\n")
                rows = [
                    np.strings.add(np.strings.add(k, v[a:b]), tail)
                    for k, v in zip(keys, texts, strict=True)
                ]
                fh.write(b"".join(np.stack(rows, axis=1).ravel().tolist()))
        fh.write(b"# EOF\n")


def generate(out: Path, hours: float, layout: str = "family") -> tuple[int, int]:
    """Write OUT/metrics.om (hours at 1 s). Returns (series, samples)."""
    n = round(hours * 3600)
    fams = _families(n, np.random.default_rng(20251124))
    write_capture(out / "metrics.om", fams, n, layout)
    n_series = sum(len(cols) for _, _, cols in fams)
    return n_series, n_series * n


def check_writer(tmp: Path, seconds: int = 300) -> None:
    """Raise unless the `family` layout is byte for byte what omwrite.write_openmetrics writes
    for the same series (the layout `herdwatch capture` produces)."""
    from herdwatch.model import Series
    from herdwatch.sources.omwrite import write_openmetrics

    fams = _families(seconds, np.random.default_rng(7))
    ours, theirs = tmp / "ours.om", tmp / "omwrite.om"
    write_capture(ours, fams, seconds, "family")
    stamps = (START + np.arange(seconds)).astype(np.float64)
    series = [
        Series(c.name, c.labels, stamps, c.ints / c.scale, family=fam, type=typ)
        for fam, typ, cols in fams
        for c in cols
    ]
    write_openmetrics(series, theirs)
    if ours.read_bytes() != theirs.read_bytes():
        raise SystemExit(f"generator layout differs from omwrite: diff {ours} {theirs}")
    ours.unlink()
    theirs.unlink()


@dataclass(frozen=True)
class Run:
    """One child process: wall and CPU (user + sys) seconds, peak RSS in MB, exit code."""

    wall: float
    cpu: float
    rss_mb: float
    code: int
    stdout: bytes
    stderr: str


def measure(cmd: list[str], scratch: Path) -> Run:
    """Run `cmd` and wait4 it directly, so the figures are this child's alone (stdout and
    stderr go to files: no pipe can fill and stall it)."""
    out, err = scratch / "stdout", scratch / "stderr"
    with out.open("wb") as fo, err.open("wb") as fe:
        t0 = time.perf_counter()
        # cwd REPO: `python -m herdwatch` imports the tree this script belongs to
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    return Run(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024.0,
        code,
        out.read_bytes(),
        err.read_text(errors="replace")[-800:],
    )


@dataclass(frozen=True)
class Row:
    """Figures for one size and report format: medians over the repetitions, RSS the maximum."""

    size: str
    fmt: str
    samples: int
    mb: float
    hw: list[Run]
    pt: list[Run]

    @property
    def findings(self) -> str:
        """The signatures found (from the JSON report), or why there are none to read."""
        if self.fmt != "json":
            return "(see the JSON row)"
        run = self.hw[0]
        try:
            doc = json.loads(run.stdout)
        except ValueError:
            return f"exit {run.code}: {run.stderr.strip()[-200:]}"
        sigs = sorted({f.get("signature", "?") for f in doc.get("findings", [])})
        return ",".join(sigs) or "none"


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def bench_size(size: str, tmp: Path, args: argparse.Namespace, promtool: str | None) -> list[Row]:
    """Prepare the replay dir for `size`, then time herdwatch's scan and promtool's ingest,
    alternately (a burst of load hits both alike). The bundled incident is scanned with the
    JSON contract and with the default report (the one a person reads); a synthetic size with
    JSON only."""
    work = tmp / size
    replay = work / "replay"
    replay.mkdir(parents=True, exist_ok=True)
    if size == "30m":
        om = work / "metrics.om"  # promtool reads plain text only
        with gzip.open(args.fixture / "metrics.om.gz", "rb") as src, om.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        replay = args.fixture
        samples = sum(1 for line in om.read_bytes().splitlines() if line[:1] not in (b"#", b""))
        reps, fmts = args.reps, ("json", "report")
    else:
        t0 = time.perf_counter()
        _, samples = generate(replay, _hours(size), args.layout)
        om = replay / "metrics.om"
        print(f"  {size}: generated {samples:,} samples in {time.perf_counter() - t0:.1f} s")
        reps, fmts = args.large_reps, ("json",)
    hw: dict[str, list[Run]] = {f: [] for f in fmts}
    pt: list[Run] = []
    for i in range(reps):
        for f in fmts:
            fmt = ["--format", "json"] if f == "json" else []
            hw[f].append(measure([sys.executable, "-m", "herdwatch", "scan", "--replay",
                                  str(replay), *fmt], work))  # fmt: skip
        if promtool is not None and not args.no_promtool:
            out = work / f"blocks{i}"
            pt.append(measure([promtool, "tsdb", "create-blocks-from", "openmetrics",
                               str(om), str(out)], work))  # fmt: skip
            shutil.rmtree(out, ignore_errors=True)
    for what, r in [
        *(("herdwatch", r) for f in fmts for r in hw[f]),
        *(("promtool", r) for r in pt),
    ]:
        if r.code not in ((0,) if what == "promtool" else (0, 1)):
            print(f"  {size}: {what} exit {r.code}: {r.stderr.strip()}")
            break
    mb = om.stat().st_size / 1e6
    return [Row(size, f, samples, mb, hw[f], pt) for f in fmts]


def _hours(size: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([hm])", size)
    if m is None:
        raise SystemExit(f"size {size!r}: expected 30m (the bundled incident) or <n>h / <n>m")
    return float(m.group(1)) / (1 if m.group(2) == "h" else 60)


def _print_table(rows: list[Row]) -> bool:
    """Print the side-by-side table; True when every target is met."""
    head = (f"{'size':>5} {'report':>6} {'samples':>11} {'MB':>6} {'reps':>4} | "
            f"{'herdwatch wall':>14} {'CPU':>6} {'peak RSS':>9} | "
            f"{'promtool wall':>13} {'CPU':>6} {'RSS':>7} | "
            f"{'wall ratio':>10} {'CPU ratio':>9} | target")  # fmt: skip
    print(head)
    print("-" * len(head))
    ok_all = True
    for r in rows:
        hw_wall, hw_cpu = _median(r.hw, "wall"), _median(r.hw, "cpu")
        rss = max(x.rss_mb for x in r.hw)
        ok_run = all(x.code in (0, 1) for x in r.hw)
        if r.pt:
            pt_wall, pt_cpu = _median(r.pt, "wall"), _median(r.pt, "cpu")
            pt_rss = max(x.rss_mb for x in r.pt)
            pt_txt = f"{pt_wall:>12.2f}s {pt_cpu:>5.2f}s {pt_rss:>5.0f}MB"
            ratio = f"{hw_wall / pt_wall:>10.2f} {hw_cpu / pt_cpu:>9.2f}"
        else:
            pt_txt, ratio = f"{'-':>13} {'-':>6} {'-':>7}", f"{'-':>10} {'-':>9}"
        if r.size == "30m":
            ok = hw_wall < FIXTURE_WALL_LIMIT
            target = f"wall < {FIXTURE_WALL_LIMIT} s"
        else:
            ok = bool(r.pt) and hw_wall <= _median(r.pt, "wall")
            target = "wall <= promtool"
        ok = ok and rss < RSS_LIMIT_MB and ok_run
        ok_all = ok_all and ok
        print(
            f"{r.size:>5} {r.fmt:>6} {r.samples:>11,} {r.mb:>6.0f} {len(r.hw):>4} | "
            f"{hw_wall:>13.2f}s {hw_cpu:>5.2f}s {rss:>7.0f}MB | {pt_txt} | {ratio} | {target}, "
            f"RSS < {RSS_LIMIT_MB} MB: {'met' if ok else 'MISSED'}"
        )
    for r in rows:
        walls = " ".join(f"{x.wall:.2f}" for x in r.hw)
        print(f"{r.size:>5} {r.fmt:>6}: herdwatch walls {walls}; findings {r.findings}")
    return ok_all


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        default="30m,6h,24h",
        help="comma-separated: 30m (the bundled incident), <n>h or <n>m (synthetic)",
    )
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the bundled incident")
    ap.add_argument("--large-reps", type=int, default=3, help="repetitions of a synthetic size")
    ap.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="family",
        help="synthetic capture layout (family: as herdwatch capture writes)",
    )
    ap.add_argument("--fixture", type=Path, default=FIXTURE, help="the bundled incident dir")
    ap.add_argument("--no-promtool", action="store_true", help="time herdwatch alone")
    ap.add_argument("--keep", type=Path, help="write the captures here and keep them")
    args = ap.parse_args()  # fmt: skip
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s != "30m":
            _hours(s)
    tmp = Path(tempfile.mkdtemp(prefix="herdwatch-bench-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        check_writer(tmp)
        promtool = shutil.which("promtool")
        print(f"layout {args.layout} (family = omwrite's, checked byte for byte); "
              f"promtool {promtool or 'not on PATH: no comparison'}")  # fmt: skip
        print(f"load average before: {_load()}")
        rows = [row for s in sizes for row in bench_size(s, tmp, args, promtool)]
        print(f"load average after:  {_load()} (wall stretches on a busy machine, CPU less)")
        ok = _print_table(rows)
        print("ALL TARGETS MET" if ok else "TARGETS MISSED")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
