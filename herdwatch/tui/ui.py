"""The loop of `herdwatch top`: the terminal, the keys, and when to draw (the only I/O here).

The terminal is put in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still raises
KeyboardInterrupt) and the alternate screen; both are undone on q, on Ctrl-C, on SIGTERM and
on any exception, before the error is reported. A frame is drawn when a Snapshot arrives, a
key is pressed or the terminal is resized (SIGWINCH), at most every 50 ms; rich's Live
rewrites the screen in place from the top, so nothing is cleared between frames (no flicker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

from rich.console import Console, RenderableType
from rich.live import Live

from herdwatch.engine.snapshot import Snapshot
from herdwatch.tui.data import Feed
from herdwatch.tui.state import ViewState, on_key
from herdwatch.tui.views import ReplayInfo, ordered_findings, screen

__all__ = ["FRAME_GAP", "Top", "parse_keys", "run_in_terminal", "terminal_keys"]

#: the shortest time between two frames (a replay at --speed max ticks faster than that)
FRAME_GAP = 0.05
_CSI = {
    b"A": "up",
    b"B": "down",
    b"C": "right",
    b"D": "left",
    b"H": "home",
    b"F": "end",
    b"5~": "pgup",
    b"6~": "pgdn",
}


def parse_keys(data: bytes) -> list[str]:
    """Key names in what the terminal sent: arrows and paging keys (CSI and SS3 forms), enter,
    esc, backspace, and printable characters as themselves."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x1B and data[i + 1 : i + 2] in (b"[", b"O") and i + 2 < len(data):
            j = i + 2
            while j < len(data) and not 0x40 <= data[j] <= 0x7E:
                j += 1
            keys.append(_CSI.get(bytes(data[i + 2 : j + 1]), "unknown"))
            i = j + 1
            continue
        if b == 0x1B:
            keys.append("esc")
        elif b in (0x0D, 0x0A):
            keys.append("enter")
        elif b in (0x7F, 0x08):
            keys.append("backspace")
        elif b >= 0x80:
            # A multi-byte character: take the whole UTF-8 sequence.
            n = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            keys.append(data[i : i + n].decode("utf-8", "replace"))
            i += n
            continue
        elif b >= 0x20:
            keys.append(chr(b))
        i += 1
    return keys


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def terminal_keys(fd: int) -> AsyncIterator[str]:
    """The keys typed on terminal `fd` (in cbreak mode) as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    loop.add_reader(fd, lambda: queue.put_nowait(os.read(fd, 1024)))
    try:
        while True:
            data = await queue.get()
            if not data:
                return
            for key in parse_keys(data):
                yield key
    finally:
        loop.remove_reader(fd)


class _Held(logging.Handler):
    """Keeps herdwatch's log records while the screen is up (they would tear it); they are
    printed to stderr once it is gone."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records = [*self.records[-99:], record]


@contextlib.contextmanager
def _hold_logs() -> Iterator[_Held]:
    logger = logging.getLogger("herdwatch")
    held = _Held()
    saved = logger.propagate
    logger.addHandler(held)
    logger.propagate = False
    try:
        yield held
    finally:
        logger.removeHandler(held)
        logger.propagate = saved
        for record in held.records:
            print(f"herdwatch: {record.getMessage()}", file=sys.stderr)


class Top:
    """One `herdwatch top` session: a Feed, the ViewState, and the frames drawn on `console`.

    `keys` yields key names (terminal_keys on a real terminal; a test or the benchmark passes
    its own). `run()` returns when q is pressed or, with `exit_at_end`, when a replay ends.
    """

    def __init__(
        self,
        feed: Feed,
        console: Console,
        *,
        replay: ReplayInfo | None = None,
        state: ViewState | None = None,
        exit_at_end: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.feed = feed
        self.console = console
        self.replay = replay
        self.state = state or ViewState(interval=feed.interval)
        self.snapshot: Snapshot | None = None
        self.frames = 0
        self.exit_at_end = exit_at_end
        self._clock = clock
        self._wake = asyncio.Event()
        feed.on_snapshot = self._got

    def _got(self, snap: Snapshot) -> None:
        # Live, a paused screen stays as it was while the sources are still read.
        if not self.state.paused:
            self.snapshot = snap
            self._wake.set()

    def frame(self) -> RenderableType:
        """The screen for the current Snapshot, state and terminal size."""
        replay = self.replay
        if replay is not None and self.feed.ended:
            replay = replace(replay, ended=True)
        width, height = self.console.size
        pace = self.feed.pace if self.feed.clock is None else None
        return screen(self.snapshot, self.state, replay, width, height, pace=pace)

    def press(self, key: str) -> None:
        """Apply one key: the state changes, the feed follows (pause, interval)."""
        ids = [f.id for f in ordered_findings(self.snapshot)]
        before = self.state
        self.state = on_key(before, key, ids)
        if self.state.paused != before.paused:
            self.feed.pause(self.state.paused)
        if self.state.interval != before.interval:
            self.feed.set_interval(self.state.interval)
        self._wake.set()

    async def _read(self, keys: AsyncIterator[str]) -> None:
        async for key in keys:
            self.press(key)
            if self.state.quit:
                return

    async def _draw(self, live: Live) -> None:
        last = -FRAME_GAP
        while not self.state.quit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.state.interval)
            self._wake.clear()
            wait = last + FRAME_GAP - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            live.update(self.frame(), refresh=True)
            self.frames += 1
            last = self._clock()
            if self.exit_at_end and self.feed.ended:
                return

    async def run(self, keys: AsyncIterator[str] | None) -> None:
        """Draw until q (or the end of the replay, with exit_at_end); cancels the feed."""
        loop = asyncio.get_running_loop()
        resized = contextlib.suppress(NotImplementedError, RuntimeError, ValueError)
        with resized:
            loop.add_signal_handler(signal.SIGWINCH, self._wake.set)
        with Live(console=self.console, screen=True, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False) as live:  # fmt: skip
            tasks = [asyncio.create_task(self.feed.run()), asyncio.create_task(self._draw(live))]
            if keys is not None:
                tasks.append(asyncio.create_task(self._read(keys)))
            try:
                pending = set(tasks)
                while True:
                    done, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                    for t in done:
                        t.result()  # an error in the feed or the loop is raised here
                    if any(t is not tasks[0] for t in done):
                        break  # q, or the end of the replay with exit_at_end
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                with resized:
                    loop.remove_signal_handler(signal.SIGWINCH)


def run_in_terminal(top: Top) -> None:
    """Run `top` on this process's terminal: cbreak keys on stdin, the screen on stdout,
    herdwatch's log held until the screen is gone; SIGTERM ends it as q does."""
    fd = sys.stdin.fileno()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, lambda: top.press("q"))
        await top.run(terminal_keys(fd))

    with _hold_logs(), _cbreak(fd):
        asyncio.run(main())
