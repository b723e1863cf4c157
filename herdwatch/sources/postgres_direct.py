"""Postgres direct source: samples pg_stat_activity, pg_locks, pg_stat_database and the
connection settings every 50-100 ms over one dedicated connection, in postgres_exporter's names.

Series (labels as postgres_exporter sets them, `server` = `host:port` of the DSN):

* `pg_stat_activity_count{datname,server,state}` (gauge): backends per database and state, every
  state including idle, 0 when none;
* `pg_stat_activity_lock_waiting{datname,server}` (gauge): backends waiting on a heavyweight lock
  (`wait_event_type = 'Lock'`);
* `pg_locks_not_granted{datname,server}` (gauge): lock requests not granted, by the waiter's
  database;
* `pg_stat_database_deadlocks{datid,datname,server}`, `pg_stat_database_xact_rollback{...}`
  (counters, no `_total`, as the exporter names them);
* `pg_settings_max_connections{server}`, `pg_settings_superuser_reserved_connections{server}`.

A role with only `pg_monitor` can read all of it. When the sampler cannot get or keep its
connection (the pool it watches is full, the server restarts) that is data, not a crash: the
gauges get NaN at those ticks (the gap) and a refused connection with "too many clients" becomes a
`too_many_clients` LogEvent at the time of the attempt. A first connection that fails for
another reason (bad DSN, auth, no server, a connect timeout) raises `SourceError`, and so does a
server lost mid-scan that has not answered again (a sample, or a "too many clients") by the end
of the window: a stopped server is a failed source, not a quiet one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict

from herdwatch.config import PostgresConfig, redact, resolve_secret
from herdwatch.errors import SourceError
from herdwatch.model import LogEvent, RawData, Series, SourceStatus
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.logs import classify

__all__ = ["PostgresDirectSource", "load_sql"]

APPLICATION_NAME = "herdwatch"
# A sample reads a few catalogue views; anything slower means the server is in trouble, and the
# sampler must not pile up behind it.
STATEMENT_TIMEOUT_MS = 2000
MAX_RETRY_DELAY = 1.0

# metric tag in sample.sql -> (series name, type, label names taken from the row)
_METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "activity": ("pg_stat_activity_count", "gauge", ("datname", "state")),
    "lock_waiting": ("pg_stat_activity_lock_waiting", "gauge", ("datname",)),
    "locks_not_granted": ("pg_locks_not_granted", "gauge", ("datname",)),
    "deadlocks": ("pg_stat_database_deadlocks", "counter", ("datid", "datname")),
    "xact_rollback": ("pg_stat_database_xact_rollback", "counter", ("datid", "datname")),
    "max_connections": ("pg_settings_max_connections", "gauge", ()),
    "superuser_reserved_connections": (
        "pg_settings_superuser_reserved_connections",
        "gauge",
        (),
    ),
}


def load_sql(name: str) -> str:
    """The text of `herdwatch/sources/sql/<name>.sql` (shipped inside the package)."""
    return resources.files("herdwatch.sources").joinpath("sql", f"{name}.sql").read_text("utf-8")


@dataclass(slots=True)
class _Track:
    name: str
    type: str
    labels: tuple[tuple[str, str], ...]
    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)


def _server_label(dsn: str) -> str:
    """`host:port` the DSN points at, as postgres_exporter labels it (libpq defaults apply)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "localhost:5432"
    host = str(parts.get("host") or parts.get("hostaddr") or os.environ.get("PGHOST") or "")
    port = str(parts.get("port") or os.environ.get("PGPORT") or "5432")
    if not host or host.startswith("/"):
        host = "localhost"
    return f"{host}:{port}"


class PostgresDirectSource:
    """Samples one Postgres every `cfg.sample_interval` seconds for `window.duration` (one sample
    when the duration is 0); see the module docstring for the series it returns."""

    def __init__(
        self,
        cfg: PostgresConfig,
        *,
        clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
    ) -> None:
        self._cfg = cfg
        self._clock = clock
        self._connect_timeout = connect_timeout
        self.name = f"postgres {redact(cfg.dsn)}"
        self._server = _server_label(cfg.dsn)
        self._sql = load_sql("sample")

    def _error(self, exc: BaseException, password: str | None) -> str:
        text = str(exc).strip().splitlines()
        msg = text[0].strip() if text else type(exc).__name__
        if password:
            msg = msg.replace(password, "***")
        return redact(msg)

    async def _connect(self, password: str | None) -> psycopg.AsyncConnection[tuple[object, ...]]:
        # keyword parameters override the DSN's; a None password is left out (libpq's default)
        conn = await psycopg.AsyncConnection.connect(
            self._cfg.dsn,
            autocommit=True,
            application_name=APPLICATION_NAME,
            connect_timeout=max(1, math.ceil(self._connect_timeout)),
            password=password,
        )
        try:
            await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def collect(self, window: CollectWindow) -> RawData:
        """Sample for `window.duration` seconds; `since`/`until` do not apply (no history)."""
        password = resolve_secret(
            self._cfg.password_env, self._cfg.password_file, key="sources.postgres.password"
        )
        interval = max(float(self._cfg.sample_interval), 0.01)
        run = _Run(self, password, interval)
        try:
            await run.loop(max(float(window.duration), 0.0))
        finally:
            await run.close()
        return run.result()


