"""Injected time: a wall clock for stored expiries, a monotonic one for intervals."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Source of time; inject a :class:`FakeClock` in tests to make every policy exact."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (shared across processes: stored expiries)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (local intervals: breaker, token bucket, load durations)."""
        ...


class SystemClock:
    """The real clocks: :func:`time.time` and :func:`time.monotonic`."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to (``advance``); both readings move together."""

    __slots__ = ("_mono", "_wall")

    def __init__(self, wall: float = 1_700_000_000.0, mono: float = 1000.0) -> None:
        self._wall, self._mono = wall, mono

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a clock never goes back")
        self._wall += seconds
        self._mono += seconds
