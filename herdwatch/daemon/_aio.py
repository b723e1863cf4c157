"""Small asyncio helpers for the daemon."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True when it is set. (asyncio.timeout, not
    wait_for: on Python 3.11 a wait_for cancelled while its timer fires can swallow the
    cancellation and leave a task that never ends.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    return event.is_set()
