"""Live sources against servers that fail (issue 9): a real Prometheus, Redis and Postgres
stopped mid-scan, answering slowly, dropping the connection after the headers, or answering
errors. Each is one line naming the source (exit 2 from the CLI), never a hang or a traceback;
a cancelled collect (Ctrl-C) returns within half a second."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdwatch.config import PrometheusConfig, RedisConfig
from herdwatch.errors import SourceError
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.prometheus import PrometheusSource
from herdwatch.sources.redis_direct import RedisDirectSource
from herdwatch.sources.replay import load_replay
from tests.sources.faults import FailingProxy, http_server, tcp_server
from tests.sources.prometheus_lab import backfilled_prometheus
from tests.support.servers import Server, start_redis

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "incidents" / "stampede_catalog_1s"
HERDWATCH = [sys.executable, "-m", "herdwatch"]


@pytest.fixture(scope="module")
def prom() -> Iterator[Server]:
    with backfilled_prometheus([FIXTURE]) as server:
        yield server


@pytest.fixture(scope="module")
def window() -> tuple[float, float]:
    w = load_replay(FIXTURE).window()
    assert w is not None
    return w


def _one_line(exc: BaseException, name: str) -> str:
    text = str(exc)
    assert "\n" not in text and text.startswith(f"source {name}: "), text
    return text


# --- Prometheus


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("error", "HTTP Status Code 503"),
        ("drop", "connection was dropped"),
        ("headers", "connection was dropped"),
        ("junk", "not the Prometheus HTTP API"),
        ("nan_values", "answered"),
    ],
)
@pytest.mark.parametrize("after", [0, 3])
def test_prometheus_failing_mid_scan_is_one_line(
    prom: Server, window: tuple[float, float], mode: str, words: str, after: int
) -> None:
    """The real Prometheus answers the first `after` requests, then fails as `mode` says."""
    with FailingProxy(prom.url, after=after, mode=mode) as proxy:
        source = PrometheusSource(PrometheusConfig(url=proxy.url, timeout=5))
        t0 = time.monotonic()
        with pytest.raises(SourceError) as info:
            source.fetch(*window)
        assert time.monotonic() - t0 < 5
    assert words in _one_line(info.value, source.name)


def test_prometheus_that_never_answers_is_a_read_timeout_not_cannot_connect() -> None:
    with tcp_server("silent") as addr:
        source = PrometheusSource(PrometheusConfig(url=f"http://{addr}", timeout=0.5))
        t0 = time.monotonic()
        with pytest.raises(SourceError) as info:
            source.fetch(0.0, 3600.0)
        # one attempt, not two: a read that timed out is not sent again
        assert time.monotonic() - t0 < 0.5 * 2
    text = _one_line(info.value, source.name)
    assert "no answer within 0.5s (read timeout)" in text and "cannot connect" not in text


def test_prometheus_stopped_is_cannot_connect(prom: Server, window: tuple[float, float]) -> None:
    with tcp_server("close") as addr:
        source = PrometheusSource(PrometheusConfig(url=f"http://{addr}", timeout=2))
        with pytest.raises(SourceError, match=r"dropped|cannot connect"):
            source.fetch(*window)


def test_non_numeric_values_are_refused_not_ok_and_empty() -> None:
    body = (
        b'{"status":"success","data":{"resultType":"matrix","result":'
        b'[{"metric":{"__name__":"x"},"values":[[1,"abc"]]}]}}'
    )
    with http_server(body) as url:
        source = PrometheusSource(PrometheusConfig(url=url))
        with pytest.raises(SourceError):
            source.fetch(0.0, 600.0)


def test_since_0_is_refused_before_any_range_query(prom: Server) -> None:
    """`--since 0` at a 1 s step: ~170,000 range queries per family before the bound."""
    with FailingProxy(prom.url, after=10**9, mode="error") as proxy:
        source = PrometheusSource(PrometheusConfig(url=proxy.url))
        with pytest.raises(SourceError, match=r"longer than the 31 days one scan reads.*max_range"):
            source.fetch(0.0, time.time())
        assert proxy.count == 0
        cfg = PrometheusConfig(url=proxy.url, max_range=1e10, max_queries=50)
        source = PrometheusSource(cfg)
        with pytest.raises(SourceError, match=r"more than 50 queries.*--max-queries N"):
            source.fetch(0.0, time.time())
        assert proxy.count <= 50


@pytest.mark.parametrize("command", ["scan", "capture"])
def test_max_range_is_named_by_its_flag_and_the_flag_raises_it(
    prom: Server, window: tuple[float, float], tmp_path: Path, command: str
) -> None:
    from tests.fuzz.test_entry_point import run

    out_dir = ["-o", str(tmp_path / "out")] if command == "capture" else []
    end = window[1]
    since, until = f"{end - 40 * 86400:.0f}", f"{end:.0f}"  # 40 days up to the recorded end
    with FailingProxy(prom.url, after=10**9, mode="error") as proxy:
        argv = [command, "--prometheus", proxy.url, "--since", since, "--until", until, *out_dir]
        code, _, err = run(argv, tmp_path)
        assert code == 2 and err.count("\n") == 1, err
        assert "longer than the 31 days one scan reads" in err
        assert "raise the bound with --max-range DURATION" in err
        assert proxy.count == 0
        # raised past the range, the next bound (queries) is the one that stops it
        code, _, err = run([*argv, "--max-range", "41d", "--max-queries", "3"], tmp_path)
        assert code == 2 and err.count("\n") == 1, err
        assert "more than 3 queries" in err and "--max-queries N" in err
        code, _, err = run([*argv, "--max-range", "soon"], tmp_path)
    assert code == 2
    assert err.startswith(f"herdwatch: herdwatch {command}: Invalid value for '--max-range': ")


def test_an_os_error_naming_a_file_is_one_line_exit_2(
    prom: Server, window: tuple[float, float], tmp_path: Path
) -> None:
    """The entry point's last resort for bad input (`_bad_file`): an OSError that names a file
    the user gave and no command turned into a HerdwatchError (here capture's output directory
    under a regular file, created once the range is read) is one line and exit 2, not exit 3."""
    from tests.fuzz.test_entry_point import run

    (tmp_path / "plain").write_text("a file, not a directory\n")
    out_dir = tmp_path / "plain" / "incident"
    since, until = (f"{t:.0f}" for t in window)
    argv = ["capture", "--prometheus", prom.url, "--since", since, "--until", until]
    code, out, err = run([*argv, "-o", str(out_dir), "-q"], tmp_path)
    assert (code, out, err) == (2, "", f"herdwatch: {out_dir}: Not a directory\n")


def test_cancelled_collect_returns_at_once_from_a_silent_server() -> None:
    with tcp_server("silent") as addr:
        source = PrometheusSource(PrometheusConfig(url=f"http://{addr}", timeout=30))

        async def run() -> float:
            task = asyncio.create_task(source.collect(CollectWindow(0.0, 600.0)))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - t0

        assert asyncio.run(run()) < 0.5


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("flag", "url"),
    [
        ("--prometheus", "http://{addr}"),
        ("--redis", "redis://{addr}/0"),
        ("--postgres", "postgresql://postgres@{addr}/postgres"),
    ],
    ids=["prometheus", "redis", "postgres"],
)
def test_ctrl_c_against_a_silent_server_exits_130_within_half_a_second(flag: str, url: str) -> None:
    """`herdwatch scan` waiting on a server that accepted the connection and says nothing:
    SIGINT is exit 130 and exactly one line on stderr (no blank line before it: stderr is
    no terminal here), within 0.5 s."""
    accepted = threading.Event()
    with tcp_server("silent", accepted=accepted) as addr:
        argv = [*HERDWATCH, "scan", flag, url.format(addr=addr)]
        with subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL) as proc:
            assert proc.stderr is not None
            while not accepted.wait(0.05):
                assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)  # the client is now waiting for an answer (its timeout is 5 s)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            err = proc.stderr.readline()
            said = time.monotonic() - t0
            err += proc.stderr.read()
            proc.wait(10)
            gone = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert err == b"herdwatch: interrupted\n"
    assert said < 0.5
    assert gone < 1.0  # the interpreter's exit (numpy's threads, atexit) after the line


def test_a_discovered_prometheus_that_fails_is_ok_false_and_the_scan_goes_on(
    prom: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery found a Prometheus (its /-/ready answered), then every query fails: the scan
    reads the other sources and reports the Prometheus `ok: false` with why."""
    from herdwatch.cli import _sources
    from tests.fuzz.test_entry_point import run
    from tests.support.servers import free_port

    nothing = f"127.0.0.1:{free_port()}"
    with FailingProxy(prom.url, after=1, mode="error") as proxy:
        monkeypatch.setitem(_sources.DISCOVERY, "prometheus", proxy.url)
        monkeypatch.setitem(_sources.DISCOVERY, "redis", f"redis://{nothing}/0")
        monkeypatch.setitem(_sources.DISCOVERY, "postgres", f"postgresql://{nothing}/postgres")
        monkeypatch.setitem(_sources.DISCOVERY, "postgres_socket", str(tmp_path / "no.sock"))
        code, out, err = run(["scan", "--format", "json", "--duration", "1s"], tmp_path)
        assert proxy.count >= 2  # /-/ready, then the failed queries
    assert code in (0, 1), err
    assert err.startswith(f"discovered: prometheus {proxy.url}"), err
    sources = {s["name"].split()[0]: s for s in json.loads(out)["sources"]}
    assert sources["prometheus"]["ok"] is False
    assert "503" in json.dumps(sources["prometheus"])
    assert sources["host"]["ok"] is True


# --- Redis


def test_redis_silent_dropping_and_erroring_are_one_line() -> None:
    for mode, reply in (("silent", b""), ("close", b""), ("reply", b"-ERR no way\r\n")):
        with tcp_server(mode, reply) as addr:
            source = RedisDirectSource(RedisConfig(f"redis://{addr}/0"), timeout=0.5)
            t0 = time.monotonic()
            with pytest.raises(SourceError) as info:
                asyncio.run(source.collect(CollectWindow(duration=1)))
            assert time.monotonic() - t0 < 3, mode
            _one_line(info.value, source.name)


def test_redis_stopped_mid_scan_is_one_line(tmp_path: Path) -> None:
    with start_redis(workdir=tmp_path) as server:
        source = RedisDirectSource(RedisConfig(server.url), interval=0.1, timeout=1)

        async def run() -> None:
            task = asyncio.create_task(source.collect(CollectWindow(duration=5)))
            await asyncio.sleep(0.5)
            os.kill(server.pid, signal.SIGKILL)
            await task

        t0 = time.monotonic()
        with pytest.raises(SourceError) as info:
            asyncio.run(run())
        assert time.monotonic() - t0 < 4
    _one_line(info.value, source.name)
