"""Postgres faults against a real server and misbehaving loopback ones (issue 9): stopped
mid-scan, silent (connect timeout), dropping the connection, at once or mid-scan: one line
naming the source, exit 2; a discovered Postgres that fails is `ok: false` and the scan goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from herdwatch.config import PostgresConfig
from herdwatch.errors import SourceError
from herdwatch.model import RawData
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.postgres_direct import PostgresDirectSource
from tests.fuzz.test_entry_point import run
from tests.sources.faults import tcp_server
from tests.support.servers import PostgresServer, start_postgres


def _source(dsn: str, timeout: float = 1.0) -> PostgresDirectSource:
    return PostgresDirectSource(
        PostgresConfig(dsn=dsn, sample_interval=0.1), connect_timeout=timeout
    )


def _one_line(exc: BaseException, src: PostgresDirectSource) -> str:
    text = str(exc)
    assert "\n" not in text and text.startswith(f"source {src.name}: "), text
    return text


@contextmanager
def _cuttable_proxy(target: tuple[str, int]) -> Iterator[tuple[str, threading.Event]]:
    """A TCP proxy to `target`; setting the event drops every connection and, from then on,
    closes each new one at once (a load balancer or network that lost the server)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(0.05)
    cut, stop = threading.Event(), threading.Event()
    socks: list[socket.socket] = []

    def pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def serve() -> None:
        while not stop.is_set():
            if cut.is_set():
                for s in socks:
                    # shutdown first: a close() alone does not wake the pump blocked in recv()
                    # on it, so the kernel keeps the connection open and the client waits on
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            if cut.is_set():
                conn.close()
                continue
            up = socket.create_connection(target)
            socks.extend((conn, up))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{lsock.getsockname()[1]}", cut
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()
        lsock.close()


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with start_postgres() as server:
        yield server


def test_stopped_mid_scan_is_one_line_naming_the_source() -> None:
    with start_postgres() as server:
        src = _source(server.dsn)

        async def scan() -> None:
            task = asyncio.create_task(src.collect(CollectWindow(duration=2)))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.stop)
            await task

        with pytest.raises(SourceError) as info:
            asyncio.run(scan())
    assert "stopped answering mid-scan" in _one_line(info.value, src)


def test_a_connection_dropped_mid_scan_is_one_line(pg: PostgresServer) -> None:
    with _cuttable_proxy(("127.0.0.1", pg.port)) as (addr, cut):
        src = _source(f"postgresql://postgres@{addr}/postgres?sslmode=disable")

        async def scan() -> None:
            task = asyncio.create_task(src.collect(CollectWindow(duration=1.5)))
            await asyncio.sleep(0.5)
            cut.set()
            await task

        with pytest.raises(SourceError) as info:
            asyncio.run(scan())
    assert "stopped answering mid-scan" in _one_line(info.value, src)


def test_a_restart_within_the_scan_is_a_gap_not_an_error(pg: PostgresServer) -> None:
    """The other side of the rule: a server that answers again by the end is data (a gap)."""
    with _cuttable_proxy(("127.0.0.1", pg.port)) as (addr, cut):
        src = _source(f"postgresql://postgres@{addr}/postgres?sslmode=disable")

        async def scan() -> RawData:
            task = asyncio.create_task(src.collect(CollectWindow(duration=3)))
            await asyncio.sleep(0.4)
            cut.set()
            await asyncio.sleep(0.3)
            cut.clear()
            return await task

        raw = asyncio.run(scan())
    (status,) = raw.sources
    assert status.ok and "ticks without a connection" in status.detail


@pytest.mark.parametrize("mode", ["silent", "close"])
def test_silent_and_closing_servers_are_one_line_and_bounded(mode: str) -> None:
    with tcp_server(mode) as addr:
        src = _source(f"postgresql://postgres@{addr}/postgres")
        t0 = time.monotonic()
        with pytest.raises(SourceError) as info:
            asyncio.run(src.collect(CollectWindow(duration=1)))
        elapsed = time.monotonic() - t0
    text = _one_line(info.value, src)
    assert elapsed < 3.5, elapsed
    if mode == "silent":
        assert "timeout" in text


def test_a_cancelled_connect_to_a_silent_server_returns_at_once() -> None:
    with tcp_server("silent") as addr:
        src = _source(f"postgresql://postgres@{addr}/postgres", timeout=30)

        async def scan() -> float:
            task = asyncio.create_task(src.collect(CollectWindow(duration=1)))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - t0

        assert asyncio.run(scan()) < 0.5


def test_scan_exits_2_with_one_line(tmp_path: Path) -> None:
    with tcp_server("close") as addr:
        code, _, err = run(
            ["scan", "--postgres", f"postgresql://postgres@{addr}/postgres", "--duration", "1"],
            tmp_path,
        )
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"herdwatch: source postgres postgresql://postgres@{addr}/postgres")


def test_a_discovered_postgres_that_fails_is_ok_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herdwatch.cli import _sources

    with tcp_server("close") as addr:
        nothing = f"127.0.0.1:{_free_port()}"
        monkeypatch.setitem(_sources.DISCOVERY, "prometheus", f"http://{nothing}")
        monkeypatch.setitem(_sources.DISCOVERY, "redis", f"redis://{nothing}/0")
        monkeypatch.setitem(_sources.DISCOVERY, "postgres", f"postgresql://{addr}/postgres")
        monkeypatch.setitem(_sources.DISCOVERY, "postgres_socket", str(tmp_path / "no.sock"))
        code, out, err = run(["scan", "--format", "json", "--duration", "1s"], tmp_path)
    assert code in (0, 1), err
    sources = json.loads(out)["sources"]
    (pgs,) = [s for s in sources if s["name"].startswith("postgres ")]
    assert pgs["ok"] is False and "closed the connection" in json.dumps(pgs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
