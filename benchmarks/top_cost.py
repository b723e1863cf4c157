"""What `herdwatch top` costs refreshing at 1 s with 200 series: the CPU share of one core.

    python benchmarks/top_cost.py [--series 200] [--window 1800] [--seconds 60] [--interval 1]

The fleet of benchmarks/watch_tick.py (Redis shards, front ends, db latency histograms, node
CPU per host), its timestamps moved so that `--window` seconds are already recorded when top
starts and one more second arrives every second of wall time, as from a live Prometheus. The
real loop runs (herdwatch.tui: the Feed drives Watcher.run on the wall clock, every Snapshot is
drawn by rich's Live on a 100x30 terminal written to /dev/null) for `--seconds`; the process's
CPU time over that wall time, after five warm-up ticks, is the figure (target: under 5 % of a
core). Also printed: the engine's share (poll + tick) and the drawing's (the views and rich),
measured the same way.
`--budget 0` ticks every interval whatever a tick costs (the default budget stretches the
interval between ticks when a tick costs more than that share of a core; the screen says so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from watch_tick import T0, MemorySource, fleet

from herdwatch.engine import Watcher
from herdwatch.engine.snapshot import Snapshot
from herdwatch.model import Series
from herdwatch.rules import load_rules
from herdwatch.tui import Feed, Top
from herdwatch.tui.data import DEFAULT_BUDGET


def live_fleet(n_series: int, window: float, seconds: float) -> list[Series]:
    """`fleet()` shifted so that its first `window` seconds lie just before now."""
    shift = time.time() - window - T0
    return [
        Series(s.name, s.labels, s.timestamps + shift, s.values, s.family, s.type)
        for s in fleet(n_series, window + seconds + 5)
    ]


class _Timed:
    """CPU seconds spent inside the wrapped calls."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.calls = 0

    def wrap(self, fn):  # type: ignore[no-untyped-def]
        async def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            c0 = time.process_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.cpu += time.process_time() - c0
                self.calls += 1

        return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--window", type=float, default=1800.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET * 100,
        help="top's CPU budget in %% of a core (0: none, a tick every interval)",
    )
    args = ap.parse_args()
    series = live_fleet(args.series, args.window, args.seconds)
    # as `herdwatch top` builds it (cli/top.py): the default lookback, so a tick scans what
    # top's ticks scan (the short rules over the last 30 min, cron_herd once a minute)
    watcher = Watcher([MemorySource(series)], rules=load_rules())
    engine = _Timed()
    poll = watcher.poll
    watcher.poll = engine.wrap(poll)  # type: ignore[method-assign]
    tick = watcher.tick
    tick_cpu = [0.0]

    def timed_tick(now: float, **kw: float | None) -> Snapshot:
        c0 = time.process_time()
        try:
            return tick(now, **kw)
        finally:
            tick_cpu[0] += time.process_time() - c0

    watcher.tick = timed_tick  # type: ignore[method-assign]
    snaps: list[Snapshot] = []
    feed = Feed(watcher, clock=None, interval=args.interval, on_snapshot=snaps.append,
                budget=args.budget / 100)  # fmt: skip
    with open(os.devnull, "w") as sink:
        console = Console(file=sink, width=100, height=30, force_terminal=True,
                          color_system="truecolor")  # fmt: skip
        top = Top(feed, console)
        # The first poll reads the recorded window at once, as top's first second does live.
        # Five warm-up ticks, as benchmarks/watch_tick.py: the one-time costs (scipy.ndimage's
        # import once the rolling medians' numpy budget is spent) are top's start, not its
        # refresh.
        asyncio.run(watcher.poll(time.time()))
        for _ in range(5):
            watcher.tick(time.time())
        engine.cpu = tick_cpu[0] = 0.0

        async def run() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(top.run(None), args.seconds)

        wall0, cpu0 = time.perf_counter(), time.process_time()
        asyncio.run(run())
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        # The drawing alone: the last Snapshot drawn as often as the loop drew.
        c0 = time.process_time()
        for _ in range(max(1, top.frames)):
            console.print(top.frame())
        frame_cpu = (time.process_time() - c0) / max(1, top.frames)
    engine_cpu = engine.cpu + tick_cpu[0]
    last = top.snapshot
    load = os.getloadavg()[0]
    print(f"top_cost: {len(series)} series, {args.window:g} s window at 1 s, refresh every "
          f"{args.interval:g} s for {wall:.0f} s, CPU budget {args.budget:g} %, "
          f"load average {load:.2f}")  # fmt: skip
    print(f"  CPU {cpu / wall * 100:.1f} % of a core  (target: under 5 %)")
    print(
        f"  engine (poll + tick): {engine_cpu / wall * 100:.1f} %  "
        f"{engine_cpu / max(1, engine.calls) * 1000:.1f} ms CPU per tick, {engine.calls} ticks"
        f" (one every {wall / max(1, engine.calls):.2f} s)"
    )
    print(f"  drawing: {top.frames} frames, {frame_cpu * 1000:.1f} ms CPU each "
          f"({frame_cpu * top.frames / wall * 100:.1f} %)")  # fmt: skip
    if last is not None:
        print(f"  last Snapshot: {last.cost.series} series, {last.cost.samples} samples, "
              f"{len(last.signals)} signal views")  # fmt: skip


if __name__ == "__main__":
    main()
