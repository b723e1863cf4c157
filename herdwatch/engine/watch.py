"""The Watcher: sources feed bounded buffers; `tick(now)` scans the lookback window -> Snapshot.

    poll(now)  each due source is read (history sources such as Prometheus or a replay for
               (cursor, now]; sampling sources such as Redis INFO for `duration` seconds) and its
               samples are appended to that source's buffer, trimmed to `retention`
    tick(now)  the pure scan (engine.scan) over [now - lookback, now] of every buffer (the last
               SHORT_LOOKBACK seconds of it for the rules that need no more, see there), findings
               matched to the ones already tracked (same signature, same subject, overlapping
               in time keep their id), and the Snapshot

A source that fails is marked unhealthy and retried with decorrelated jitter,
`sleep = min(cap, uniform(base, 3 * previous sleep))` (AWS Architecture Blog, "Exponential
Backoff And Jitter", 2015); its recovery is logged and kept in its health. The clock is the
caller's: `run` drives poll and tick on a real clock or on a replay's simulated one.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from herdwatch.engine.scan import scan
from herdwatch.engine.snapshot import (
    SignalView,
    Snapshot,
    SourceHealth,
    TickCost,
    TrackedFinding,
    signal_view,
)
from herdwatch.errors import HerdwatchError
from herdwatch.model import (
    Finding,
    KeyExpirySample,
    Labels,
    LogEvent,
    RawData,
    ScanResult,
    Series,
    SourceStatus,
)
from herdwatch.rules import Rule
from herdwatch.signals import median_step
from herdwatch.sources.base import CollectWindow, Source

if TYPE_CHECKING:
    import asyncio

# asyncio (~15 ms of imports: ssl, socket, subprocess...) is imported by the coroutines below,
# which run under an event loop that has loaded it already: `herdwatch scan --replay` feeds its
# Watcher without one (`Watcher.feed`) and never loads it.

__all__ = [
    "DEFAULT_LOOKBACK",
    "Backoff",
    "Buffer",
    "ReplayClock",
    "Watcher",
]

log = logging.getLogger("herdwatch.engine")

#: how far back a tick scans by default: the longest baseline of the shipped rules (5 min) with
#: room for a herd of several minutes and for cron_herd to see three hourly occurrences
DEFAULT_LOOKBACK = 4 * 3600.0
#: A live tick scans at most this many seconds back for the rules that need no more than three
#: of their baselines (all but cron_herd, whose recurrences span hours): their verdict on a herd
#: within it does not depend on older data, and a tick over 4 h of 1 s samples would cost 8x
#: one over 30 min. The rules that need more scan the whole lookback every `LONG_EVERY` seconds
#: and their findings are carried in between.
SHORT_LOOKBACK = 1800.0
LONG_EVERY = 60.0
#: how long a resolved or withdrawn finding stays in the Snapshot
KEEP_ENDED = 3600.0
#: samples shown per signal in a Snapshot (the views' sparklines), and their baseline window
RECENT = 600.0
VIEW_BASELINE = 300.0


@dataclass(slots=True)
class Backoff:
    """Decorrelated jitter: each failure waits min(cap, uniform(base, 3 * previous)) seconds."""

    base: float = 1.0
    cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    previous: float = 0.0

    def next(self) -> float:
        self.previous = min(
            self.cap, self.rng.uniform(self.base, max(self.base, 3 * self.previous))
        )
        return self.previous

    def reset(self) -> None:
        self.previous = 0.0


_Key = tuple[str, Labels]


@dataclass(slots=True)
class _Chunks:
    name: str
    labels: Labels
    family: str
    type: str
    t: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    last: float = -math.inf

    def add(self, s: Series) -> None:
        keep = s.timestamps > self.last  # a history source may hand back its last sample again
        if not keep.any():
            return
        self.t.append(s.timestamps[keep])
        self.v.append(s.values[keep])
        self.last = float(self.t[-1][-1])

    def compact(self, oldest: float) -> Series | None:
        t = np.concatenate(self.t) if len(self.t) > 1 else self.t[0]
        v = np.concatenate(self.v) if len(self.v) > 1 else self.v[0]
        i = int(np.searchsorted(t, oldest, side="left"))
        t, v = t[i:], v[i:]
        self.t, self.v = ([t], [v]) if len(t) else ([], [])
        if not len(t):
            return None
        return Series(self.name, self.labels, t, v, self.family, self.type)


class Buffer:
    """One source's recent raw data, bounded to `retention` seconds behind its newest sample."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._series: dict[_Key, _Chunks] = {}
        self._events: list[LogEvent] = []
        self._expiry: list[KeyExpirySample] = []
        self.status: list[SourceStatus] = []
        self.log_lines = 0
        self.newest = -math.inf

    def add(self, raw: RawData) -> None:
        for s in raw.series:
            if not len(s.timestamps):
                continue
            key = (s.name, s.labels)
            chunks = self._series.get(key)
            if chunks is None:
                chunks = self._series[key] = _Chunks(s.name, s.labels, s.family, s.type)
            chunks.add(s)
            self.newest = max(self.newest, float(s.timestamps[-1]))
        self._add_events(raw.events)
        if self._events:
            self.newest = max(self.newest, self._events[-1].timestamp)
        self._expiry += raw.key_expiry
        self.log_lines += raw.log_lines
        if raw.sources:
            self.status = list(raw.sources)

    def _add_events(self, events: Sequence[LogEvent]) -> None:
        """Keep the buffer in time order with each event once: a history source re-reads an
        overlap (the same file:line again), and a source that hands each event over once may
        hand them late (the lab's workers report in turn, log files are read one after the
        other): an event older than the newest buffered one is no duplicate for that."""
        if not events:
            return
        new = sorted(events, key=_event_time)
        if not self._events or new[0].timestamp > self._events[-1].timestamp:
            self._events += new
            return
        i = bisect.bisect_left(self._events, new[0].timestamp, key=_event_time)
        tail = self._events[i:]
        seen = {(e.timestamp, e.where, e.kind) for e in tail}
        fresh = [e for e in new if (e.timestamp, e.where, e.kind) not in seen]
        if fresh:
            self._events[i:] = sorted(tail + fresh, key=_event_time)

    def raw(self) -> RawData:
        """Everything buffered, trimmed to the retention (the trim is kept)."""
        oldest = self.newest - self.retention
        series = []
        for key in list(self._series):
            s = self._series[key].compact(oldest)
            if s is None:
                del self._series[key]
            else:
                series.append(s)
        self._events = [e for e in self._events if e.timestamp >= oldest]
        self._expiry = _thin([k for k in self._expiry if k.taken_at >= oldest])
        return RawData(series, list(self._events), list(self.status), self.log_lines,
                       list(self._expiry))  # fmt: skip


