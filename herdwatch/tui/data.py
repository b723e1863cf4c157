"""The data side of `herdwatch top`: a Watcher driven on a clock, its latest Snapshot kept.

The screen never reads a source: `Feed.run` drives `Watcher.run` (poll + tick, the loop the
daemon runs) and hands each Snapshot to a callback. Live, a tick comes every refresh interval
of wall time (Watcher.poll and tick, paced here: Watcher.run does not sleep between polls of
history-only sources on a wall clock), stretched when a tick would cost more than the CPU
budget. In a replay, each refresh moves the simulated clock `interval x speed` seconds
(`--speed 120` at 1 s shows two minutes of the recording per second) and ticks once there: the
Snapshot at simulated time t is the one any Watcher over the same recording, rules and
lookback computes at t, so the incident unfolds as the daemon saw it. At `--speed max` the
replay ticks every `tick` seconds of simulated time as fast as the engine goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

from herdwatch.engine import ReplayClock, Watcher
from herdwatch.engine.snapshot import Snapshot

__all__ = ["DEFAULT_BUDGET", "Feed", "PausableClock"]

#: the share of one core a live top may spend polling and ticking (the screen's own drawing
#: is about 2 ms a frame); a host in trouble is no place for its watcher to add load
DEFAULT_BUDGET = 0.04


class PausableClock(ReplayClock):
    """A ReplayClock that holds still while paused (the replay stops where it is)."""

    def __init__(self, start: float, end: float, speed: float = math.inf) -> None:
        super().__init__(start, end, speed)
        self._running = asyncio.Event()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self, paused: bool) -> None:
        if paused:
            self._running.clear()
        else:
            self._running.set()

    async def advance(self, dt: float) -> None:
        await self._running.wait()
        await super().advance(dt)


class Feed:
    """Drives `watcher` on `clock` (None: the wall clock) and calls `on_snapshot` with each
    Snapshot; `set_interval` takes effect at the next tick. `tick` is the simulated step at
    `--speed max` (the daemon's interval); `budget` the share of a core live ticks may use
    (0: no limit), `pace` the seconds between live ticks it currently allows."""

    def __init__(
        self,
        watcher: Watcher,
        *,
        clock: PausableClock | None,
        interval: float,
        on_snapshot: Callable[[Snapshot], None],
        tick: float = 1.0,
        budget: float = DEFAULT_BUDGET,
    ) -> None:
        self.watcher = watcher
        self.clock = clock
        self.interval = interval
        self.tick = tick
        self.on_snapshot = on_snapshot
        self.budget = budget
        self.pace = interval
        self.ended = False
        self._stop = asyncio.Event()

    @property
    def step(self) -> float:
        """Seconds of (simulated, when replaying) time between two ticks."""
        if self.clock is None:
            return self.interval
        if math.isinf(self.clock.speed):
            return self.tick
        return self.interval * self.clock.speed

    def set_interval(self, interval: float) -> None:
        if interval != self.interval:
            self.interval = interval
            self._stop.set()  # Watcher.run ends after this tick; run() restarts it

    def pause(self, paused: bool) -> None:
        """A replay's clock holds still; live, the sources keep being read (the screen is
        what freezes, see ui.py)."""
        if self.clock is not None:
            self.clock.pause(paused)

    async def run(self) -> None:
        """Tick until the recording ends (replay) or the task is cancelled (live)."""
        if self.clock is None:
            await self._run_live()
            return
        while True:
            self._stop = asyncio.Event()
            await self.watcher.run(
                self.clock, interval=self.step, on_snapshot=self.on_snapshot, stop=self._stop
            )
            if self.clock.finished(self.clock.now()):
                self.ended = True
                return

    async def _run_live(self) -> None:
        """Poll and tick once per interval of wall time, or less often when a tick's CPU would
        exceed `budget` of a core: the next tick then waits cpu / budget seconds (`pace`).
        Sampling sources (Redis INFO, pg_stat_activity) are read for the interval; history
        sources (Prometheus, logs) return at once and the rest is slept: the loop never spins."""
        loop = asyncio.get_running_loop()
        cost: float | None = None
        while True:
            started, cpu0 = loop.time(), time.process_time()
            interval = self.interval
            await self.watcher.poll(time.time(), duration=interval)
            self.on_snapshot(self.watcher.tick(time.time()))
            used = time.process_time() - cpu0
            cost = used if cost is None else 0.7 * cost + 0.3 * used
            self.pace = interval
            if self.budget > 0 and cost / self.budget > interval:
                self.pace = cost / self.budget
            self._stop = asyncio.Event()
            # set_interval wakes the sleep, so a new interval applies at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), started + self.pace - loop.time())
