"""Generated passwords through herdwatch's real output paths (issue 9, part 2): CLI errors for
Redis, Postgres and Prometheus (password_env, password_file, or inside the URL, where it is
refused), the JSON report of scans against a real Redis (an ACL user with that password) and a
real Postgres, the engine's log records of a failing source, `herdwatch capture`'s directory
and the mail and webhook bodies the alert module renders. The password, raw, percent-encoded
or JSON-escaped, must appear in none of them.

Few examples (each runs the entry point against real servers), derandomized under CI=1 by the
suite's Hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.test_entry_point import run
from tests.sources.prometheus_lab import backfilled_prometheus
from tests.support.servers import PostgresServer, Server, free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "incidents" / "stampede_catalog_1s"
VAR = "HW_PROPERTY_PASSWORD"
SPECIAL = ["@", ":", "/", "%", "%40", "@@", "é", "ü", "€", "中", "\U0001f511"]
PLAIN = "abcdXYZ0189-_.!$*+=~"

SETTINGS = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@st.composite
def passwords(draw: st.DrawFn) -> str:
    """At least four ordinary characters and two of `@ : / %` or non-ASCII, in any order."""
    chars = list(draw(st.text(PLAIN, min_size=4, max_size=10)))
    chars += draw(st.lists(st.sampled_from(SPECIAL), min_size=2, max_size=5))
    return "".join(draw(st.permutations(chars)))


def forms(pw: str) -> set[str]:
    """Every way a leak could spell the password."""
    return {
        pw,
        quote(pw, safe=""),
        quote(pw, safe="/"),
        quote(pw, safe="@:/"),
        json.dumps(pw)[1:-1],
        json.dumps(pw, ensure_ascii=False)[1:-1],
    }


def assert_hidden(pw: str, **outputs: str) -> None:
    for where, text in outputs.items():
        for form in forms(pw):
            assert form not in text, f"{form!r} in {where}: {text[:2000]}"


def one_line(code: int, out: str, err: str) -> None:
    assert (code, out) == (2, ""), (code, err)
    assert err.endswith("\n") and "\n" not in err[:-1], err


def closed_port() -> int:
    return free_port()  # free a moment ago: nothing listens there


@pytest.fixture
def secret_env() -> Iterator[None]:
    yield
    os.environ.pop(VAR, None)


def _config(d: Path, name: str, body: str) -> Path:
    cfg = d / f"{name}.yaml"
    cfg.write_text(body, encoding="utf-8")
    return cfg


@SETTINGS
@given(pw=passwords())
def test_cli_errors_never_show_the_password(pw: str, secret_env: None) -> None:
    os.environ[VAR] = pw
    d = Path(tempfile.mkdtemp(prefix="herdwatch-secret-"))
    (d / "pw").write_text(pw + "\n", encoding="utf-8")
    port = closed_port()
    runs = {
        "redis password_env": ["--config", str(_config(d, "redis", (
            f"sources:\n  redis:\n    url: redis://hw@127.0.0.1:{port}/0\n"
            f"    password_env: {VAR}\n")))],
        "postgres password_file": ["--config", str(_config(d, "postgres", (
            f"sources:\n  postgres:\n    dsn: postgresql://hw@127.0.0.1:{port}/app\n"
            f"    password_file: {d / 'pw'}\n")))],
        "prometheus password_env": ["--config", str(_config(d, "prometheus", (
            f"sources:\n  prometheus:\n    url: http://127.0.0.1:{port}\n    username: hw\n"
            f"    password_env: {VAR}\n")))],
        "redis URL": ["--redis", f"redis://hw:{pw}@127.0.0.1:{port}/0"],
        "postgres URL": ["--postgres", f"postgresql://hw:{quote(pw, safe='')}@127.0.0.1:{port}/a"],
        "prometheus URL": ["--prometheus", f"http://hw:{pw}@127.0.0.1:{port}"],
        "URL in herdwatch.yaml": ["--config", str(_config(d, "inline", (
            f"sources:\n  redis:\n    url: {json.dumps(f'redis://:{pw}@127.0.0.1:{port}/0')}\n"
        )))],
    }  # fmt: skip
    for name, args in runs.items():
        code, out, err = run(["scan", *args, "--duration", "0s"], d)
        one_line(code, out, err)
        assert_hidden(pw, **{name: err})


@pytest.fixture(scope="module")
def acl_redis(redis_server: Server) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.acl_deluser("hwprop")
    client.close()


@SETTINGS
@given(pw=passwords())
def test_json_reports_never_show_the_password(
    pw: str,
    secret_env: None,
    acl_redis: redis.Redis,
    redis_server: Server,
    postgres_server: PostgresServer,
) -> None:
    """A Redis user whose password is `pw` and a Postgres (trust: it takes any password) read
    with it: the JSON report names both sources, never the password; a wrong one is one line."""
    acl_redis.acl_setuser(
        "hwprop", enabled=True, reset_passwords=True, passwords=[f"+{pw}"], keys=["*"],
        commands=["+@all"],
    )  # fmt: skip
    os.environ[VAR] = pw
    d = Path(tempfile.mkdtemp(prefix="herdwatch-secret-"))
    (d / "pw").write_text(pw, encoding="utf-8")
    redis_url = redis_server.url.replace("redis://", "redis://hwprop@")
    cfg = _config(d, "both", (
        f"sources:\n  redis:\n    url: {redis_url}\n    password_env: {VAR}\n"
        f"  postgres:\n    dsn: {postgres_server.dsn}\n    password_file: {d / 'pw'}\n"
    ))  # fmt: skip
    code, out, err = run(["scan", "--config", str(cfg), "--format", "json", "--duration", "0s"], d)
    assert code in (0, 1), err
    names = [s["name"] for s in json.loads(out)["sources"]]
    assert any(n.startswith("redis redis://hwprop@") for n in names), names
    assert_hidden(pw, stdout=out, stderr=err)
    os.environ[VAR] = pw[::-1] + "x"  # the wrong password
    code, out, err = run(["scan", "--config", str(cfg), "--duration", "0s"], d)
    one_line(code, out, err)
    assert "hwprop" in err or "auth" in err.lower(), err
    assert_hidden(pw, wrong_password=err)
    assert_hidden(pw[::-1] + "x", wrong_password=err)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@SETTINGS
@given(pw=passwords())
def test_log_records_of_a_failing_source_never_show_the_password(pw: str, secret_env: None) -> None:
    """The engine logs a source that fails while others go on (a daemon, a discovered scan);
    herdwatch's record factory (installed by the entry point) redacts message and traceback."""
    from herdwatch.cli._app import _redacting_log_records
    from herdwatch.config import RedisConfig
    from herdwatch.engine import Watcher
    from herdwatch.sources.redis_direct import RedisDirectSource

    _redacting_log_records()
    os.environ[VAR] = pw
    url = f"redis://hw@127.0.0.1:{closed_port()}/0"
    source = RedisDirectSource(RedisConfig(url, password_env=VAR), timeout=0.5)
    records = _Records()
    records.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("herdwatch")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        watcher = Watcher([source], rules=[], lookback=None)
        asyncio.run(watcher.poll(time.time(), duration=0, strict=False))
        logging.getLogger("herdwatch.test").error(
            "as a driver might say it: AUTH %s for redis://hw:%s@h:1/0", pw, pw
        )
        try:
            raise ConnectionError(f"cannot connect to redis://hw:{quote(pw, safe='')}@h:1/0")
        except ConnectionError:
            logging.getLogger("herdwatch.test").exception("source failed")
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    assert any("unhealthy" in line for line in records.lines), records.lines
    assert_hidden(pw, logs="\n".join(records.lines))