def _thin(samples: list[KeyExpirySample], per_doubling: int = 8) -> list[KeyExpirySample]:
    """Key-expiry samples kept ever sparser with age, so ttl_cliff finds an earlier sample at
    every distance it may need (to tell a re-armed bunch from a cliff) in O(log(retention))
    samples: time is cut into slots of a power of two seconds, at most 1/`per_doubling` of
    their age, and each slot keeps its oldest sample. Slots nest as they widen with age, so a
    sample once dropped is never needed again. The newest is always kept."""
    if not samples:
        return samples
    newest = samples[-1].taken_at
    seen: set[tuple[float, int]] = set()
    kept = []
    for s in samples:
        age = max(newest - s.taken_at, float(per_doubling))
        width = 2.0 ** math.floor(math.log2(age / per_doubling))
        slot = (width, math.floor(s.taken_at / width))
        if slot not in seen:
            seen.add(slot)
            kept.append(s)
    if kept[-1] is not samples[-1]:  # the newest is what ttl_cliff forecasts from
        kept.append(samples[-1])
    return kept


def _event_time(e: LogEvent) -> float:
    return e.timestamp


@dataclass(slots=True)
class _SourceState:
    source: Source
    buffer: Buffer
    backoff: Backoff
    health: SourceHealth
    cursor: float | None = None


def _merge(parts: Sequence[RawData]) -> RawData:
    out = RawData()
    for p in parts:
        out.series += p.series
        out.events += p.events
        out.log_lines += p.log_lines
        out.key_expiry += p.key_expiry
    out.events.sort(key=lambda e: e.timestamp)
    return out


