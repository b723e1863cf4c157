"""The Postgres direct sampler against a real PostgreSQL 15 (own cluster on a free port): its
values equal a direct count, a pg_monitor-only role sees the same, a refused or lost connection
is a gap plus a rejection, and errors name the source without the password."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from herdwatch.config import PostgresConfig
from herdwatch.errors import SourceError
from herdwatch.model import RawData, Series
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.postgres_direct import PostgresDirectSource, load_sql
from tests.support.servers import PostgresServer, free_port, start_postgres

DB = "hw_sample"
MONITOR = "hw_monitor"  # only pg_monitor
PLAIN = "hw_plain"  # no monitoring rights at all
SECRET_ROLE = "hw_secret"  # must authenticate with a password (scram)
SECRET = "s3cr3t-pw-7f2a"
STATES = {
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
}


def _dsn(pg: PostgresServer, user: str = "postgres", db: str = "postgres") -> str:
    return f"postgresql://{user}@127.0.0.1:{pg.port}/{db}?sslmode=disable"


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """An own cluster (max_connections 20): these tests fill its pool and change pg_hba."""
    with start_postgres(max_connections=20) as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
            conn.execute(f"CREATE ROLE {MONITOR} LOGIN IN ROLE pg_monitor")
            conn.execute(f"CREATE ROLE {PLAIN} LOGIN")
            conn.execute(f"CREATE ROLE {SECRET_ROLE} LOGIN IN ROLE pg_monitor PASSWORD '{SECRET}'")
        # scram for hw_secret only, ahead of the trust lines; initdb's file is the postgres user's
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(f"host all {SECRET_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        with psycopg.connect(_dsn(server, db=DB), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int primary key)")
            conn.execute("INSERT INTO t VALUES (1), (2)")
        yield server


async def _wait_for(pg: PostgresServer, sql: str, want: object) -> None:
    """Poll until `sql` returns `want` (coordination with the server, not a fixed sleep)."""
    deadline = time.monotonic() + 10.0
    async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(sql)).fetchone()
            if row is not None and row[0] == want:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{sql!r} never returned {want!r} (last {row!r})")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _workload(pg: PostgresServer) -> AsyncIterator[None]:
    """A steady mix in hw_sample: 3 idle, 2 sleeping (active), a lock holder idle in
    transaction and a backend waiting for its lock (active, wait_event_type Lock)."""
    dsn = _dsn(pg, db=DB)
    conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(7)]
    tasks: list[asyncio.Task[object]] = []
    try:
        holder, waiter = conns[5], conns[6]
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        for c in conns[3:5]:
            tasks.append(asyncio.create_task(c.execute("SELECT pg_sleep(60)")))
        tasks.append(asyncio.create_task(waiter.execute("SELECT count(*) FROM t")))
        await _wait_for(
            pg,
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}' AND state = 'active'",
            3,
        )
        await _wait_for(
            pg,
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}'"
            " AND wait_event_type = 'Lock'",
            1,
        )
        yield
    finally:
        async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as admin:
            await admin.execute(
                f"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = '{DB}'"
                " AND state = 'active'"
            )
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in conns:
            await c.close()
        await _wait_for(pg, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}'", 0)


async def _direct(pg: PostgresServer) -> dict[str, float]:
    """The same quantities, counted with plain SQL as a superuser."""
    out: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as conn:
        for state in STATES:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = %s",
                (DB, state),
            )
            out[state] = float((await cur.fetchone() or (0,))[0])
        for key, sql in {
            "lock_waiting": "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND wait_event_type = 'Lock'",
            "not_granted": "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a"
            " ON a.pid = l.pid WHERE NOT l.granted AND a.datname = %s",
            "deadlocks": "SELECT deadlocks FROM pg_stat_database WHERE datname = %s",
            "rollbacks": "SELECT xact_rollback FROM pg_stat_database WHERE datname = %s",
        }.items():
            out[key] = float((await (await conn.execute(sql, (DB,))).fetchone() or (0,))[0])
        for key in ("max_connections", "superuser_reserved_connections"):
            row = await (await conn.execute(f"SHOW {key}")).fetchone()
            out[key] = float(row[0]) if row else math.nan
    return out


def _one(raw: RawData, name: str, **labels: str) -> Series:
    found = [
        s for s in raw.series if s.name == name and all(s.label(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, [s.labels for s in raw.series if s.name == name])
    return found[0]


def _sampled(raw: RawData, port: int) -> dict[str, np.ndarray]:
    server = f"127.0.0.1:{port}"
    got = {
        st: _one(raw, "pg_stat_activity_count", datname=DB, state=st, server=server).values
        for st in STATES
    }
    got["lock_waiting"] = _one(raw, "pg_stat_activity_lock_waiting", datname=DB).values
    got["not_granted"] = _one(raw, "pg_locks_not_granted", datname=DB).values
    got["deadlocks"] = _one(raw, "pg_stat_database_deadlocks", datname=DB).values
    got["rollbacks"] = _one(raw, "pg_stat_database_xact_rollback", datname=DB).values
    got["max_connections"] = _one(raw, "pg_settings_max_connections", server=server).values
    got["superuser_reserved_connections"] = _one(
        raw, "pg_settings_superuser_reserved_connections", server=server
    ).values
    return got


async def _collect(pg: PostgresServer, user: str, duration: float, **kw: object) -> RawData:
    cfg = PostgresConfig(dsn=_dsn(pg, user), **kw)  # type: ignore[arg-type]
    return await PostgresDirectSource(cfg).collect(CollectWindow(duration=duration))


async def test_sampled_values_equal_a_direct_count(pg: PostgresServer) -> None:
    async with _workload(pg):
        raw = await _collect(pg, "postgres", 0.6)
        want = await _direct(pg)
    got = _sampled(raw, pg.port)
    assert want["active"] == 3 and want["idle"] == 3 and want["idle in transaction"] == 1
    for key, expected in want.items():
        assert np.all(got[key] == expected), (key, got[key], expected)
    # the exporter's label set: every database x every state, sorted labels, gauges
    acts = [s for s in raw.series if s.name == "pg_stat_activity_count"]
    assert {s.label("state") for s in acts} == STATES
    assert {s.label("datname") for s in acts} >= {"postgres", DB, "template1"}
    assert all([k for k, _ in s.labels] == ["datname", "server", "state"] for s in acts)
    assert all(s.type == "gauge" and s.family == s.name for s in acts)
    dl = _one(raw, "pg_stat_database_deadlocks", datname=DB)
    assert dl.type == "counter" and [k for k, _ in dl.labels] == ["datid", "datname", "server"]


async def test_timestamps_are_sample_times_in_ms(pg: PostgresServer) -> None:
    before = time.time()
    raw = await _collect(pg, "postgres", 1.0, sample_interval=0.05)
    after = time.time()
    s = _one(raw, "pg_settings_max_connections")
    t = s.timestamps
    assert before - 0.001 <= t[0] and t[-1] <= after + 0.001
    assert np.all(np.diff(t) > 0)
    assert np.allclose(t * 1000, np.round(t * 1000), atol=1e-3)
    assert 15 <= len(t) <= 22  # 1 s at 50 ms: 21 ticks, a few may be skipped on a busy box
    assert 0.04 <= float(np.median(np.diff(t))) <= 0.07
    # every series is sampled at the same instants
    assert all(np.array_equal(x.timestamps, t) for x in raw.series)
    assert raw.sources[0].ok and "samples every 50 ms" in raw.sources[0].detail


async def test_counters_follow_real_deadlocks_and_rollbacks(pg: PostgresServer) -> None:
    dsn = _dsn(pg, db=DB)
    before = await _direct(pg)
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as a,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as b,
    ):
        for c in (a, b):
            await c.execute("SET deadlock_timeout = '50ms'")
            await c.execute("BEGIN")
        await a.execute("UPDATE t SET id = id WHERE id = 1")
        await b.execute("UPDATE t SET id = id WHERE id = 2")
        results = await asyncio.gather(
            a.execute("UPDATE t SET id = id WHERE id = 2"),
            b.execute("UPDATE t SET id = id WHERE id = 1"),
            return_exceptions=True,
        )
        assert sum(isinstance(r, psycopg.errors.DeadlockDetected) for r in results) == 1
        for c in (a, b):
            await c.execute("ROLLBACK")
    await _wait_for(
        pg, f"SELECT deadlocks FROM pg_stat_database WHERE datname = '{DB}'",
        int(before["deadlocks"]) + 1,
    )  # fmt: skip
    raw = await _collect(pg, "postgres", 0.3)
    after = await _direct(pg)
    got = _sampled(raw, pg.port)
    assert after["deadlocks"] == before["deadlocks"] + 1
    assert after["rollbacks"] >= before["rollbacks"] + 2
    assert got["deadlocks"][-1] == after["deadlocks"]
    assert got["rollbacks"][-1] == after["rollbacks"]


async def test_a_pg_monitor_only_role_sees_what_a_superuser_sees(pg: PostgresServer) -> None:
    async with _workload(pg):
        monitor = _sampled(await _collect(pg, MONITOR, 0.3), pg.port)
        plain = _sampled(await _collect(pg, PLAIN, 0.3), pg.port)
        want = await _direct(pg)
    for key, expected in want.items():
        assert np.all(monitor[key] == expected), (key, monitor[key], expected)
    # without pg_monitor other sessions' states are hidden: the check above can fail
    assert plain["active"][-1] < want["active"]


async def test_a_full_pool_is_data_and_a_lost_connection_a_gap(pg: PostgresServer) -> None:
    """hw_monitor is not a superuser: once 17 of the 20 slots are taken it is refused
    ("remaining connection slots are reserved"); superusers still get the reserved 3."""
    src = PostgresDirectSource(PostgresConfig(dsn=_dsn(pg, MONITOR)))
    app = "application_name = 'herdwatch'"
    fillers: list[psycopg.AsyncConnection[tuple[object, ...]]] = []
    task = asyncio.create_task(src.collect(CollectWindow(duration=4.0)))
    try:
        await _wait_for(pg, f"SELECT count(*) FROM pg_stat_activity WHERE {app}", 1)
        for _ in range(17):  # the sampler + 17 = 18 slots in use
            fillers.append(await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True))
        await fillers[0].execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {app}"
        )
        log = Path(pg.log_path)
        deadline = time.monotonic() + 5
        while "remaining connection slots are reserved" not in await asyncio.to_thread(
            log.read_text
        ):
            assert time.monotonic() < deadline, "the sampler never tried to reconnect"
            await asyncio.sleep(0.02)
        for c in fillers[:6]:
            await c.close()
        await _wait_for(pg, f"SELECT count(*) FROM pg_stat_activity WHERE {app}", 1)
        raw = await task
    finally:
        for c in fillers:
            await c.close()
    rejections = [e for e in raw.events if e.kind == "too_many_clients"]
    assert rejections and all(e.where == f"{src.name} (sampler)" for e in rejections)
    assert "reserved" in rejections[0].message
    busy = _one(raw, "pg_stat_activity_count", datname="postgres", state="idle").values
    gap = np.flatnonzero(np.isnan(busy))
    assert len(gap) >= 1
    assert np.isfinite(busy[: gap[0]]).all() and np.isfinite(busy[gap[-1] + 1 :]).any()
    # after reconnecting it sees the pool as it now is: itself + the 11 fillers left open
    total = sum(
        s.values for s in raw.series if s.name == "pg_stat_activity_count" and s.label("datname")
    )
    assert total[-1] == 1 + len(fillers) - 6
    t_rej = rejections[0].timestamp
    max_t = _one(raw, "pg_settings_max_connections").timestamps
    assert max_t[gap[0]] <= t_rej <= max_t[gap[-1]]
    # counters are not NaN-filled: the gap shows as a longer interval
    assert np.isfinite(_one(raw, "pg_stat_database_deadlocks", datname=DB).values).all()
    assert raw.sources[0].ok and "refused" in raw.sources[0].detail


async def test_refused_from_the_start_gives_rejections_and_no_series(pg: PostgresServer) -> None:
    fillers = [await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) for _ in range(17)]
    try:
        raw = await _collect(pg, MONITOR, 0.5)
    finally:
        for c in fillers:
            await c.close()
    assert raw.series == []
    assert len(raw.events) >= 2 and {e.kind for e in raw.events} == {"too_many_clients"}
    assert raw.sources[0].ok


async def test_errors_name_the_source_and_never_the_password(
    pg: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("wrong-" + SECRET + "\n")
    dsn = _dsn(pg, SECRET_ROLE)
    with pytest.raises(SourceError) as err:
        await PostgresDirectSource(PostgresConfig(dsn=dsn, password_file=str(secret_file))).collect(
            CollectWindow()
        )
    text = str(err.value)
    assert text.startswith(f"source postgres {dsn}: ") and "\n" not in text
    assert "password authentication failed" in text and SECRET not in text
    # a password inside the DSN itself is redacted from the name and the message
    leaky = f"postgresql://{SECRET_ROLE}:wrong-{SECRET}@127.0.0.1:{pg.port}/postgres"
    with pytest.raises(SourceError) as err2:
        await PostgresDirectSource(PostgresConfig(dsn=leaky)).collect(CollectWindow())
    assert SECRET not in str(err2.value) and "***" in str(err2.value)
    # nothing listening
    port = free_port()
    with pytest.raises(SourceError) as err3:
        await PostgresDirectSource(
            PostgresConfig(dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres")
        ).collect(CollectWindow())
    assert f"127.0.0.1:{port}" in str(err3.value) and "\n" not in str(err3.value)
    # the right password from the environment works
    monkeypatch.setenv("HW_TEST_PG_PASSWORD", SECRET)
    raw = await PostgresDirectSource(
        PostgresConfig(dsn=dsn, password_env="HW_TEST_PG_PASSWORD")
    ).collect(CollectWindow())
    assert SECRET not in repr(raw.sources) and raw.sources[0].ok
    assert _one(raw, "pg_settings_max_connections").values[0] == 20


def test_sql_ships_inside_the_package() -> None:
    sql = load_sql("sample")
    assert "pg_stat_activity" in sql and "pg_locks" in sql and "pg_stat_database" in sql
