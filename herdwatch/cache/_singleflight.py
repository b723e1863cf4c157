"""In-process call collapsing with Go singleflight semantics, for asyncio and for threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class _Call:
    __slots__ = ("callers", "task", "waiting")

    def __init__(self, task: asyncio.Future[Any]) -> None:
        self.task = task
        self.waiting = 0  # callers still awaiting the result
        self.callers = 0  # every caller that ever joined (for `shared`)


def _consume(task: asyncio.Future[Any]) -> None:
    # The result may reach nobody (every waiter left): retrieve it so asyncio does not warn.
    if not task.cancelled():
        task.exception()


class SingleFlight:
    """One in-flight call per key; its result or error reaches every caller of that key.

    Unlike Go's singleflight, each caller may give up (``wait_timeout`` or cancellation) without
    affecting the others; the shared work is cancelled only when every caller has left.
    """

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._calls

    async def do(
        self, key: Hashable, fn: Callable[[], Awaitable[T]], *, wait_timeout: float | None = None
    ) -> T:
        """Run ``fn`` once for all concurrent callers of ``key`` and return its result."""
        value, _ = await self.do_shared(key, fn, wait_timeout=wait_timeout)
        return value

    async def do_shared(
        self, key: Hashable, fn: Callable[[], Awaitable[T]], *, wait_timeout: float | None = None
    ) -> tuple[T, bool]:
        """Like :meth:`do`, plus ``shared``: whether the result went to more than one caller.

        ``wait_timeout`` bounds this caller's wait only (TimeoutError); the call goes on for others.
        """
        call = self._calls.get(key)
        if call is None:
            # The work runs in its own task so that no single caller's cancellation reaches it.
            task = asyncio.ensure_future(fn())
            call = _Call(task)
            self._calls[key] = call
            task.add_done_callback(_consume)
            task.add_done_callback(self._on_done(key, call))
        call.callers += 1
        call.waiting += 1
        try:
            if wait_timeout is None:
                value = await asyncio.shield(call.task)
            else:
                async with asyncio.timeout(wait_timeout):
                    value = await asyncio.shield(call.task)
        except BaseException:
            call.waiting -= 1
            if call.waiting == 0 and not call.task.done():
                self._done(key, call)
                call.task.cancel()
            raise
        call.waiting -= 1
        return value, call.callers > 1

    def _on_done(self, key: Hashable, call: _Call) -> Callable[[asyncio.Future[Any]], None]:
        return lambda _task: self._done(key, call)

    def _done(self, key: Hashable, call: _Call) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]

    def forget(self, key: Hashable) -> None:
        """Let the next caller of ``key`` start a fresh call; current callers keep the old one."""
        self._calls.pop(key, None)


class _ThreadCall:
    __slots__ = ("callers", "done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.callers = 1


class ThreadSingleFlight:
    """The threaded twin of :class:`SingleFlight`: the first caller runs ``fn`` in its thread.

    Waiters may give up with ``wait_timeout`` (TimeoutError); a thread cannot be cancelled, so the
    leader always finishes its call, and its result still reaches every waiter left.
    """

    __slots__ = ("_calls", "_lock")

    def __init__(self) -> None:
        self._calls: dict[Hashable, _ThreadCall] = {}
        self._lock = threading.Lock()

    def do(self, key: Hashable, fn: Callable[[], T], *, wait_timeout: float | None = None) -> T:
        """Run ``fn`` once for all concurrent callers of ``key`` and return its result."""
        value, _ = self.do_shared(key, fn, wait_timeout=wait_timeout)
        return value

    def do_shared(
        self, key: Hashable, fn: Callable[[], T], *, wait_timeout: float | None = None
    ) -> tuple[T, bool]:
        """Like :meth:`do`, plus whether the result went to more than one caller."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _ThreadCall()
            else:
                call.callers += 1
        if leader:
            try:
                call.value = fn()
            except BaseException as exc:
                call.error = exc
            finally:
                with self._lock:
                    if self._calls.get(key) is call:
                        del self._calls[key]
                    call.done.set()
        elif not call.done.wait(wait_timeout):
            raise TimeoutError(f"singleflight wait for {key!r} timed out after {wait_timeout}s")
        if call.error is not None:
            raise call.error
        with self._lock:
            shared = call.callers > 1
        return call.value, shared

    def forget(self, key: Hashable) -> None:
        """Let the next caller of ``key`` start a fresh call."""
        with self._lock:
            self._calls.pop(key, None)
