"""Hostile input against the real `herdwatch` entry point (issue 9).

Hypothesis mutates small valid inputs (OpenMetrics, logs, herdwatch.yaml, command lines):
truncations, byte flips, huge numbers, NaN/Inf, odd Unicode, deep nesting, YAML aliases.
Every outcome must be exit 0, 1 or 2 with at most one line on stderr: never 3, never a
traceback, never a hang past the bound, never the secret the config names.

`make test` runs the short profile (a few dozen examples, derandomized in CI); `make fuzz`
runs `HERDWATCH_FUZZ=long` (thousands of examples, minutes). The examples call the console
script's function in-process (`herdwatch.__main__.main`, what the `herdwatch` script runs);
one test also runs the script as a process.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import herdwatch.cli._sources
from herdwatch.__main__ import main
from tests.support.servers import free_port

LONG = os.environ.get("HERDWATCH_FUZZ") == "long"
EXAMPLES = int(os.environ.get("HERDWATCH_FUZZ_EXAMPLES", 3000 if LONG else 25))
#: no single example may take longer (a hang is a failure, not a slow test)
BOUND_S = 20.0
SECRET = "Fz9@:/%é-secret"

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

T0 = 1_764_000_000
BASE_OM = "\n".join(
    ["# TYPE redis_keyspace_hits counter"]
    + [f"redis_keyspace_hits_total {100 + 7 * i} {T0 + i}" for i in range(30)]
    + ["# TYPE redis_keyspace_misses counter"]
    + [f"redis_keyspace_misses_total {10 + (i > 20) * 50 * i} {T0 + i}" for i in range(30)]
    + ["# TYPE db_query_duration_seconds histogram"]
    + [
        line
        for i in range(30)
        for line in (
            f'db_query_duration_seconds_bucket{{le="0.1"}} {5 * i} {T0 + i}',
            f'db_query_duration_seconds_bucket{{le="+Inf"}} {6 * i} {T0 + i}',
            f"db_query_duration_seconds_count {6 * i} {T0 + i}",
            f"db_query_duration_seconds_sum {0.3 * i} {T0 + i}",
        )
    ]
    + ["# EOF", ""]
).encode()
BASE_LOG = "\n".join(
    [f"2025-11-24 16:00:{i:02d}.000 UTC [42] ERROR:  canceling statement due to lock timeout"
     for i in range(10)]
    + ['{"ts": 1764000000, "msg": "deadlock detected"}']
).encode()  # fmt: skip
BASE_CONFIG = (
    b"rules:\n  cache_stampede: {enabled: true, align_steps: 3}\n"
    b"signals:\n  db_latency: db_query_duration_seconds\n"
)

HOSTILE = [
    b"NaN", b"+Inf", b"-Inf", b"1e308", b"-1e308", b"99999999999999999999", b"1e-320",
    b"\x00", b"\xff\xfe", b"\xe2\x80\xae", "\U0001f511".encode(), b"\r", b"\t", b" ",
    b"{", b"}", b'"', b"\\", b"#", b"# EOF\n", b"\n", b"&a [1]", b"*a", b"[" * 200,
    b".nan", b"- ", b": ", b"%", b"@", b"'", "é".encode(),
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` after a few mutations: truncation, byte flips, hostile tokens, repeats."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "replace", "repeat", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(HOSTILE))
        elif op == "replace":
            end = min(len(data), pos + draw(st.integers(1, 12)))
            data[pos:end] = draw(st.sampled_from(HOSTILE))
        elif op == "repeat":
            end = data.find(b"\n", pos) + 1 or len(data)
            data[pos:pos] = data[pos:end] * draw(st.integers(2, 50))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
    return bytes(data)


def run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """The console script's function on `argv` in `cwd`: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["herdwatch", *argv]
    os.chdir(cwd)
    code: object = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return (code if isinstance(code, int) else 0), out.getvalue(), err.getvalue()


def check(argv: list[str], cwd: Path) -> None:
    t0 = time.monotonic()
    code, out, err = run(argv, cwd)
    elapsed = time.monotonic() - t0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code in (0, 1, 2), (code, err[-3000:])
    assert "Traceback" not in err and len(lines) <= 1, err[-3000:]
    assert SECRET not in out + err
    assert elapsed < BOUND_S, f"{elapsed:.1f}s"