def _history(rule: Rule) -> float:
    """The seconds of data a rule needs behind a herd: three of its baselines."""
    return 3 * float(getattr(rule.params, "baseline", 0.0))


def _finding_id(f: Finding) -> str:
    text = f"{f.signature}|{f.subject}|{f.onset:.3f}"
    return f"{f.signature}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _data_step(raw: RawData) -> float:
    """The median of the first 32 series' median scrape intervals (1 s without data)."""
    # median_step is np.median of the intervals without its per-call overhead, and a regular
    # series' step at once (see signals._math)
    steps = [median_step(s.timestamps) for s in raw.series[:32] if len(s.timestamps) > 2]
    return float(np.median(steps)) if steps else 1.0


class Watcher:
    """Buffers per source and a tick that scans them; see the module docstring.

    `lookback` is how far back a tick scans (None: everything buffered), `retention` how much a
    buffer keeps (default the lookback). `clock` and `rng` are injected for tests.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        rules: Sequence[Rule],
        signal_overrides: Mapping[str, str] | None = None,
        lookback: float | None = DEFAULT_LOOKBACK,
        retention: float | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        keep_ended: float = KEEP_ENDED,
    ) -> None:
        self.rules = list(rules)
        self.signal_overrides = dict(signal_overrides or {})
        self.lookback = lookback
        keep = retention if retention is not None else (lookback if lookback else math.inf)
        rng = rng or random.Random()
        self._states = [
            _SourceState(
                src,
                Buffer(keep),
                Backoff(backoff_base, backoff_cap, rng),
                SourceHealth(src.name, healthy=True),
            )
            for src in sources
        ]
        self._tracked: dict[str, TrackedFinding] = {}
        self.keep_ended = keep_ended
        self._long: ScanResult | None = None  # the last scan of the long rules, and when
        self._long_at = -math.inf

    @property
    def health(self) -> tuple[SourceHealth, ...]:
        return tuple(s.health for s in self._states)

    async def poll(
        self,
        now: float,
        *,
        since: float | None = None,
        until: float | None = None,
        duration: float = 0.0,
        strict: bool = False,
    ) -> None:
        """Read every source that is due at `now`, concurrently: history sources for
        (since or the last poll, until or now], sampling sources for `duration` seconds. A
        failing source is marked unhealthy and retried later; with `strict` its error is raised
        instead (one-shot scans of sources the user named)."""
        import asyncio

        due = [s for s in self._states if s.health.next_retry is None or s.health.next_retry <= now]
        results = await asyncio.gather(
            *(
                s.source.collect(
                    CollectWindow(
                        since=since if since is not None else s.cursor,
                        until=until if until is not None else now,
                        duration=duration,
                    )
                )
                for s in due
            ),
            return_exceptions=True,
        )
        for state, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                if strict or not isinstance(result, Exception):
                    raise result
                self._failed(state, now, result)
            else:
                self._succeeded(state, now, result)

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.source.name for s in self._states)

    def source(self, name: str) -> Source:
        """The source called `name` (KeyError when there is none)."""
        return next(s.source for s in self._states if s.source.name == name)

    async def poll_source(
        self, name: str, now: float, *, duration: float = 0.0, overlap: float = 0.0
    ) -> bool:
        """Read the one source called `name` if it is due at `now` (a failing source waits for
        its retry time): a history source for (last poll - `overlap`, now], a sampling source
        for `duration` seconds. False when it was not due. A live loop polls each source at
        its own interval this way; samples already buffered are not added twice."""
        state = next(s for s in self._states if s.source.name == name)
        if state.health.next_retry is not None and state.health.next_retry > now:
            return False
        since = state.cursor - overlap if state.cursor is not None else None
        try:
            raw = await state.source.collect(
                CollectWindow(since=since, until=now, duration=duration)
            )
        except Exception as exc:
            self._failed(state, now, exc)
        else:
            self._succeeded(state, now, raw)
        return True

    def feed(self, name: str, now: float, raw: RawData) -> None:
        """Buffer `raw`, read by the caller from the source called `name` at `now`, as a
        successful poll would (a one-shot replay scan reads its recording without an event
        loop)."""
        state = next(s for s in self._states if s.source.name == name)
        self._succeeded(state, now, raw)

    def _failed(self, state: _SourceState, now: float, exc: Exception) -> None:
        if not isinstance(exc, HerdwatchError):
            log.exception("source %s failed unexpectedly", state.source.name, exc_info=exc)
        wait = state.backoff.next()
        h = state.health
        if h.healthy:
            log.warning("source %s unhealthy: %s (retry in %.1fs)", h.name, exc, wait)
        state.health = replace(
            h, healthy=False, last_error=str(exc), next_retry=now + wait, failures=h.failures + 1
        )

    def _succeeded(self, state: _SourceState, now: float, raw: RawData) -> None:
        state.buffer.add(raw)
        state.cursor = now
        h = state.health
        recovered = h.recovered_at
        if not h.healthy:
            recovered = now
            log.warning("source %s recovered after %d failure(s)", h.name, h.failures)
        state.backoff.reset()
        detail = "; ".join(s.detail for s in raw.sources if s.detail) or h.detail
        failed = [s for s in raw.sources if not s.ok]
        state.health = SourceHealth(
            h.name,
            healthy=not failed,
            last_success=now,
            last_error=failed[0].detail if failed else "",
            failures=0,
            recovered_at=recovered,
            detail=detail,
        )

    def tick(
        self,
        now: float,
        *,
        since: float | None = None,
        until: float | None = None,
        full: bool = False,
    ) -> Snapshot:
        """Scan the buffered data over [since, until] (default: the lookback before `now`; for
        the rules that need less, the last `SHORT_LOOKBACK` seconds, see there). `full` scans
        the long rules now, however recently they were scanned (the last tick of a replay)."""
        started = time.perf_counter()
        raw = _merge([s.buffer.raw() for s in self._states])
        raw.sources = [
            SourceStatus(h.name, h.healthy, h.detail if h.healthy else h.last_error)
            for h in self.health
        ]
        if since is None and until is None and self.lookback is not None:
            result = self._scan_split(raw, now, full)
        else:
            result = scan(raw, signal_overrides=self.signal_overrides, rules=self.rules,
                          since=since, until=until)  # fmt: skip
        tracked = self._track(result.findings, now, raw, result.window)
        views = self._views(result.signals, result.subject_signals)
        cost = TickCost(
            time.perf_counter() - started,
            len(raw.series),
            sum(len(s.timestamps) for s in raw.series),
        )
        return Snapshot(
            at=now,
            window=result.window,
            signals=views,
            findings=tracked,
            sources=self.health,
            not_evaluated=tuple(result.not_evaluated),
            cost=cost,
            result=result,
        )

    def _scan_split(self, raw: RawData, now: float, full: bool) -> ScanResult:
        """The lookback scan of a live tick: the short rules over the short window now, the
        long ones over the whole lookback when due (see SHORT_LOOKBACK)."""
        assert self.lookback is not None
        since = now - self.lookback
        short_since = now - SHORT_LOOKBACK
        if short_since <= since:
            return scan(raw, signal_overrides=self.signal_overrides, rules=self.rules,
                        since=since)  # fmt: skip
        short = [r for r in self.rules if _history(r) <= SHORT_LOOKBACK]
        long = [r for r in self.rules if _history(r) > SHORT_LOOKBACK]
        result = scan(raw, signal_overrides=self.signal_overrides, rules=short, since=short_since)
        if not long:
            return result
        if full or self._long is None or not 0 <= now - self._long_at < LONG_EVERY:
            self._long = scan(raw, signal_overrides=self.signal_overrides, rules=long,
                              since=since)  # fmt: skip
            self._long_at = now
        findings = sorted(
            [*result.findings, *self._long.findings],
            key=lambda f: (f.onset, f.signature, f.subject),
        )
        return replace(
            result,
            findings=findings,
            not_evaluated=[*result.not_evaluated, *self._long.not_evaluated],
            evaluated=result.evaluated + self._long.evaluated,
        )

    @staticmethod
    def _views(
        fleet: Mapping[str, object], per_subject: Mapping[Labels, Mapping[str, object]]
    ) -> tuple[SignalView, ...]:
        out = [
            signal_view(sig, (), recent=RECENT, baseline=VIEW_BASELINE)  # type: ignore[arg-type]
            for sig in fleet.values()
        ]
        for subject, sigs in per_subject.items():
            out += [
                signal_view(sig, subject, recent=RECENT, baseline=VIEW_BASELINE)  # type: ignore[arg-type]
                for sig in sigs.values()
            ]
        return tuple(out)

    def _track(
        self,
        findings: Sequence[Finding],
        now: float,
        raw: RawData,
        window: tuple[float, float] | None,
    ) -> tuple[TrackedFinding, ...]:
        """Match this tick's findings to the tracked ones and update their states."""
        data_end = window[1] if window else now
        grace = 2 * _data_step(raw) if findings else 0.0  # only findings are matched with it
        seen: set[str] = set()
        for f in findings:
            match = next(
                (
                    t
                    for t in self._tracked.values()
                    if t.id not in seen
                    and t.state != "withdrawn"
                    and t.signature == f.signature
                    and t.subject == f.subject
                    and t.finding.onset <= f.end + grace
                    and f.onset <= t.finding.end + grace
                ),
                None,
            )
            state = "active" if f.end >= data_end - grace else "resolved"
            if match is None:
                fid = _finding_id(f)
                self._tracked[fid] = TrackedFinding(fid, state, f, now, now)
            else:
                fid = match.id
                self._tracked[fid] = TrackedFinding(fid, state, f, match.first_seen, now)
            seen.add(fid)
        start = window[0] if window else -math.inf
        for fid, t in list(self._tracked.items()):
            if fid in seen:
                continue
            if t.finding.end < now - self.keep_ended:
                del self._tracked[fid]
            elif t.state == "active" and t.finding.onset >= start:
                # still in view, yet no longer found: more data explained it away
                self._tracked[fid] = replace(t, state="withdrawn", last_seen=now)
            elif t.state == "active":
                self._tracked[fid] = replace(t, state="resolved", last_seen=now)
        return tuple(sorted(self._tracked.values(), key=lambda t: (t.finding.onset, t.id)))

    async def run(
        self,
        clock: ReplayClock | None,
        *,
        interval: float,
        on_snapshot: Callable[[Snapshot], Awaitable[None] | None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> Snapshot | None:
        """Poll and tick every `interval` seconds until `stop` is set or, on a replay clock, the
        recording has ended; each Snapshot goes to `on_snapshot`. Returns the last one."""
        last: Snapshot | None = None
        deadline = time.monotonic()
        while stop is None or not stop.is_set():
            now = clock.now() if clock is not None else time.time()
            duration = 0.0 if clock is not None else interval
            await self.poll(now, duration=duration)
            last = self.tick(now)
            if on_snapshot is not None:
                done = on_snapshot(last)
                if done is not None:
                    await done
            if clock is not None:
                if clock.finished(now):
                    break
                await clock.advance(interval)
            else:
                # a poll samples for `duration` only when some source samples: with history
                # sources alone (Prometheus, logs) it returns at once, so sleep until the next
                # tick's deadline instead of spinning; a late tick starts the next at once
                deadline = max(deadline + interval, time.monotonic())
                await self._sleep_until(deadline, stop)
        return last

    @staticmethod
    async def _sleep_until(deadline: float, stop: asyncio.Event | None) -> None:
        """Sleep until the monotonic `deadline`, or until `stop` is set."""
        import asyncio

        delay = deadline - time.monotonic()
        if delay <= 0:
            return
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


class ReplayClock:
    """Simulated time over a recording [start, end]: each `advance(dt)` moves it dt seconds and
    sleeps dt / speed of real time (no sleep at speed `inf`, `--speed max`)."""

    def __init__(self, start: float, end: float, speed: float = math.inf) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.start, self.end, self.speed = start, end, speed
        self._now = start

    def now(self) -> float:
        return self._now

    def finished(self, now: float) -> bool:
        return now >= self.end

    async def advance(self, dt: float) -> None:
        self._now = min(self._now + dt, self.end)
        if math.isfinite(self.speed):
            import asyncio

            await asyncio.sleep(dt / self.speed)
