"""PrometheusSource against real Prometheus servers: chunking, overrides, auth, TLS, errors."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import http.server
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import requests
import yaml

from herdwatch.config import PrometheusConfig
from herdwatch.errors import ConfigError, SourceError
from herdwatch.model import RawData
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.prometheus import (
    PrometheusSource,
    _chunks,
    _family_matchers,
    _phase,
    _snap,
    is_promql,
    scan_overrides,
)
from herdwatch.sources.replay import load_replay
from tests.sources.prometheus_lab import INCIDENTS, backfill, backfilled_prometheus
from tests.support.servers import Server, free_port

FIXTURE = INCIDENTS / "stampede_catalog_1s"
USER, PASSWORD, TOKEN = "herd", "s3cret-Pa55", "tok-7f3a9c"
#: a second user whose name and password are not latin-1
UTF8_USER, UTF8_PASSWORD = "hérd-中", "pä€ss@:/%-\U0001f511"


@pytest.fixture(scope="module")
def prom() -> Iterator[Server]:
    with backfilled_prometheus([FIXTURE]) as server:
        yield server


@pytest.fixture(scope="module")
def window() -> tuple[float, float]:
    w = load_replay(FIXTURE).window()
    assert w is not None
    return w


def _keyed(raw: RawData) -> dict[tuple[str, tuple[tuple[str, str], ...]], object]:
    return {(s.name, s.labels): s for s in raw.series}


# ------------------------------------------------------------------------------ pure parts


def test_promql_or_selector() -> None:
    assert not is_promql("redis_keyspace_hits_total")
    assert not is_promql('herdcache_requests_total{result="hit"}')
    assert is_promql("sum without (instance) (myapp_hits_total)")
    assert is_promql("rate(x[5m])")
    assert scan_overrides(
        {"cache_hits": "sum(x_total)", "db_latency": "sum by (le) (q_bucket)", "requests": "y"}
    ) == {
        "cache_hits": "herdwatch:cache_hits",
        "db_latency": "herdwatch:db_latency_bucket",
        "requests": "y",
    }


@pytest.mark.parametrize(("points", "max_points"), [(1, 10), (10, 10), (11, 10), (25_001, 10_000)])
def test_chunks_cover_the_grid_without_overlap(points: int, max_points: int) -> None:
    start, step = 1_700_000_000.25, 15.0
    end = start + (points - 1) * step
    chunks = _chunks(start, end, step, max_points)
    grid: list[float] = []
    for a, b in chunks:
        n = round((b - a) / step) + 1
        assert n <= max_points
        grid += [a + i * step for i in range(n)]
    assert grid == pytest.approx([start + i * step for i in range(points)])


def test_step_and_phase_from_sample_times() -> None:
    assert _snap(15.001) == 15.0 and _snap(1.0) == 1.0 and _snap(0.5) == 0.5
    assert _snap(0.996) == 1.0 and _snap(0.97) == 0.97
    stamps = (
        1_700_000_010 + np.arange(50) * 15.0 + 3.2
    )  # a multiple of 15, then 3.2 s + np.linspace(-0.01, 0.01, 50)
    assert _phase(stamps, 15.0) == pytest.approx(3.2, abs=0.02)
    # a phase next to the wrap-around is not averaged into the middle
    wrap = 1_700_000_000 + np.arange(50) * 1.0 + np.where(np.arange(50) % 2, 0.01, 0.99)
    assert min(_phase(wrap, 1.0), 1 - _phase(wrap, 1.0)) < 0.02


# ------------------------------------------------------------------------------ real server


def test_fetch_reads_the_families_at_the_scrape_step(
    prom: Server, window: tuple[float, float]
) -> None:
    source = PrometheusSource(PrometheusConfig(url=prom.url))
    raw = source.fetch(*window)
    assert source.step == 1.0
    fams = {(s.family, s.type) for s in raw.series}
    assert ("redis_keyspace_hits", "counter") in fams
    assert ("db_query_duration_seconds", "histogram") in fams
    assert ("pg_stat_activity_count", "gauge") in fams
    names = {s.name for s in raw.series}
    assert {"db_query_duration_seconds_bucket", "db_query_duration_seconds_count"} <= names
    status = raw.sources[0]
    assert status.ok and status.name == f"prometheus {prom.url}"
    assert "herdcache_requests_total" in status.detail  # absent families are named


def test_chunked_queries_give_the_same_samples(prom: Server, window: tuple[float, float]) -> None:
    whole = PrometheusSource(PrometheusConfig(url=prom.url)).fetch(*window)
    small = PrometheusSource(PrometheusConfig(url=prom.url), max_points=97).fetch(*window)
    a, b = _keyed(whole), _keyed(small)
    assert a.keys() == b.keys()
    for key, s in a.items():
        t = b[key]
        np.testing.assert_array_equal(s.timestamps, t.timestamps)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(s.values, t.values)  # type: ignore[attr-defined]


async def test_collect_reads_the_window(prom: Server, window: tuple[float, float]) -> None:
    lo, hi = window
    source = PrometheusSource(PrometheusConfig(url=prom.url))
    raw = await source.collect(CollectWindow(since=lo + 600, until=lo + 900))
    span = raw.window()
    assert span is not None and lo + 600 <= span[0] < lo + 602 and hi > span[1] >= lo + 898


@pytest.mark.parametrize("offset", [600.0, 601.4])
def test_a_tail_fetch_reads_the_same_samples_in_one_request(
    prom: Server, window: tuple[float, float], offset: float
) -> None:
    """A daemon's poll after a full fetch (a short window within a minute of it) reads raw
    samples in one request; they equal what a full fetch of the same window reads."""
    lo, _ = window
    polling = PrometheusSource(PrometheusConfig(url=prom.url))
    polling.fetch(lo, lo + 900)
    since, until = lo + offset, lo + offset + 20
    tail = polling.fetch(since, until)
    # one request per set of label matchers among the families (none, result="hit", ...)
    assert polling._queries == len({_family_matchers(q.text)[1] for q in polling.queries()}) < 5
    full = PrometheusSource(PrometheusConfig(url=prom.url)).fetch(since, until)
    a, b = _keyed(tail), _keyed(full)
    assert a.keys() == b.keys() and len(a) > 10
    for key, s in a.items():
        t = b[key]
        np.testing.assert_array_equal(s.timestamps, t.timestamps)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(s.values, t.values)  # type: ignore[attr-defined]
    assert tail.sources[0].detail == full.sources[0].detail
    # past the tail's length it is a full fetch again
    polling.fetch(lo, lo + 300)
    assert polling._queries > 3


def test_selector_and_promql_overrides(prom: Server, window: tuple[float, float]) -> None:
    overrides = {
        "requests": 'http_requests_total{code="200"}',
        "cache_misses": "sum without (instance, job) (redis_keyspace_misses_total)",
    }
    raw = PrometheusSource(PrometheusConfig(url=prom.url), overrides).fetch(*window)
    reqs = [s for s in raw.series if s.family == "http_requests"]
    assert reqs and all(s.label("code") == "200" for s in reqs)
    summed = [s for s in raw.series if s.name == "herdwatch:cache_misses"]
    assert len(summed) == 1 and summed[0].type == "unknown"
    plain = [s for s in raw.series if s.name == "redis_keyspace_misses_total"]
    assert not plain  # the override replaces the default family
    # the summed counter is the sum of the raw ones on the same grid
    replay = [s for s in load_replay(FIXTURE).series if s.name == "redis_keyspace_misses_total"]
    assert summed[0].values[-1] == pytest.approx(sum(s.values[-1] for s in replay), rel=1e-3)


def test_a_range_with_no_data_is_ok_and_empty(prom: Server) -> None:
    source = PrometheusSource(PrometheusConfig(url=prom.url))
    raw = source.fetch()  # the last hour: the backfilled data is older
    assert raw.series == [] and raw.sources[0].ok
    assert "no data for redis_keyspace_hits_total" in raw.sources[0].detail


def test_connection_refused_is_one_line_source_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(SourceError) as exc:
        PrometheusSource(PrometheusConfig(url=url, timeout=5)).fetch(0.0, 3600.0)
    assert time.monotonic() - t0 < 5
    assert str(exc.value) == f"source prometheus {url}: cannot connect (connection refused)"


def test_bad_promql_override_is_one_line_source_error(
    prom: Server, window: tuple[float, float]
) -> None:
    source = PrometheusSource(PrometheusConfig(url=prom.url), {"requests": "sum(rate(x[5m]"})
    with pytest.raises(SourceError, match="400") as exc:
        source.fetch(*window)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"source prometheus {prom.url}")


def test_empty_range_is_a_source_error(prom: Server) -> None:
    with pytest.raises(SourceError, match="empty time range"):
        PrometheusSource(PrometheusConfig(url=prom.url)).fetch(100.0, 100.0)


# ------------------------------------------------------------------------------ auth and TLS


def _bcrypt(password: str) -> str:
    """A bcrypt hash from the system's libcrypt (Prometheus' web config wants bcrypt)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt"))
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.restype = ctypes.c_char_p
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    return str(lib.crypt(password.encode(), salt).decode())


