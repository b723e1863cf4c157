"""The loop without a terminal: keys parsed, frames drawn on a recording console, the Feed
following pause and the refresh interval."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from io import StringIO

import pytest
from rich.console import Console

from herdwatch.engine import Watcher
from herdwatch.rules import load_rules
from herdwatch.sources.replay import ReplaySource
from herdwatch.tui import Feed, PausableClock, ReplayInfo, Top
from herdwatch.tui.ui import parse_keys

from .conftest import STAMPEDE


def test_parse_keys() -> None:
    assert parse_keys(b"\x1b[A\x1b[B\x1bOA\r\x1b") == ["up", "down", "up", "enter", "esc"]
    assert parse_keys(b"q+-/?\x7f") == ["q", "+", "-", "/", "?", "backspace"]
    assert parse_keys(b"\x1b[5~\x1b[6~\x1b[H\x1b[F") == ["pgup", "pgdn", "home", "end"]
    assert parse_keys("é".encode()) == ["é"]


def _top(speed: float, interval: float = 0.5) -> tuple[Top, Console]:
    source = ReplaySource(STAMPEDE)
    span = source.span
    assert span is not None
    clock = PausableClock(span[0], span[1], speed)
    watcher = Watcher([source], rules=load_rules())
    feed = Feed(watcher, clock=clock, interval=interval, on_snapshot=lambda _: None)
    console = Console(file=StringIO(), width=100, height=30, force_terminal=True, record=True)
    return Top(feed, console, replay=ReplayInfo("stampede", *span, speed)), console


async def _keys(top: Top, script: list[tuple[float, str]]) -> AsyncIterator[str]:
    for wait, key in script:
        await asyncio.sleep(wait)
        yield key


async def test_pause_holds_the_replay_clock_and_q_quits() -> None:
    top, _ = _top(speed=600)
    assert top.feed.clock is not None
    seen: list[float] = []

    async def watch() -> None:
        while not top.state.quit:
            seen.append(top.feed.clock.now())  # type: ignore[union-attr]
            await asyncio.sleep(0.1)

    watching = asyncio.create_task(watch())
    await asyncio.wait_for(top.run(_keys(top, [(1.2, "p"), (1.5, "q")])), 20)
    watching.cancel()
    assert top.state.paused and top.state.quit and top.frames >= 2
    assert top.feed.clock.paused
    # While paused (the last ~1.5 s) the simulated time stood still.
    assert len(set(seen[-10:])) == 1
    assert top.snapshot is not None and top.snapshot.at > top.replay.start  # type: ignore[union-attr]


async def test_the_interval_keys_change_the_replay_step() -> None:
    top, _ = _top(speed=100, interval=1.0)
    assert top.feed.step == 100.0
    top.press("-")
    assert (top.state.interval, top.feed.interval, top.feed.step) == (0.5, 0.5, 50.0)
    top.press("+")
    top.press("+")
    assert top.feed.step == 200.0


async def test_a_replay_runs_to_its_end_and_the_screen_says_so() -> None:
    top, console = _top(speed=3000)
    top.exit_at_end = True
    await asyncio.wait_for(top.run(None), 60)
    assert top.feed.ended and top.snapshot is not None
    assert top.snapshot.at == top.feed.clock.end  # type: ignore[union-attr]
    shown = console.export_text()
    assert "ended" in shown and "cache_stampede" in shown


async def test_an_error_in_the_feed_ends_the_loop_with_it() -> None:
    top, _ = _top(speed=600)

    async def broken() -> None:
        raise RuntimeError("boom")

    top.feed.run = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(top.run(_keys(top, [(30, "q")])), 10)
