"""The daemon's loop: one Watcher, one alert book, the outbox and a delivery worker per notifier.

Live: each source is polled by its own task at its own interval with jitter (sampling sources
such as Redis INFO and the 100 ms Postgres sampler continuously in `interval`-long batches,
Prometheus at its scrape step, logs every interval), a tick runs every `daemon.interval`, and
each Snapshot goes to the book; what it says to send goes into the outbox first, then the
workers deliver it. Replay: the same poll, tick and book on a ReplayClock (`--speed N` or
`max`), then the daemon waits for the outbox to drain (at most `drain_timeout`: what a notifier
did not take by then stays queued for the next run, and the exit code is 1) and returns.

SIGTERM (and SIGINT) stop the watching, give the workers `drain_timeout` seconds to empty the
outbox, and return 0. SIGHUP reloads the config (rules, signals, notifiers, lifecycle); a new
config that does not load keeps the old one and logs one line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from herdwatch.alert import (
    AlertBook,
    AlertPolicy,
    DeliveryError,
    Notification,
    Outbox,
    Router,
    build_router,
)
from herdwatch.config import Config, redact
from herdwatch.daemon._aio import wait_event
from herdwatch.daemon._http import DaemonMetrics, serve
from herdwatch.daemon._leader import Lease
from herdwatch.daemon._shard import Shard
from herdwatch.engine import ReplayClock, Watcher
from herdwatch.engine.snapshot import Snapshot
from herdwatch.errors import HerdwatchError
from herdwatch.sources.base import Source

__all__ = ["Daemon", "DaemonSetup", "default_outbox"]

log = logging.getLogger("herdwatch.daemon")
#: a sampling poll ends this long (seconds) before the tick it feeds
_TICK_MARGIN = 0.05

BOOK_STATE = "book"
#: a follower keeps each notification this many lease TTLs before taking it as the leader's
FOLLOWER_HOLD_TTLS = 2.0
#: how long a delivery worker waits when rows are past due but none can be sent yet
IDLE_WAIT = 0.25


def default_outbox(environ: dict[str, str] | None = None) -> Path:
    """$STATE_DIRECTORY/outbox.db (systemd), else $XDG_STATE_HOME/herdwatch/outbox.db
    (default ~/.local/state)."""
    import os

    env = dict(os.environ) if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "outbox.db"
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local/state"
    )
    return Path(base) / "herdwatch" / "outbox.db"


def policy_of(cfg: Config, *, heartbeat: float | None) -> AlertPolicy:
    a = cfg.alerts
    return AlertPolicy(dict(a.hold), a.renotify, a.group_window, heartbeat)


@dataclasses.dataclass
class DaemonSetup:
    """What the daemon runs on: built by the CLI from the config (so reload can redo it)."""

    cfg: Config
    sources: list[Source]
    rules: list[Any]
    signal_overrides: dict[str, str]
    replay: tuple[float, float, float] | None = None  # (start, end, speed)


class Daemon:
    """See the module docstring. `reload` builds a new DaemonSetup from the config files (it
    raises HerdwatchError when the new config is invalid)."""

    def __init__(
        self,
        setup: DaemonSetup,
        outbox: Outbox,
        *,
        reload: Callable[[], DaemonSetup] | None = None,
        metrics: DaemonMetrics | None = None,
        listen: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.setup = setup
        self.cfg = setup.cfg
        self.outbox = outbox
        self._reload = reload
        self.metrics = metrics or DaemonMetrics()
        self.listen = listen if listen is not None else self.cfg.daemon.listen
        self.rng = rng or random.Random()
        self.router: Router = build_router(self.cfg.alerts)
        self.watcher = Watcher(
            setup.sources, rules=setup.rules, signal_overrides=setup.signal_overrides, rng=self.rng
        )
        self.book = AlertBook(self._policy())
        state = outbox.load_state(BOOK_STATE)
        if state is not None:
            try:
                self.book.restore(state)
            except (TypeError, KeyError, ValueError) as exc:
                log.warning("alert state in %s not restored: %s", outbox.path, exc)
        self.stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.shard = Shard(self.cfg.daemon.shard) if self.cfg.daemon.shard is not None else None
        leader = self.cfg.daemon.leader
        self.lease = (
            Lease(
                dataclasses.replace(leader, key=self.cfg.daemon.lease_key or leader.key),
                on_change=self._leadership,
            )
            if leader is not None and setup.replay is None
            else None
        )
        self.metrics.leader.set(0 if self.lease else 1)
        self.last_tick: Snapshot | None = None
        self._last_tick_wall = time.time()
        #: when the next live tick is due (time.time()): sampling polls end just before it
        self._next_tick_wall = time.time()
        self.dead_this_run = 0
        self._shift = 0.0
        self._health_seen: dict[str, bool] = {}

    def _policy(self) -> AlertPolicy:
        heartbeat = self.cfg.alerts.alertmanager.resend if self.cfg.alerts.alertmanager else None
        return policy_of(self.cfg, heartbeat=heartbeat)

    @property
    def may_notify(self) -> bool:
        return self.lease is None or self.lease.leader

    def _leadership(self, leader: bool) -> None:
        self.metrics.leader.set(1 if leader else 0)
        self._wake.set()

    # -- ticks and the book

    def handle(self, snap: Snapshot, *, final: bool = False) -> list[Notification]:
        """Feed a Snapshot (the findings this daemon's shard owns) to the book, store what it
        says to send, update the metrics."""
        started = time.perf_counter()
        if self.shard is not None:
            snap = self.shard.claim(snap)
            self.metrics.not_owned.set(self.shard.not_owned)
        silences = [s for s in self.outbox.silences() if s.active(time.time())]

        def silenced(labels: Any) -> bool:
            return any(s.matches(labels) for s in silences)

        notes = self.book.update(snap, silenced=silenced, final=final)
        for n in notes:
            if self._shift:
                n = dataclasses.replace(
                    n, alerts=tuple({**a, "shift": self._shift} for a in n.alerts)
                )
            targets = self.router.targets(n)
            added = self.outbox.enqueue(n, targets, coalesce=self.router.coalescing)
            log.info(
                "%s %s -> %s (%d queued)", n.kind, n.title, ", ".join(targets) or "nobody", added
            )
        if notes or final:
            self.outbox.save_state(BOOK_STATE, self.book.to_json())
            self._wake.set()
        self.book.forget(snap.at - 2 * self.watcher.keep_ended)
        self._observe(snap, time.perf_counter() - started)
        return notes

    def _observe(self, snap: Snapshot, extra: float) -> None:
        m = self.metrics
        m.ticks.inc()
        m.tick_seconds.observe(snap.cost.seconds + extra)
        m.findings.clear()
        for f in snap.findings:
            m.findings.labels(f.signature, f.state).inc()
        m.active.set([(f.signature, f.finding.severity, f.finding.subject) for f in snap.active])
        for state, count in self.book.states().items():
            m.alerts.labels(state).set(count)
        for h in snap.sources:
            m.source_up.labels(h.name).set(1 if h.healthy else 0)
        self.last_tick = snap
        self._last_tick_wall = time.time()
        self._outbox_metrics()

    def _outbox_metrics(self) -> None:
        m = self.metrics
        counts = self.outbox.counts()
        for name in self.router.by_name:
            m.queued.labels(name).set(counts.get((name, "queued"), 0))
            m.dead.labels(name).set(counts.get((name, "dead"), 0))
        m.depth.set(self.outbox.depth())
        m.oldest.set(self.outbox.oldest_age())

    def health(self) -> tuple[bool, dict[str, Any]]:
        """/healthz: healthy while ticks keep coming (unhealthy sources are reported, not
        fatal: the daemon keeps working through their outages)."""
        age = time.time() - self._last_tick_wall
        ok = age < max(10.0, 5 * self.cfg.daemon.interval)
        srcs = self.watcher.health
        return ok, {
            "status": "ok" if ok else "stalled",
            "last_tick_age": round(age, 3),
            "leader": self.may_notify,
            "shard": self.shard.cfg.name if self.shard is not None else None,
            "outbox_depth": self.outbox.depth(),
            "sources": [{"name": redact(h.name), "healthy": h.healthy} for h in srcs],
        }

    # -- polling

    def _count_poll(self, name: str) -> None:
        h = next(x for x in self.watcher.health if x.name == name)
        self.metrics.polls.labels(name).inc()
        if not h.healthy:
            self.metrics.poll_errors.labels(name).inc()
        self.metrics.source_up.labels(name).set(1 if h.healthy else 0)

    def _sampling_duration(self, now: float) -> float:
        """How long a sampling source (Postgres, Redis) samples in this poll: until just before
        the next tick, so the tick sees samples at most a sample interval old (a poll of a
        fixed second would leave them up to a second old: a second of detection delay)."""
        interval = self.cfg.daemon.interval
        until = self._next_tick_wall - _TICK_MARGIN
        while until - now < 0.25 * interval:
            until += interval
        return until - now

    async def _poll_loop(self, name: str) -> None:
        """Poll one live source at its own interval, with +-10 % jitter (a history source), or
        sample until just before the next tick (a sampling source)."""
        src = self.watcher.source(name)
        interval = self.cfg.daemon.interval
        history = type(src).__name__ in ("PrometheusSource", "LogTailSource")
        while not self.stop.is_set():
            step = getattr(src, "step", None) or interval
            started = time.time()
            duration = 0.0 if history else self._sampling_duration(started)
            polled = await self.watcher.poll_source(
                name, started, duration=duration, overlap=2 * step if history else 0.0
            )
            if polled:
                self._count_poll(name)
            wait = (step if history else 0.05 * interval) * self.rng.uniform(0.9, 1.1)
            if not polled:
                wait = min(interval, wait) if history else interval
            wait = max(0.0, wait - (time.time() - started) if history else wait)
            await wait_event(self.stop, wait)

    async def _tick_loop(self) -> None:
        interval = self.cfg.daemon.interval
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.handle(self.watcher.tick(time.time()))
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:  # a tick longer than the interval: skip, do not pile up
                next_at = time.monotonic()
                delay = 0.0
            self._next_tick_wall = time.time() + delay
            await wait_event(self.stop, delay)

    async def _replay(self, start: float, end: float, speed: float) -> None:
        clock = ReplayClock(start, end, speed)
        interval = self.cfg.daemon.interval
        self._shift = time.time() - start
        while not self.stop.is_set():
            now = clock.now()
            await self.watcher.poll(now)
            for name in self.watcher.source_names:
                self._count_poll(name)
            done = clock.finished(now)
            self.handle(self.watcher.tick(now, full=done), final=done)
            if done:
                break
            await clock.advance(interval)
            await asyncio.sleep(0)  # let the delivery workers run at --speed max
        log.info("replay finished; draining the outbox (%d queued)", self.outbox.depth())

    async def _lag_loop(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            await asyncio.sleep(0.25)
            self.metrics.lag.set(max(0.0, time.monotonic() - t0 - 0.25))

    # -- delivery

    async def _deliver_loop(self, name: str) -> None:
        """Deliver this notifier's queued rows until cancelled."""
        while True:
            self._wake.clear()
            rows = self.outbox.due(notifier=name) if name in self.router.by_name else []
            sending = bool(rows) and self.may_notify
            for row in rows:
                await self._deliver(row)
            nxt = self.outbox.next_due(notifier=name)
            wait = 1.0 if nxt is None else min(1.0, max(0.0, nxt - time.time()))
            if sending and wait == 0.0:
                continue
            # nothing sendable now although a row is past due (a follower holds its rows; a
            # row waits behind an older one of its group in backoff): no busy loop, a wake
            # (new rows, a leadership change) comes sooner
            await wait_event(self._wake, max(wait, IDLE_WAIT) if nxt is not None else wait)

    async def _deliver(self, row: Any) -> None:
        if not self.may_notify:
            assert self.lease is not None
            # the leader sends it; kept a while so that a takeover still sends what the dead
            # leader may not have (at-least-once)
            if time.time() - row.created > FOLLOWER_HOLD_TTLS * self.lease.cfg.ttl:
                self.outbox.supersede(row, "sent by the leader")
            return
        notifier = self.router.by_name.get(row.notifier)
        if notifier is None:
            self.outbox.failed(row, "notifier no longer configured", retry=False)
            return
        try:
            await notifier.send(row.notification)
        except DeliveryError as exc:
            state = self.outbox.failed(row, str(exc), retry=exc.retry)
            self.metrics.failed.labels(row.notifier).inc()
            if state == "dead":
                self.dead_this_run += 1
                log.error("%s: %s dead-lettered: %s", row.notifier, row.key, exc)
            else:
                log.warning(
                    "%s: %s not delivered (attempt %d): %s",
                    row.notifier,
                    row.key,
                    row.attempts + 1,
                    exc,
                )
        except Exception as exc:  # a bug in a notifier must not stop the others
            log.exception("%s: unexpected error delivering %s", row.notifier, row.key)
            self.outbox.failed(row, redact(f"{type(exc).__name__}: {exc}"))
            self.metrics.failed.labels(row.notifier).inc()
        else:
            self.outbox.delivered(row)
            self.metrics.sent.labels(row.notifier).inc()
            log.info("%s: delivered %s (%s)", row.notifier, row.key, row.notification.title)
        self._outbox_metrics()

    async def drain(self, seconds: float) -> bool:
        """Wait until nothing deliverable is queued, at most `seconds`; True when empty."""
        deadline = time.monotonic() + seconds
        while self.outbox.depth() > 0 and self.may_notify:
            self._wake.set()
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return self.outbox.depth() == 0

    # -- signals and reload

    def reload(self) -> None:
        """SIGHUP: take the new config, or keep the old one and say why in one line."""
        if self._reload is None:
            return
        try:
            new = self._reload()
            router = build_router(new.cfg.alerts)
        except HerdwatchError as exc:
            self.metrics.reloads.labels("failed").inc()
            log.error("reload failed, keeping the old config: %s", redact(str(exc)))
            return
        if new.cfg.sources != self.cfg.sources:
            log.warning("reload: sources changed; restart the daemon to watch the new ones")
        if new.cfg.daemon.lease_key != self.cfg.daemon.lease_key:
            log.warning("reload: the lease (leader or shard name) changed; restart to take it")
        new_shard = new.cfg.daemon.shard
        if (new_shard is None) != (self.shard is None):
            log.warning("reload: daemon.shard added or removed; restart the daemon to apply it")
        elif new_shard is not None:
            self.shard = Shard(new_shard)  # its matchers and fleet apply from the next tick
        self.cfg = new.cfg
        self.router = router
        self.watcher.rules = list(new.rules)
        self.watcher.signal_overrides = dict(new.signal_overrides)
        self.book.policy = self._policy()
        self.metrics.reloads.labels("ok").inc()
        log.warning("reloaded config from %s", ", ".join(new.cfg.files) or "the environment")
        self._wake.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _on_stop(self, sig: signal.Signals) -> None:
        log.warning(
            "%s: stopping (draining the outbox for up to %gs)",
            sig.name,
            self.cfg.daemon.drain_timeout,
        )
        self.stop.set()

    # -- the whole run

    async def run(self) -> int:
        """Run until stopped (live) or until the replay ended and the outbox drained.
        0 on a clean end; 1 when, in a replay, a notification was dead-lettered or still not
        delivered `daemon.drain_timeout` after the recording ended."""
        self._install_signals()
        server = None
        host, _, port = self.listen.rpartition(":")
        try:
            server = await serve(
                host.strip("[]") or "127.0.0.1", int(port), self.metrics, self.health
            )
            log.info("serving /metrics and /healthz on %s", self.listen)
        except OSError as exc:
            if self.setup.replay is None:
                raise HerdwatchError(f"daemon.listen {self.listen}: {exc.strerror}") from None
            log.warning("not serving /metrics on %s: %s", self.listen, exc.strerror)
        workers = [asyncio.create_task(self._deliver_loop(n)) for n in self.router.by_name]
        undelivered = 0
        aux = [asyncio.create_task(self._lag_loop())]
        if self.lease is not None:
            aux.append(asyncio.create_task(self.lease.run(self.stop)))
        try:
            if self.setup.replay is not None:
                start, end, speed = self.setup.replay
                await self._replay(start, end, speed)
                # a drill through a notifier that cannot be reached must end too: what is
                # still queued after drain_timeout stays in the outbox for the next run
                if not await self.drain(self.cfg.daemon.drain_timeout):
                    undelivered = self.outbox.depth()
            else:
                loops = [asyncio.create_task(self._poll_loop(n)) for n in self.watcher.source_names]
                loops.append(asyncio.create_task(self._tick_loop()))
                await self.stop.wait()
                for t in loops:
                    t.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
            if self.stop.is_set():
                drained = await self.drain(self.cfg.daemon.drain_timeout)
                if not drained:
                    log.warning(
                        "stopped with %d notification(s) still queued (sent on restart)",
                        self.outbox.depth(),
                    )
        finally:
            self.stop.set()
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.gather(*aux, return_exceptions=True)
            self.outbox.save_state(BOOK_STATE, self.book.to_json())
            if server is not None:
                server.close()
        if self.setup.replay is not None and self.dead_this_run:
            log.error("%d notification(s) dead-lettered", self.dead_this_run)
            return 1
        if undelivered:
            log.error(
                "%d notification(s) not delivered within daemon.drain_timeout (%gs) after the "
                "replay; they stay queued in the outbox",
                undelivered,
                self.cfg.daemon.drain_timeout,
            )
            return 1
        return 0


def finite_speed(text: str) -> float:
    """`--speed`: a positive number, or `max` (as fast as it goes)."""
    if text.strip().lower() == "max":
        return math.inf
    value = float(text)
    if not value > 0:
        raise ValueError("speed must be > 0")
    return value
