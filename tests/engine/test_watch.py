"""The Watcher: a replay through it gives the one-shot scan's findings; ids, states, health."""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdwatch.config import RedisConfig
from herdwatch.engine import Backoff, ReplayClock, Watcher, scan
from herdwatch.engine.watch import DEFAULT_LOOKBACK, LONG_EVERY, SHORT_LOOKBACK
from herdwatch.errors import SourceError
from herdwatch.model import RawData, SourceStatus
from herdwatch.rules import load_rules
from herdwatch.ruletest import _fixture_config
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.redis_direct import RedisDirectSource
from herdwatch.sources.replay import ReplaySource, load_replay
from tests.support.servers import free_port, start_redis

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "incidents"


def _replay(d: Path, interval: float | None = None, speed: float = math.inf) -> tuple[list, list]:
    signals, overrides = _fixture_config(d)
    rules = load_rules(overrides)
    one = scan(load_replay(d), signal_overrides=signals, rules=rules)
    source = ReplaySource(d)
    span = source.span
    assert span is not None
    lo, hi = span
    every = interval or max(30.0, (hi - lo) / 30)
    watcher = Watcher([source], rules=rules, signal_overrides=signals, lookback=None)
    snap = asyncio.run(watcher.run(ReplayClock(lo, hi, speed), interval=every))
    assert snap is not None and snap.at == hi
    want = sorted((f.signature, f.subject, round(f.onset, 3)) for f in one.findings)
    got = sorted(
        (t.signature, t.subject, round(t.finding.onset, 3))
        for t in snap.findings
        if t.state != "withdrawn"
    )
    return want, got


@pytest.mark.parametrize("name", sorted(p.parent.name for p in FIXTURES.glob("*/expected.json")))
def test_a_replay_through_the_watcher_finds_what_one_scan_finds(name: str) -> None:
    want, got = _replay(FIXTURES / name)
    assert got == want


def test_every_tick_of_a_replay_at_its_own_resolution() -> None:
    want, got = _replay(FIXTURES / "real_cache_stampede", interval=1.0)
    assert want and got == want


def test_a_replay_at_speed_n_takes_its_time() -> None:
    d = FIXTURES / "real_pool_exhaustion"
    started = time.monotonic()
    want, got = _replay(d, interval=30.0, speed=3000.0)  # 6 min of recording: ~0.12 s
    elapsed = time.monotonic() - started
    assert got == want
    lo, hi = ReplaySource(d).span or (0.0, 0.0)
    assert elapsed >= (hi - lo) / 3000.0 * 0.9


def test_a_finding_keeps_its_id_while_it_lasts_and_then_resolves() -> None:
    d = FIXTURES / "stampede_catalog_1s"
    source = ReplaySource(d)
    lo, hi = source.span or (0.0, 0.0)
    watcher = Watcher([source], rules=load_rules(), lookback=None)
    seen: list[tuple[str, str]] = []

    def record(snap) -> None:  # type: ignore[no-untyped-def]
        seen.extend((t.id, t.state) for t in snap.findings if t.signature == "cache_stampede")

    asyncio.run(watcher.run(ReplayClock(lo, hi), interval=10.0, on_snapshot=record))
    ids = {fid for fid, _ in seen}
    assert len(ids) == 1
    states = [s for _, s in seen]
    assert states[0] == "active" and states[-1] == "resolved"
    assert "active" not in states[states.index("resolved") :]


def test_the_snapshot_carries_views_health_and_cost() -> None:
    d = FIXTURES / "stampede_sessions_5s"
    source = ReplaySource(d)
    _, hi = source.span or (0.0, 0.0)
    watcher = Watcher([source], rules=load_rules(), lookback=1800.0)
    asyncio.run(watcher.poll(hi))
    snap = watcher.tick(hi)
    assert snap.window is not None and snap.window[0] >= hi - 1800.0
    names = {(v.name, v.subject) for v in snap.signals}
    assert ("miss_ratio", ()) in names
    assert ("miss_ratio", (("instance", "10.1.9.5:9121"),)) in names
    ratio = next(v for v in snap.signals if v.name == "miss_ratio" and not v.subject)
    assert math.isfinite(ratio.baseline) and math.isfinite(ratio.score)
    assert len(ratio.t) and ratio.t[0] >= ratio.t[-1] - 600.0
    assert [s.name for s in snap.sources] == [source.name] and snap.sources[0].healthy
    assert {n.rule for n in snap.not_evaluated} == {"lock_timeout_cluster", "ttl_cliff"}
    assert snap.cost.series == 81 and snap.cost.seconds > 0
    assert snap.to_json()["findings"][0]["id"].startswith("cache_stampede-")


