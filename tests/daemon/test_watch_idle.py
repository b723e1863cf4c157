"""`Watcher.run` on a live clock sleeps until the next tick's deadline when no source samples
(Prometheus or logs only: a poll returns at once) instead of spinning."""

from __future__ import annotations

import asyncio
import time

from herdwatch.engine import Watcher
from herdwatch.rules import load_rules
from herdwatch.sources.replay import ReplaySource
from tests.daemon.support import STAMPEDE


def test_a_live_run_with_history_sources_only_does_not_spin() -> None:
    watcher = Watcher([ReplaySource(STAMPEDE)], rules=load_rules({}))
    ticks: list[float] = []

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(2.0, stop.set)
        await watcher.run(None, interval=0.5, on_snapshot=lambda s: ticks.append(s.at), stop=stop)

    cpu, wall = time.process_time(), time.monotonic()
    asyncio.run(main())
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert 1.9 < wall < 3.0
    # one tick per interval, not thousands; and the process mostly slept
    assert 3 <= len(ticks) <= 6, len(ticks)
    assert cpu < 0.5 * wall, (cpu, wall)