class _Run:
    """The state of one collect(): connection, tracks, gap and rejection counts."""

    def __init__(self, src: PostgresDirectSource, password: str | None, interval: float) -> None:
        self.src = src
        self.password = password
        self.interval = interval
        self.conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self.tracks: dict[tuple[object, ...], _Track] = {}
        self.events: list[LogEvent] = []
        self.samples = 0
        self.failed = 0
        self.last_error = ""
        self.last_t = -math.inf
        self.retry_at = 0.0
        self.retry_delay = interval
        # set when a connection that had worked is lost and not regained: the server went away
        # (or stopped answering); cleared by a sample, or by a "too many clients" refusal (data)
        self.gone_since: float | None = None

    async def loop(self, duration: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + duration
        while True:
            await self.tick(loop.time())
            now = loop.time()
            nxt = start + (math.floor((now - start) / self.interval) + 1) * self.interval
            if nxt > end + 1e-9:
                break
            await asyncio.sleep(nxt - now)
        if self.gone_since is not None:
            # A gap the server never came back from is no gap but a source that failed: the
            # scan must not report what it saw before as the whole window.
            lost = f"{self.src._clock() - self.gone_since:.1f} s before the end"
            raise SourceError(
                self.src.name,
                f"the server stopped answering mid-scan ({lost}, {self.samples} samples "
                f"before): {self.last_error}",
            )

    def stamp(self) -> float:
        t = round(self.src._clock(), 3)
        if t <= self.last_t:  # a clock step back must not break strictly increasing timestamps
            t = round(self.last_t + 0.001, 3)
        self.last_t = t
        return t

    async def tick(self, now: float) -> None:
        if self.conn is None:
            if now < self.retry_at:
                self.gap(self.stamp())
                return
            t = self.stamp()
            try:
                self.conn = await self.src._connect(self.password)
            except psycopg.Error as exc:
                self.connect_failed(t, now, exc)
                return
            self.retry_delay = self.interval
        t = self.stamp()
        try:
            cur = await self.conn.execute(self.src._sql)
            rows = await cur.fetchall()
        except psycopg.Error as exc:
            msg = self.src._error(exc, self.password)
            if self.samples == 0 and not isinstance(exc, psycopg.OperationalError):
                raise SourceError(self.src.name, msg) from None
            # The connection is gone or unusable (server restart, admin kill): a gap, then retry.
            self.last_error = msg
            if self.gone_since is None:
                self.gone_since = t
            await self.close()
            self.gap(t)
            return
        self.record(t, rows)

    def connect_failed(self, t: float, now: float, exc: psycopg.Error) -> None:
        msg = self.src._error(exc, self.password)
        self.last_error = msg
        rejected = classify(msg) == "too_many_clients"
        if not rejected and self.samples == 0 and not self.events:
            raise SourceError(self.src.name, msg)
        if rejected:
            self.events.append(LogEvent(t, "too_many_clients", f"{self.src.name} (sampler)", msg))
            self.gone_since = None  # the server answers: it is full, which is data
        elif self.gone_since is None:
            self.gone_since = t
        self.gap(t)
        self.retry_at = now + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, MAX_RETRY_DELAY)

    def gap(self, t: float) -> None:
        self.failed += 1
        for tr in self.tracks.values():
            if tr.type == "gauge":
                tr.t.append(t)
                tr.v.append(math.nan)

    def record(self, t: float, rows: list[tuple[object, ...]]) -> None:
        self.samples += 1
        self.gone_since = None
        server = self.src._server
        for row in rows:
            metric, datname, state, datid, value = row
            tr = self.tracks.get(row[:4])
            if tr is None:
                name, typ, keys = _METRICS[str(metric)]
                have = {"datname": datname, "state": state, "datid": datid}
                labels = tuple(
                    sorted([(k, str(have[k] or "")) for k in keys] + [("server", server)])
                )
                tr = self.tracks[row[:4]] = _Track(name, typ, labels)
            tr.t.append(t)
            tr.v.append(float(value) if isinstance(value, int | float) else math.nan)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            # closing a broken connection may fail too; nothing to report
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    def result(self) -> RawData:
        series = [
            Series(
                tr.name,
                tr.labels,
                np.asarray(tr.t, dtype=np.float64),
                np.asarray(tr.v, dtype=np.float64),
                family=tr.name,
                type=tr.type,
            )
            for tr in self.tracks.values()
        ]
        detail = f"{self.samples} samples every {self.interval * 1000:.0f} ms"
        if self.failed:
            rejected = len(self.events)
            detail += f"; {self.failed} ticks without a connection"
            if rejected:
                detail += f" ({rejected} connection attempts refused: too many clients)"
            elif self.last_error:
                detail += f" ({self.last_error})"
        return RawData(
            series=series,
            events=list(self.events),
            sources=[SourceStatus(self.src.name, True, detail)],
        )