class _Flaky:
    """Fails the first `failures` reads (pure logic: the retry schedule, not a server)."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reads = 0

    async def collect(self, window: CollectWindow) -> RawData:
        self.reads += 1
        if self.reads <= self.failures:
            raise SourceError(self.name, "connection refused")
        return RawData(sources=[SourceStatus(self.name, True, "fine")])


def test_a_failing_source_is_retried_with_backoff_and_its_recovery_reported() -> None:
    src = _Flaky(failures=3)
    w = Watcher([src], rules=load_rules(), rng=random.Random(7), backoff_base=1.0, backoff_cap=8.0)
    now = 1000.0
    asyncio.run(w.poll(now))
    (h,) = w.health
    assert not h.healthy and h.failures == 1 and "refused" in h.last_error
    assert h.next_retry is not None and 1.0 <= h.next_retry - now <= 8.0
    asyncio.run(w.poll(now + 0.5))  # not due yet: not read
    assert src.reads == 1
    while w.health[0].failures < 3:
        now = w.health[0].next_retry or now
        asyncio.run(w.poll(now))
    now = w.health[0].next_retry or now
    asyncio.run(w.poll(now))
    (h,) = w.health
    assert h.healthy and h.recovered_at == now and h.last_success == now and not h.next_retry


@given(st.integers(0, 2**32 - 1), st.floats(0.01, 10), st.floats(10, 1000))
def test_decorrelated_jitter_stays_between_base_and_cap(seed: int, base: float, cap: float) -> None:
    b = Backoff(base, cap, random.Random(seed))
    prev = base
    for _ in range(20):
        wait = b.next()
        assert base <= wait <= min(cap, 3 * max(prev, base)) + 1e-9
        prev = wait


def test_a_real_redis_going_down_and_coming_back() -> None:
    port = free_port()
    server = start_redis(port=port)
    source = RedisDirectSource(RedisConfig(url=server.url))
    w = Watcher([source], rules=load_rules(), rng=random.Random(1), backoff_base=0.1)
    try:
        asyncio.run(w.poll(time.time()))
        assert w.health[0].healthy
        server.stop()
        asyncio.run(w.poll(time.time()))
        down = w.health[0]
        assert not down.healthy and down.next_retry is not None
        assert "127.0.0.1" in down.last_error or "redis" in down.last_error.lower()
        server = start_redis(port=port)
        asyncio.run(w.poll(down.next_retry + 0.01))
        up = w.health[0]
        assert up.healthy and up.recovered_at is not None
    finally:
        server.stop()


def test_a_live_tick_scans_short_rules_over_30_min_and_long_ones_each_minute() -> None:
    """With a lookback (daemon, top), the rules that need three baselines or less see the last
    SHORT_LOOKBACK seconds every tick; cron_herd sees the whole lookback every LONG_EVERY
    seconds, and its findings are carried in between."""
    d = FIXTURES / "cron_herd_hourly_15s"
    signals, overrides = _fixture_config(d)
    rules = load_rules(overrides)
    source = ReplaySource(d)
    assert source.span is not None
    hi = source.span[1]
    watcher = Watcher([source], rules=rules, signal_overrides=signals)
    watcher.feed(source.name, hi, source.read(CollectWindow(until=hi)))
    snap = watcher.tick(hi)
    assert snap.window is not None and snap.window[0] == hi - SHORT_LOOKBACK
    cron = [r for r in rules if r.id == "cron_herd"]
    want = scan(load_replay(d), signal_overrides=signals, rules=cron, since=hi - DEFAULT_LOOKBACK)
    assert want.findings
    onsets = [t.finding.onset for t in snap.findings if t.signature == "cron_herd"]
    assert onsets == [f.onset for f in want.findings]
    for later, rescanned in ((30.0, False), (LONG_EVERY + 1, True)):
        before = watcher._long_at
        snap = watcher.tick(hi + later)
        assert (watcher._long_at != before) is rescanned
        assert any(t.signature == "cron_herd" for t in snap.findings)


def test_key_expiry_samples_are_kept_sparser_with_age() -> None:
    """A sample a second for 4 h: the buffer keeps a few dozen, at every distance back (what
    ttl_cliff needs to tell re-armed TTLs from a cliff), newest always kept."""
    import numpy as np

    from herdwatch.engine.watch import Buffer
    from herdwatch.model import KeyExpirySample

    buf = Buffer(retention=4 * 3600.0)
    t0 = 1_764_000_000.0
    for i in range(4 * 3600):
        sample = KeyExpirySample("redis r", t0 + i, 10, 10, np.ones(10), ("k:*",) * 10)
        buf.add(RawData(key_expiry=[sample]))
        if i % 600 == 0:
            buf.raw()  # the Watcher reads its buffers at every tick; the trim is kept
    kept = [s.taken_at for s in buf.raw().key_expiry]
    newest = t0 + 4 * 3600 - 1
    assert kept[-1] == newest and kept == sorted(kept)
    assert len(kept) < 120
    ages = [newest - t for t in kept]
    for back in (1, 2, 5, 10, 30, 100, 600, 3600, 4 * 3600 - 600):
        # a sample within an eighth of any distance back
        assert min(abs(a - back) for a in ages) <= back / 8 + 1, back


def test_events_handed_over_late_are_kept_and_re_reads_are_not_doubled() -> None:
    """The lab's workers report their errors in turn, log files are read one after the other:
    an event older than the newest buffered one is kept (it was dropped, and with it part of a
    lock-timeout cluster); the same file:line read again is not counted twice."""
    from herdwatch.engine.watch import Buffer
    from herdwatch.model import LogEvent

    def ev(t: float, where: str) -> LogEvent:
        return LogEvent(t, "lock_timeout", where, "canceling statement due to lock timeout")

    buf = Buffer(retention=600.0)
    buf.add(RawData(events=[ev(10.0, "a.log:1"), ev(12.0, "a.log:2")]))
    buf.add(RawData(events=[ev(11.0, "b.log:1"), ev(11.5, "b.log:2")]))  # late, from b
    buf.add(RawData(events=[ev(12.0, "a.log:2"), ev(13.0, "a.log:3")]))  # an overlap re-read
    buf.add(RawData(events=[ev(12.0, "b.log:3")]))  # same instant, another line
    got = [(e.timestamp, e.where) for e in buf.raw().events]
    assert got == [
        (10.0, "a.log:1"),
        (11.0, "b.log:1"),
        (11.5, "b.log:2"),
        (12.0, "a.log:2"),
        (12.0, "b.log:3"),
        (13.0, "a.log:3"),
    ]