def replay_dir(om: bytes | None, log: bytes | None, config: bytes | None) -> Path:
    d = Path(tempfile.mkdtemp(prefix="herdwatch-fuzz-"))
    if om is not None:
        (d / "metrics.om").write_bytes(om)
    if log is not None:
        (d / "app.log").write_bytes(log)
    if config is not None:
        (d / "herdwatch.yaml").write_bytes(config)
    return d


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in [v for v in os.environ if v.startswith("HERDWATCH_")]:
        monkeypatch.delenv(var)
    # a mutated config without sources falls back to discovery: never this machine's services
    # (it may run Redis and Postgres on their standard ports), always the same outcome
    monkeypatch.setattr(
        herdwatch.cli._sources,
        "DISCOVERY",
        {
            "prometheus": f"http://127.0.0.1:{free_port()}",
            "redis": f"redis://127.0.0.1:{free_port()}/0",
            "postgres": f"postgresql://127.0.0.1:{free_port()}/postgres",
            "postgres_socket": str(tmp_path / "no.s.PGSQL.5432"),
            "host": str(tmp_path / "no_proc_stat"),
        },
    )


@FUZZ
@given(om=mutated(BASE_OM), fmt=st.sampled_from(["json", "rich"]))
def test_hostile_openmetrics(om: bytes, fmt: str) -> None:
    d = replay_dir(om, None, None)
    check(["scan", "--replay", str(d), "--format", fmt], d)


@FUZZ
@given(log=mutated(BASE_LOG), om=st.sampled_from([None, BASE_OM]))
def test_hostile_logs(log: bytes, om: bytes | None) -> None:
    d = replay_dir(om, log, None)
    check(["scan", "--replay", str(d), "--format", "json"], d)


@FUZZ
@given(config=mutated(BASE_CONFIG))
def test_hostile_replay_config(config: bytes) -> None:
    d = replay_dir(BASE_OM, None, config)
    check(["scan", "--replay", str(d), "--format", "json", "-q"], d)


@FUZZ
@given(config=mutated(BASE_CONFIG + b"sources:\n  redis: {url: 'redis://127.0.0.1:1/0', "
                      b"password_file: PWFILE}\n"))  # fmt: skip
def test_hostile_config_never_prints_its_secret(config: bytes) -> None:
    d = Path(tempfile.mkdtemp(prefix="herdwatch-fuzz-"))
    (d / "pw").write_text(SECRET)
    (d / "cfg.yaml").write_bytes(config.replace(b"PWFILE", str(d / "pw").encode()))
    check(["config", "check", str(d / "cfg.yaml")], d)
    check(["scan", "--config", str(d / "cfg.yaml"), "--duration", "0s", "--format", "json"], d)


FLAGS = ["--since", "--until", "--duration", "--format", "--fail-on", "--max-queries",
         "--max-range", "--redis", "--postgres", "--prometheus", "--replay", "--config",
         "--bogus", "-q"]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from([
        "0", "-1", "1e308", "nan", "inf", "99999999999999999999", "2h", "1h30m", "500ms",
        "2025-11-24T16:00:00Z", "0001-01-01T00:00:00Z", "http://[::1", "redis://:p@w@h:1/x",
        "postgresql://u:p%40ss@127.0.0.1:1/db", "http://127.0.0.1:1", "json", "critical", "",
        "\x00", "é", "fixtures/incidents/stampede_catalog_1s", "/dev/null", "/proc/self/mem",
    ]),
    st.text(max_size=20),
)  # fmt: skip


@FUZZ
@given(args=st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=4))
def test_hostile_command_lines(args: list[tuple[str, str]]) -> None:
    argv = ["scan"]
    for flag, value in args:
        argv += [flag] if flag == "-q" else [flag, value]
    if not any(f in ("--replay", "--redis", "--postgres", "--prometheus") for f, _ in args):
        argv += ["--replay", str(replay_dir(BASE_OM, None, None))]
    if "--duration" not in argv and "--replay" not in argv:
        argv += ["--duration", "0s"]
    if any("\x00" in a for a in argv):
        return  # no command line can carry a NUL
    check(argv, Path.cwd())


@pytest.mark.timeout(60)
def test_the_console_script_itself() -> None:
    """The installed entry point as a process: bad input is one line and exit 2, and Ctrl-C
    at any moment of its start is exit 130 (or the signal) without a traceback."""
    d = replay_dir(BASE_OM[:200], None, None)
    proc = subprocess.run(
        [sys.executable, "-m", "herdwatch", "scan", "--replay", str(d)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    for delay in (0.05, 0.15, 0.3):
        p = subprocess.Popen(
            [sys.executable, "-c", "from herdwatch.__main__ import main; main()", "--version"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
        assert b"Traceback" not in err, err
        assert p.returncode in (0, 130, -signal.SIGINT), (p.returncode, err)