@pytest.fixture(scope="module")
def prom() -> Iterator[Server]:
    with backfilled_prometheus([FIXTURE]) as server:
        yield server


@settings(SETTINGS, max_examples=3)
@given(pw=passwords())
@example(pw="0000@€")  # requests sent basic auth as latin-1: the capture failed with "not the API"
def test_a_capture_never_holds_the_password(pw: str, secret_env: None, prom: Server) -> None:
    """`herdwatch capture` with basic auth from password_env: its herdwatch.yaml (made to be
    shared), its metrics and what it says hold no form of the password."""
    from herdwatch.sources.replay import load_replay

    window = load_replay(FIXTURE).window()
    assert window is not None
    os.environ[VAR] = pw
    d = Path(tempfile.mkdtemp(prefix="herdwatch-secret-"))
    cfg = _config(d, "capture", (
        f"sources:\n  prometheus:\n    url: {prom.url}\n    username: hw\n"
        f"    password_env: {VAR}\n"
    ))  # fmt: skip
    since, until = f"{window[1] - 120:.0f}", f"{window[1]:.0f}"
    argv = ["capture", "--config", str(cfg), "--since", since, "--until", until, "-o", "out"]
    code, out, err = run(argv, d)
    assert code == 0, err
    files = {p.name: p.read_text("utf-8") for p in (d / "out").iterdir()}
    assert "herdwatch.yaml" in files
    assert_hidden(pw, stdout=out, stderr=err, **files)


@SETTINGS
@given(pw=passwords(), slack=st.booleans())
def test_notifications_never_show_the_password(pw: str, slack: bool, secret_env: None) -> None:
    """A finding whose summary, subject and evidence quote URLs holding the password (and the
    password itself, as a driver might echo it), rendered as the mail and the webhook body the
    notifiers send; the SMTP password comes from password_env, as in a daemon's config."""
    from herdwatch.alert import AlertBook, SmtpNotifier, WebhookNotifier
    from herdwatch.alert._notifiers import _redacted
    from herdwatch.config import SmtpConfig, WebhookConfig
    from herdwatch.model import Finding
    from tests.alert.support import snap, tracked

    os.environ[VAR] = pw
    smtp = SmtpNotifier(SmtpConfig("127.0.0.1", ("oncall@example.com",), "hw@example.com",
                                   username="hw", password_env=VAR))  # fmt: skip
    hook = WebhookNotifier(
        WebhookConfig("http://127.0.0.1:1/hook", format="slack" if slack else "json")
    )
    f = Finding(
        "cache_stampede", 1000.0, 1010.0, "critical",
        f"misses after redis://hw:{pw}@cache:6379/0 refused AUTH {pw}",
        {"source": {"url": f"postgresql://hw:{quote(pw, safe='')}@db/app", "z": 9.5},
         "note": f"password={pw}"},
        signals=("miss_ratio",),
        subject=(("instance", f"redis://hw:{pw}@cache:6379"),),
    )  # fmt: skip
    (n,) = AlertBook().update(snap(1011, tracked(f)))
    mail = smtp.message(n)
    parsed = email.message_from_bytes(mail.as_bytes(), policy=email.policy.default)
    parts = [str(parsed["Subject"])] + [
        p.get_content() for p in parsed.walk() if p.get_content_maintype() == "text"
    ]
    body = json.dumps(_redacted(hook.body(n)), allow_nan=False)
    assert_hidden(pw, mail="\n".join(parts), webhook=body, webhook_parsed=str(json.loads(body)))
