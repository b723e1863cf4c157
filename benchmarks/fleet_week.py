"""Benchmark: a week of a fleet at 15 s, scanned whole (issue 8, "Speed holds at scale": a 7-day
capture at 15 s of 500 series scans in under 10 s).

    .venv/bin/python benchmarks/fleet_week.py [--days 7] [--step 15] [--instances 5] [--reps 3]

The capture is scan_large.py's synthetic exporter families (redis, postgres, node, HTTP server
and client, diurnal swing, a 60 s stampede at half the capture), once per instance with an
`instance` label (`--instances 5`: 510 series), written as `herdwatch capture` writes them
(families in name order, each family's samples contiguous). Each instance samples with its own
noise. `herdwatch scan --replay DIR --format json` runs `--reps` times as a child process
(wall, user + sys CPU, peak RSS by wait4; medians, RSS the maximum); the findings of the first
run are printed by signature and subject. A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_large import (  # a sibling script, not a package
    Col,
    Family,
    _families,
    _load,
    measure,
    write_capture,
)

WALL_LIMIT = 10.0


def fleet(instances: int, n: int, step: int) -> list[Family]:
    """The synthetic families of `instances` hosts, merged by family."""
    merged: dict[tuple[str, str], list[Col]] = {}
    for i in range(instances):
        rng = np.random.default_rng(20251124 + i)
        inst = ("instance", f"10.0.{i // 250}.{i % 250 + 1}:9100")
        for fam, typ, cols in _families(n, rng, step):
            merged.setdefault((fam, typ), []).extend(
                Col(c.name, tuple(sorted((*c.labels, inst))), c.ints, c.scale) for c in cols
            )
    return [(fam, typ, cols) for (fam, typ), cols in merged.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--step", type=int, default=15, help="seconds between samples")
    ap.add_argument("--instances", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the capture here and keep it")
    args = ap.parse_args()
    n = round(args.days * 86400 / args.step)
    with tempfile.TemporaryDirectory(prefix="herdwatch-week-") as tmp:
        out = args.keep or Path(tmp) / "week"
        out.mkdir(parents=True, exist_ok=True)
        fams = fleet(args.instances, n, args.step)
        series = sum(len(cols) for _, _, cols in fams)
        write_capture(out / "metrics.om", fams, n, "family", args.step)
        del fams
        size_mb = (out / "metrics.om").stat().st_size / 1e6
        print(f"capture: {args.days:g} days at {args.step} s, {args.instances} instances, "
              f"{series} series, {series * n / 1e6:.2f} M samples, {size_mb:.0f} MB")  # fmt: skip
        print(f"load before: {_load()}")
        cmd = [sys.executable, "-m", "herdwatch", "scan", "--replay", str(out), "--format", "json"]
        runs = [measure(cmd, Path(tmp)) for _ in range(args.reps)]
        print(f"load after:  {_load()}")
    bad = [r for r in runs if r.code not in (0, 1)]
    if bad:
        print(f"herdwatch failed (exit {bad[0].code}): {bad[0].stderr}", file=sys.stderr)
        return 1
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    rss = max(r.rss_mb for r in runs)
    found = Counter(
        (f["signature"], ",".join(f"{k}={v}" for k, v in sorted(f.get("subject", {}).items())))
        for f in json.loads(runs[0].stdout)["findings"]
    )
    print(f"herdwatch scan: wall {wall:.2f} s (runs {', '.join(f'{r.wall:.2f}' for r in runs)}), "
          f"CPU {cpu:.2f} s, peak RSS {rss:.0f} MB; target: wall < {WALL_LIMIT:g} s "
          f"({'met' if wall < WALL_LIMIT else 'MISSED'})")  # fmt: skip
    for (sig, subject), k in sorted(found.items()):
        print(f"  {sig} {subject or '(fleet)'}: {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
