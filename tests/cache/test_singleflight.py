"""Go singleflight semantics, plus per-waiter deadlines and cancellation that poisons nobody."""

from __future__ import annotations

import asyncio
import threading

import pytest

from herdwatch.cache import SingleFlight, ThreadSingleFlight


async def test_one_call_for_all_concurrent_callers() -> None:
    flight = SingleFlight()
    release, started = asyncio.Event(), asyncio.Event()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return 42

    tasks = [asyncio.create_task(flight.do_shared("k", work)) for _ in range(100)]
    await started.wait()
    assert "k" in flight and calls == 1
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert results == [(42, True)] * 100
    assert "k" not in flight


async def test_lone_caller_is_not_shared_and_next_call_is_fresh() -> None:
    flight = SingleFlight()
    counter = iter(range(10))

    async def work() -> int:
        return next(counter)

    assert await flight.do_shared("k", work) == (0, False)
    assert await flight.do("k", work) == 1


async def test_error_reaches_every_waiter() -> None:
    flight = SingleFlight()
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        raise LookupError("db down")

    tasks = [asyncio.create_task(flight.do("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, LookupError) and str(r) == "db down" for r in results)


async def test_waiter_timeout_does_not_affect_the_others() -> None:
    flight = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "v"

    patient = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await flight.do("k", work, wait_timeout=0.01)
    release.set()
    assert await patient == "v"
    assert calls == 1


async def test_cancelled_waiter_never_cancels_the_others() -> None:
    flight = SingleFlight()
    release = asyncio.Event()
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        await release.wait()
        return "v"

    first = asyncio.create_task(flight.do("k", work))
    second = asyncio.create_task(flight.do("k", work))
    await started.wait()
    first.cancel()  # the caller that started the call leaves
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == "v"


async def test_work_is_cancelled_only_when_every_waiter_left() -> None:
    flight = SingleFlight()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    waiters = [asyncio.create_task(flight.do("k", work)) for _ in range(3)]
    await started.wait()
    for task in waiters[:2]:
        task.cancel()
    await asyncio.gather(*waiters[:2], return_exceptions=True)
    await asyncio.sleep(0)
    assert not cancelled.is_set()
    waiters[2].cancel()
    await asyncio.gather(waiters[2], return_exceptions=True)
    await asyncio.wait_for(cancelled.wait(), 1)
    assert "k" not in flight


async def test_forget_starts_a_fresh_call_while_old_waiters_keep_theirs() -> None:
    flight = SingleFlight()
    gates = [asyncio.Event(), asyncio.Event()]
    values = iter(["old", "new"])
    calls = 0

    async def work() -> str:
        nonlocal calls
        gate = gates[calls]
        calls += 1
        value = next(values)
        await gate.wait()
        return value

    old = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0)
    flight.forget("k")
    new = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0)
    for gate in gates:
        gate.set()
    assert (await old, await new) == ("old", "new")
    assert calls == 2


def test_threaded_twin_one_call_for_all_threads() -> None:
    flight = ThreadSingleFlight()
    entered = threading.Event()
    release = threading.Event()
    calls = 0

    def work() -> int:
        nonlocal calls
        calls += 1
        entered.set()
        release.wait(5)
        return 7

    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def caller() -> None:
        value = flight.do_shared("k", work)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=caller) for _ in range(20)]
    threads[0].start()
    entered.wait(5)
    for t in threads[1:]:
        t.start()
    # Every follower must have joined before the leader finishes: wait for them by count.
    while True:
        with flight._lock:
            if flight._calls["k"].callers == 20:
                break
        threading.Event().wait(0.001)
    release.set()
    for t in threads:
        t.join(5)
    assert calls == 1
    assert results == [(7, True)] * 20


def test_threaded_twin_error_and_waiter_timeout() -> None:
    flight = ThreadSingleFlight()
    entered = threading.Event()
    release = threading.Event()

    def work() -> int:
        entered.set()
        release.wait(5)
        raise KeyError("gone")

    errors: list[BaseException] = []

    def leader() -> None:
        try:
            flight.do("k", work)
        except KeyError as exc:
            errors.append(exc)

    t = threading.Thread(target=leader)
    t.start()
    entered.wait(5)
    with pytest.raises(TimeoutError):
        flight.do("k", work, wait_timeout=0.01)
    release.set()
    t.join(5)
    assert len(errors) == 1
    assert flight.do_shared("k", lambda: 1) == (1, False)