@dataclass(frozen=True)
class Secured:
    url: str
    ca_file: str
    workdir: Path


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    """A real Prometheus with TLS (a self-signed certificate) and basic auth, serving the
    backfilled fixture."""
    wd = Path(tempfile.mkdtemp(prefix="herdwatch-promtls-"))
    cert, key = wd / "cert.pem", wd / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    web = {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {USER: _bcrypt(PASSWORD), UTF8_USER: _bcrypt(UTF8_PASSWORD)},
    }
    (wd / "web.yml").write_text(yaml.safe_dump(web))
    (wd / "prometheus.yml").write_text("global: {scrape_interval: 1s}\n")
    tsdb = wd / "tsdb"
    backfill(FIXTURE, tsdb)
    port = free_port()
    log = (wd / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={wd / 'prometheus.yml'}",
         f"--storage.tsdb.path={tsdb}", "--storage.tsdb.retention.time=3650d",
         f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={wd / 'web.yml'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(requests.RequestException):
                r = requests.get(
                    f"{url}/-/ready", auth=(USER, PASSWORD), verify=str(cert), timeout=1
                )
                if r.status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, (
                wd / "prometheus.log"
            ).read_text()[-2000:]
            time.sleep(0.05)
        yield Secured(url, str(cert), wd)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(wd, ignore_errors=True)


def test_basic_auth_and_ca_file(
    secured: Secured, window: tuple[float, float], tmp_path: Path
) -> None:
    env = {"PROM_PW": PASSWORD}
    cfg = PrometheusConfig(
        url=secured.url, username=USER, password_env="PROM_PW", ca_file=secured.ca_file
    )
    raw = PrometheusSource(cfg, environ=env).fetch(*window)
    assert any(s.family == "redis_keyspace_hits" for s in raw.series)
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    cfg2 = PrometheusConfig(
        url=secured.url, username=USER, password_file=str(pw_file), ca_file=secured.ca_file
    )
    assert len(PrometheusSource(cfg2).fetch(*window).series) == len(raw.series)


def test_basic_auth_is_sent_in_utf8(secured: Secured, window: tuple[float, float]) -> None:
    """requests encodes a str user or password as latin-1: "€" failed before any request, and
    the error blamed the server ("not the Prometheus HTTP API")."""
    cfg = PrometheusConfig(
        url=secured.url, username=UTF8_USER, password_env="PROM_PW", ca_file=secured.ca_file
    )
    raw = PrometheusSource(cfg, environ={"PROM_PW": UTF8_PASSWORD}).fetch(*window)
    assert any(s.family == "redis_keyspace_hits" for s in raw.series)
    with pytest.raises(SourceError, match="401") as exc:
        PrometheusSource(cfg, environ={"PROM_PW": UTF8_PASSWORD + "x"}).fetch(*window)
    assert UTF8_PASSWORD not in str(exc.value)


def test_wrong_password_is_401_without_the_password(
    secured: Secured, window: tuple[float, float]
) -> None:
    wrong = "not-" + PASSWORD
    cfg = PrometheusConfig(
        url=secured.url, username=USER, password_env="PROM_PW", ca_file=secured.ca_file
    )
    with pytest.raises(SourceError, match="401") as exc:
        PrometheusSource(cfg, environ={"PROM_PW": wrong}).fetch(*window)
    assert wrong not in str(exc.value) and "\n" not in str(exc.value)


def test_untrusted_certificate_and_insecure_skip_verify(
    secured: Secured, window: tuple[float, float]
) -> None:
    env = {"PROM_PW": PASSWORD}
    cfg = PrometheusConfig(url=secured.url, username=USER, password_env="PROM_PW")
    with pytest.raises(SourceError, match="TLS error"):
        PrometheusSource(cfg, environ=env).fetch(*window)
    insecure = PrometheusConfig(
        url=secured.url, username=USER, password_env="PROM_PW", insecure_skip_verify=True
    )
    # filterwarnings=error: an InsecureRequestWarning would fail this test
    assert PrometheusSource(insecure, environ=env).fetch(*window).series
    # Several fetches at once, each with its own thread pool: no request may warn, whatever the
    # interleaving (warnings.catch_warnings() per request used to lose its filter to another
    # thread's exit). Warnings raised in the workers surface here as errors.
    sources = [PrometheusSource(insecure, environ=env, workers=4) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(sources)) as pool:
        fetched = list(pool.map(lambda s: s.fetch(*window), sources))
    assert all(raw.series for raw in fetched)


def test_missing_password_variable_is_a_config_error(secured: Secured) -> None:
    cfg = PrometheusConfig(url=secured.url, username=USER, password_env="HW_NO_SUCH_VARIABLE")
    with pytest.raises(ConfigError, match="HW_NO_SUCH_VARIABLE"):
        PrometheusSource(cfg, environ={}).fetch(0.0, 60.0)


class _BearerProxy(http.server.BaseHTTPRequestHandler):
    """Forwards GETs to `upstream` only with `Authorization: Bearer TOKEN`, else 401."""

    upstream = ""
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        if auth != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        with urllib.request.urlopen(self.upstream + self.path, timeout=10) as resp:
            body = resp.read()
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_bearer_token(prom: Server, window: tuple[float, float], tmp_path: Path) -> None:
    handler = type("Proxy", (_BearerProxy,), {"upstream": prom.url, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        raw = PrometheusSource(PrometheusConfig(url=url, bearer_token_file=str(token_file))).fetch(
            *window
        )
        assert raw.series and set(handler.seen) == {f"Bearer {TOKEN}"}
        with pytest.raises(SourceError, match="401") as exc:
            PrometheusSource(
                PrometheusConfig(url=url, bearer_token_env="TOK"), environ={"TOK": "nope"}
            ).fetch(*window)
        assert "nope" not in str(exc.value)
    finally:
        server.shutdown()
        server.server_close()


def test_families_table_is_the_one_signals_derives_from() -> None:
    """sources.families is below signals (sources may not import signals); until signals.py
    imports its table and selector parser from there, they must stay the same."""
    from herdwatch import signals
    from herdwatch.sources import families

    assert families.DEFAULT_FAMILIES == signals.DEFAULT_FAMILIES
    for text in ["x_total", 'herdcache_requests_total{result="hit"}',
                 'a{b=~"c|d", e!="f"}', "ns:rule:rate5m"]:  # fmt: skip
        assert str(families.parse_selector(text)) == str(signals.parse_selector(text))
    for bad in ["sum(x)", 'x{b="c"', "rate(x[5m])"]:
        with pytest.raises(ConfigError):
            families.parse_selector(bad)
        with pytest.raises(ConfigError):
            signals.parse_selector(bad)
