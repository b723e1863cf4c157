"""The `herdwatch` command end to end: replay dirs built in tmp, exit codes, JSON, config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

import herdwatch.cli._sources
import herdwatch.cli.scan
import herdwatch.sources.replay
from herdwatch import __version__
from herdwatch.cli import main
from tests.support.servers import PostgresServer, Server, free_port, start_prometheus

ROOT = Path(__file__).resolve().parent.parent

T0 = 1764000000  # 2025-11-24 16:00:00 UTC
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def openmetrics(
    n: int = 900, stampede_at: int | None = None, misses_family: str = "redis_keyspace_misses"
) -> str:
    """1 s scrapes of a cache (hits, misses), requests and a db latency histogram. With
    `stampede_at`, for 60 s the miss ratio goes 0.05 -> 0.6 and db latency 8 ms -> 400 ms
    while the request rate stays flat: a cache stampede."""
    rng = np.random.default_rng(7)
    t = T0 + np.arange(n)
    req = rng.poisson(1000, n)
    ratio = np.full(n, 0.05)
    slow = np.zeros(n, dtype=bool)
    if stampede_at is not None:
        ratio[stampede_at : stampede_at + 60] = 0.6
        slow[stampede_at : stampede_at + 60] = True
    misses = rng.binomial(req, ratio)
    lines: list[str] = []
    counters = (("redis_keyspace_hits", req - misses), (misses_family, misses),
                ("http_requests", req))  # fmt: skip
    for family, increments in counters:
        lines.append(f"# TYPE {family} counter")
        lines += [
            f"{family}_total {v} {ts}" for ts, v in zip(t, np.cumsum(increments), strict=True)
        ]
    lines.append("# TYPE db_query_duration_seconds histogram")
    cum = np.zeros(len(BUCKETS) + 1, dtype=np.int64)
    total = 0.0
    for i, ts in enumerate(t):
        lat = rng.lognormal(np.log(0.4 if slow[i] else 0.008), 0.3, misses[i])
        cum[:-1] += [int((lat <= b).sum()) for b in BUCKETS]
        cum[-1] += len(lat)
        total += float(lat.sum())
        lines += [
            f'db_query_duration_seconds_bucket{{le="{b}"}} {c} {ts}'
            for b, c in zip(BUCKETS, cum[:-1], strict=True)
        ]
        lines.append(f'db_query_duration_seconds_bucket{{le="+Inf"}} {cum[-1]} {ts}')
        lines.append(f"db_query_duration_seconds_count {cum[-1]} {ts}")
        lines.append(f"db_query_duration_seconds_sum {total:.6f} {ts}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def quiet_text() -> str:
    return openmetrics()


@pytest.fixture(scope="module")
def stampede_text() -> str:
    return openmetrics(stampede_at=600)


def replay_dir(root: Path, name: str, metrics: str, config: str | None = None) -> Path:
    d = root / name
    d.mkdir()
    (d / "metrics.om").write_text(metrics)
    if config is not None:
        (d / "herdwatch.yaml").write_text(config)
    return d


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    """Invoke the CLI in an empty cwd with no HERDWATCH_* variables and no user config."""
    for var in [v for v in os.environ if v.startswith("HERDWATCH_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(herdwatch.cli.cli, list(args), env=env, catch_exceptions=False)

    return invoke


def one_error_line(result: Result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("herdwatch: ")
    for w in words:
        assert w in lines[0]
    return lines[0]


def test_version(run: Callable[..., Result]) -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"herdwatch, version {__version__}\n"


def nowhere(tmp_path: Path) -> dict[str, str]:
    """Discovery candidates where nothing listens (never this machine's own services)."""
    return {
        "prometheus": f"http://127.0.0.1:{free_port()}",
        "redis": f"redis://127.0.0.1:{free_port()}/0",
        "postgres": f"postgresql://127.0.0.1:{free_port()}/postgres",
        "postgres_socket": str(tmp_path / "no.s.PGSQL.5432"),
        "host": str(tmp_path / "no_proc_stat"),
    }


def test_no_source_given_and_none_found(
    run: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(herdwatch.cli._sources, "DISCOVERY", nowhere(tmp_path))
    one_error_line(run("scan"), "no sources", "none found on this machine")


def test_discovery_reads_what_it_finds(
    run: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: Server,
    postgres_server: PostgresServer,
) -> None:
    places = nowhere(tmp_path)
    places.update(redis=redis_server.url, postgres=postgres_server.dsn, host="/proc/stat")
    monkeypatch.setattr(herdwatch.cli._sources, "DISCOVERY", places)
    result = run("scan", "--duration", "1s", "--format", "json")
    assert result.exit_code == 0, result.output
    names = {s["name"]: s["ok"] for s in json.loads(result.stdout)["sources"]}
    assert names[f"redis {redis_server.url}"] and names["host"]
    assert any(n.startswith("postgres ") and ok for n, ok in names.items())
    assert not any(n.startswith("prometheus") for n in names)
    assert result.stderr.startswith(f"discovered: redis {redis_server.url}, postgres ")
    # Something listens where Redis was expected but it is not Redis: listed as not ok, and
    # the scan goes on (a source named by the user would be exit 2 instead).
    pg_port = postgres_server.dsn.rsplit(":", 1)[1].split("/")[0]
    places.update(redis=f"redis://127.0.0.1:{pg_port}/0", postgres=places["prometheus"])
    result = run("scan", "--duration", "1s", "--format", "json")
    assert result.exit_code == 0, result.output
    sources = json.loads(result.stdout)["sources"]
    assert [(s["name"], s["ok"]) for s in sources] == [
        (f"redis redis://127.0.0.1:{pg_port}/0", False),
        ("host", True),
    ]
    assert sources[0]["detail"]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("rules:\n  cache_stampede: {align_steps: -3}\n", ("align_steps", ">= 0")),
        ("signals:\n  db_latency: 'db_query{'\n", ("db_latency", "selector")),
    ],
)
def test_a_bad_config_with_discovered_sources_is_one_line(
    run: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: Server,
    config: str,
    words: tuple[str, ...],
) -> None:
    """The config is checked before discovery is announced: bad input stays one line."""
    places = nowhere(tmp_path)
    places.update(redis=redis_server.url)
    monkeypatch.setattr(herdwatch.cli._sources, "DISCOVERY", places)
    (tmp_path / "bad.yaml").write_text(config)
    result = run("scan", "--config", str(tmp_path / "bad.yaml"), "--duration", "0s")
    one_error_line(result, *words)


def test_live_redis_and_postgres_are_sampled(
    run: Callable[..., Result], redis_server: Server, postgres_server: PostgresServer
) -> None:
    result = run(
        "scan", "--redis", redis_server.url, "--postgres", postgres_server.dsn,
        "--duration", "1s", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["findings"] == []
    names = {s["name"]: s["ok"] for s in out["sources"]}
    assert names[f"redis {redis_server.url}"] is True
    assert any(n.startswith("postgres ") and ok for n, ok in names.items())
    start, end = out["window"]["start"], out["window"]["end"]
    assert 0.5 <= end - start <= 5


def test_live_sources_from_the_config_file(
    run: Callable[..., Result], redis_server: Server
) -> None:
    Path("herdwatch.yaml").write_text(f"sources:\n  redis: {{url: '{redis_server.url}'}}\n")
    result = run("scan", "--duration", "0s", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [s["name"] for s in json.loads(result.stdout)["sources"]] == [
        f"redis {redis_server.url}"
    ]
    Path("herdwatch.yaml").write_text(
        f"sources:\n  redis: {{url: '{redis_server.url}', password_env: NO_SUCH_VAR}}\n"
    )
    one_error_line(run("scan", "--duration", "0s"), "NO_SUCH_VAR is not set")


def test_live_source_that_cannot_be_read_is_exit_2(run: Callable[..., Result]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    one_error_line(run("scan", "--redis", url, "--duration", "0s"), f"source redis {url}")
    line = one_error_line(run("scan", "--redis", "redis://:hunter2@127.0.0.1:1"), "password")
    assert "hunter2" not in line
    one_error_line(run("scan", "--redis", url, "--duration", "soon"), "--duration")
    one_error_line(run("scan", "--replay", ".", "--redis", url), "--replay", "--redis")


def test_live_logs_find_a_lock_timeout_cluster(run: Callable[..., Result], tmp_path: Path) -> None:
    src = ROOT / "fixtures/incidents/lock_timeout_cluster_pg_15s/postgresql.log"
    (tmp_path / "pg.log").write_bytes(src.read_bytes())
    result = run("scan", "--logs", str(tmp_path / "*.log"), "--format", "json")
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert [f["signature"] for f in out["findings"]] == ["lock_timeout_cluster"]
    assert out["sources"][0]["name"] == f"logs:{tmp_path / '*.log'}"


def test_quiet_replay_exits_0_with_the_json_contract(
    run: Callable[..., Result], tmp_path: Path, quiet_text: str
) -> None:
    d = replay_dir(tmp_path, "quiet", quiet_text)
    result = run("scan", "--replay", str(d), "--format", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["findings"] == []
    assert out["window"] == {"start": T0, "end": T0 + 899}
    (source,) = out["sources"]
    assert (source["name"], source["ok"]) == (f"replay:{d}", True)


def test_stampede_replay_exits_1_with_the_finding(
    run: Callable[..., Result], tmp_path: Path, stampede_text: str
) -> None:
    d = replay_dir(tmp_path, "stampede", stampede_text)
    result = run("scan", "--replay", str(d), "--format", "json")
    assert result.exit_code == 1, result.output
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["signature"] == "cache_stampede"
    assert abs(finding["onset"] - (T0 + 600)) <= 1
    assert finding["end"] > finding["onset"]
    assert finding["severity"] in {"info", "warning", "critical"}
    assert finding["evidence"] and finding["recommendations"]
    assert set(finding["recommendations"][0]) >= {"action", "detail", "config"}


def test_rich_report(run: Callable[..., Result], tmp_path: Path, stampede_text: str) -> None:
    d = replay_dir(tmp_path, "stampede", stampede_text)
    result = run("scan", "--replay", str(d))
    assert result.exit_code == 1
    out = result.stdout
    flat = " ".join(out.replace("│", " ").split())
    assert "window 2025-11-24 16:00:00 → 16:14:59 UTC (14m59s)" in flat
    assert "cache_stampede │ 16:10:0" in out
    for heading in ("Evidence", "Timeline", "Recommendations", "▲ onset 16:10:0"):
        assert heading in out
    assert "█" in out and "▁" in out


def test_since_and_until_cut_the_window(
    run: Callable[..., Result], tmp_path: Path, stampede_text: str
) -> None:
    d = replay_dir(tmp_path, "stampede", stampede_text)
    before = run("scan", "--replay", str(d), "--format", "json", "--until", str(T0 + 500))
    assert before.exit_code == 0
    assert json.loads(before.stdout)["window"]["end"] == T0 + 500
    rfc = run("scan", "--replay", str(d), "--format", "json", "--since", "2025-11-24T16:05:00Z")
    assert rfc.exit_code == 1
    assert json.loads(rfc.stdout)["window"]["start"] == T0 + 300
    # In a replay a duration counts back from the end of the recording.
    tail = run("scan", "--replay", str(d), "--format", "json", "--since", "10m")
    assert json.loads(tail.stdout)["window"]["start"] == T0 + 899 - 600
    one_error_line(run("scan", "--replay", str(d), "--since", "yesterday"), "--since")
    one_error_line(
        run("scan", "--replay", str(d), "--since", str(T0 + 500), "--until", str(T0 + 100)),
        "--until",
    )


def test_replay_config_is_read_and_merged_under_flags(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    renamed = openmetrics(stampede_at=600, misses_family="myapp_cache_misses")
    d = replay_dir(tmp_path, "renamed", renamed)
    # Without the override the misses are not found, so no stampede.
    assert run("scan", "--replay", str(d), "--format", "json").exit_code == 0
    (d / "herdwatch.yaml").write_text("signals:\n  cache_misses: myapp_cache_misses_total\n")
    assert run("scan", "--replay", str(d), "--format", "json").exit_code == 1
    report = run("scan", "--replay", str(d), env={"COLUMNS": "400"})  # no wrapping of the path
    assert report.exit_code == 1
    assert f"config {d / 'herdwatch.yaml'}" in " ".join(report.stdout.replace("│", " ").split())
    # --config merges over the replay's file; HERDWATCH_* over both.
    mine = tmp_path / "mine.yaml"
    mine.write_text("rules:\n  cache_stampede: {enabled: false}\n")
    assert run("scan", "--replay", str(d), "--config", str(mine)).exit_code == 0
    env = {"HERDWATCH_RULES_CACHE_STAMPEDE": "{enabled: true}"}
    assert run("scan", "--replay", str(d), "--config", str(mine), env=env).exit_code == 1


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("signals:\n  cache_misses: x\n  bogus: y\n", ("herdwatch.yaml:3: signals.bogus",
                                                        "unknown signal")),
        ("rules:\n  cache_stampede:\n    nope: 1\n", ("herdwatch.yaml:3:",
                                                      "rules.cache_stampede.nope")),
        ("rules:\n  no_such_rule: {}\n", ("herdwatch.yaml:2: rules.no_such_rule", "unknown rule")),
        ("daemon:\n  interval: soon\n", ("herdwatch.yaml:2: daemon.interval",)),
        ("sources:\n  redis: {url: 'redis://:hunter2@h'}\n", ("sources.redis.url", "***")),
        ("colour: blue\n", ("herdwatch.yaml:1: colour: unknown key",)),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_exit_2(
    run: Callable[..., Result], tmp_path: Path, quiet_text: str, config: str, words: tuple[str]
) -> None:
    d = replay_dir(tmp_path, "quiet", quiet_text, config)
    line = one_error_line(run("scan", "--replay", str(d)), *words)
    assert "hunter2" not in line


def test_bad_replay_is_one_line_exit_2(run: Callable[..., Result], tmp_path: Path) -> None:
    d = replay_dir(tmp_path, "noeof", "# TYPE x counter\nx_total 1 1764000000\n")
    one_error_line(run("scan", "--replay", str(d)), "metrics.om")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(run("scan", "--replay", str(empty)))


def test_usage_errors_exit_2(run: Callable[..., Result], tmp_path: Path) -> None:
    one_error_line(run("scan", "--replay", str(tmp_path / "missing")), "missing")
    one_error_line(run("rules", "test", "--fixtures", str(tmp_path / "missing")), "missing")
    assert run("scan", "--format", "xml").exit_code == 2
    assert run("no-such-command").exit_code == 2


def test_main_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    d = replay_dir(
        tmp_path, "bad", "# TYPE x counter\nx_total 1 1764000000\nx_total 0.5 1764000001\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "scan", "--replay", str(d)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("herdwatch: ")
    assert "Traceback" not in done.stderr
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0


def test_progress_bar_only_for_a_large_replay_on_a_terminal(
    run: Callable[..., Result],
    tmp_path: Path,
    quiet_text: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    real = herdwatch.sources.replay.load_replay

    def spy(path: Path, **kwargs: Any) -> Any:
        seen.append(kwargs.get("progress"))
        return real(path, **kwargs)

    monkeypatch.setattr(herdwatch.sources.replay, "load_replay", spy)
    d = replay_dir(tmp_path, "quiet", quiet_text)
    assert run("scan", "--replay", str(d), "--format", "json").exit_code == 0
    assert seen.pop() is None  # stderr is not a terminal here
    monkeypatch.setattr(herdwatch.cli.scan, "PROGRESS_MIN_BYTES", 1)
    assert run("scan", "--replay", str(d), "--format", "json").exit_code == 0
    assert seen.pop() is None  # still not a terminal
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    result = run("scan", "--replay", str(d), "--format", "json")
    assert result.exit_code == 0
    assert callable(seen.pop())
    assert json.loads(result.stdout)["findings"] == []  # the bar never touches stdout


def test_rules_list(run: Callable[..., Result], tmp_path: Path) -> None:
    from herdwatch.rules import load_rules

    ids = [r.id for r in load_rules()]
    result = run("rules", "list")
    assert result.exit_code == 0
    for rule_id in ids:
        assert rule_id in result.stdout
    data = json.loads(run("rules", "list", "--format", "json").stdout)
    assert [r["id"] for r in data] == ids
    stampede = next(r for r in data if r["id"] == "cache_stampede")
    assert all({"value", "default", "doc"} <= set(p) for p in stampede["parameters"].values())
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rules:\n  cache_stampede: {enabled: false, align_steps: 5}\n")
    data = json.loads(run("rules", "list", "--format", "json", "--config", str(cfg)).stdout)
    stampede = next(r for r in data if r["id"] == "cache_stampede")
    assert stampede["enabled"] is False
    assert stampede["parameters"]["align_steps"]["value"] == 5
    cfg.write_text("rules:\n  cache_stampede:\n    align_step: 5\n")
    one_error_line(run("rules", "list", "--config", str(cfg)), "c.yaml:3:", "align_step")


def expected(path: Path, must: list[dict[str, Any]], must_not: list[str]) -> None:
    doc = {"description": "test", "resolution": 1, "must": must, "must_not": must_not}
    (path / "expected.json").write_text(json.dumps(doc))


def test_rules_test_pass_and_fail(
    run: Callable[..., Result], tmp_path: Path, quiet_text: str, stampede_text: str
) -> None:
    root = tmp_path / "fixtures"
    root.mkdir()
    hit = replay_dir(root, "a_stampede", stampede_text)
    expected(hit, [{"signature": "cache_stampede", "onset": T0 + 600, "tolerance": 1}],
             ["retry_storm"])  # fmt: skip
    quiet = replay_dir(root, "b_quiet", quiet_text)
    expected(quiet, [], ["cache_stampede"])
    result = run("rules", "test", "--fixtures", str(root))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Unit Testing: a_stampede"
    assert lines[1].startswith("  PASS cache_stampede fires")
    assert lines[2].startswith("  PASS retry_storm silent")
    assert lines[3:5] == ["Unit Testing: b_quiet", "  PASS cache_stampede silent  (not found)"]
    assert lines[-1] == "SUCCESS: 3 passed, 0 failed (2 fixtures)"
    expected(quiet, [{"signature": "cache_stampede", "onset": T0 + 600}], [])
    result = run("rules", "test", "--fixtures", str(root))
    assert result.exit_code == 1
    assert "  FAIL cache_stampede fires  (not found)" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "FAILED: 2 passed, 1 failed (2 fixtures)"


def test_rules_test_without_fixtures_is_exit_2(run: Callable[..., Result], tmp_path: Path) -> None:
    one_error_line(run("rules", "test", "--fixtures", str(tmp_path)), str(tmp_path))


def test_live_prometheus_and_capture_find_the_backfilled_stampede(
    run: Callable[..., Result], tmp_path: Path, stampede_text: str
) -> None:
    om = tmp_path / "incident.om"
    om.write_text(stampede_text)
    tsdb = tmp_path / "tsdb"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
        check=True, capture_output=True, timeout=110,
    )  # fmt: skip
    span = ("--since", str(T0), "--until", str(T0 + 899))
    captured = tmp_path / "captured"
    with start_prometheus(tsdb_dir=tsdb, workdir=tmp_path / "prom") as prom:
        result = run("scan", "--prometheus", prom.url, *span, "--format", "json")
        grab = run("capture", "--prometheus", prom.url, *span, "-o", str(captured))
        refused = run("capture", "--prometheus", prom.url, *span, "-o", str(captured))
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    (finding,) = out["findings"]
    assert finding["signature"] == "cache_stampede"
    assert abs(finding["onset"] - (T0 + 600)) <= 1
    assert out["sources"][0]["name"] == f"prometheus {prom.url}"
    # capture, then replay: the same finding as the live scan.
    assert grab.exit_code == 0, grab.output
    assert grab.stderr.startswith("captured 15 series")
    files = sorted(p.name for p in captured.iterdir())
    assert files in (["herdwatch.yaml", "metrics.om"], ["herdwatch.yaml", "metrics.om.gz"])
    replayed = run("scan", "--replay", str(captured), "--format", "json")
    assert replayed.exit_code == 1, replayed.output
    (again,) = json.loads(replayed.stdout)["findings"]
    assert again["signature"] == finding["signature"]
    assert again["onset"] == finding["onset"]
    one_error_line(refused, "already holds a recording")


def test_bundled_fixtures_pass_rules_test(run: Callable[..., Result]) -> None:
    """`herdwatch rules test` over fixtures/incidents: every expectation of every fixture."""
    fixtures = ROOT / "fixtures" / "incidents"
    result = run("rules", "test", "--fixtures", str(fixtures))
    lines = result.stdout.splitlines()
    failed = [line for line in lines if line.startswith("  FAIL")]
    assert result.exit_code == 0 and not failed, "\n".join(failed) or result.output
    tested = {line.removeprefix("Unit Testing: ") for line in lines if line.startswith("Unit")}
    assert tested == {p.parent.name for p in fixtures.glob("*/expected.json")}
    assert lines[-1].startswith("SUCCESS: ")


def _main(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "herdwatch", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("scan", "--bogus"), ("herdwatch scan", "No such option", "--bogus")),
        (("scan", "--format", "xml"), ("Invalid value for '--format'", "'xml'")),
        (("scan", "--fail-on", "info"), ("--fail-on",)),
        (("no-such-command",), ("No such command",)),
        (("rules", "check", "/no/such/dir"), ("does not exist",)),
    ],
)
def test_click_usage_errors_are_one_herdwatch_line(
    args: tuple[str, ...], words: tuple[str]
) -> None:
    done = _main(*args)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("herdwatch: "), done.stderr
    for w in words:
        assert w in lines[0]


@pytest.mark.parametrize(
    ("group", "commands"),
    [
        ("", "capture, config, daemon, lab, mitigate, outbox, rules, scan, silence, top"),
        ("rules", "check, export, list, test"),
        ("config", "check"),
        ("lab", "compare, run"),
        ("outbox", "list"),
        ("mitigate", "client, ttl-spread, undo"),
        ("silence", "add, expire, list"),
    ],
)
def test_a_group_without_its_command_is_one_line_naming_its_commands(
    group: str, commands: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 as click >= 8.2 has it (`herdwatch $cmd` with an empty $cmd fails in a script),
    one line listing the commands (was: the whole help squeezed into one line)."""
    with pytest.raises(SystemExit) as info:
        main([group] if group else [])
    out, err = capsys.readouterr()
    path = f"herdwatch {group}".strip()
    assert (info.value.code, out) == (2, "")
    where = f"{path}: " if group else ""
    assert err == f"herdwatch: {where}missing command: one of {commands} (see '{path} --help')\n"


@pytest.mark.parametrize(
    ("flag", "url", "why"),
    [
        ("--prometheus", "http://[::1", "Invalid IPv6 URL"),
        ("--prometheus", "http://h:http/", "Port could not be cast"),
        ("--redis", "redis://[::1", "Invalid IPv6 URL"),
        ("--redis", "redis://h:99999/0", "Port out of range"),
        ("--postgres", "postgresql://[::1/db", "Invalid IPv6 URL"),
        ("--postgres", "postgresql://u@h:notaport/db", "Port could not be cast"),
    ],
)
def test_a_url_python_cannot_take_apart_is_one_line(
    flag: str, url: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was exit 3 with a traceback (urlsplit's ValueError, issue 9); the check is the config's
    (`_check_url`), so the same URL in herdwatch.yaml or a variable is refused alike."""
    with pytest.raises(SystemExit) as info:
        main(["scan", flag, url, "--duration", "0s"])
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (2, "")
    key = {"--prometheus": "prometheus.url", "--redis": "redis.url", "--postgres": "postgres.dsn"}
    assert err.startswith(f"herdwatch: command line: sources.{key[flag]}: not a valid URL ({why}")
    assert err.endswith(f"): {url}\n") and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--prometheus", "--redis", "--postgres"])
def test_a_bad_url_with_a_password_is_one_line_without_it(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme = {"--prometheus": "http", "--redis": "redis", "--postgres": "postgresql"}[flag]
    with pytest.raises(SystemExit) as info:
        main(["scan", flag, f"{scheme}://u:S3cr3t-Pw@[::1/x", "--duration", "0s"])
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (2, "")
    assert err.startswith("herdwatch: command line: sources.") and err.count("\n") == 1
    assert "S3cr3t" not in err


def test_a_bad_url_in_the_config_file_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "h.yaml"
    cfg.write_text("sources:\n  redis:\n    url: 'redis://[::1'\n")
    with pytest.raises(SystemExit) as info:
        main(["scan", "--config", str(cfg), "--duration", "0s"])
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (2, "")
    assert err == (
        f"herdwatch: {cfg}:3: sources.redis.url: not a valid URL (Invalid IPv6 URL): redis://[::1\n"
    )


def test_fail_on_and_quiet(run: Callable[..., Result], tmp_path: Path, stampede_text: str) -> None:
    d = replay_dir(tmp_path, "stampede", stampede_text)
    found = json.loads(run("scan", "--replay", str(d), "--format", "json").stdout)["findings"]
    severities = {f["severity"] for f in found}
    assert severities == {"critical"}
    assert run("scan", "--replay", str(d), "--fail-on", "critical", "-q").exit_code == 1
    quiet = run("scan", "--replay", str(d), "--quiet")
    assert quiet.exit_code == 1 and quiet.stdout == "" and quiet.stderr == ""
    # a warning-only finding: no p99 histogram, so the stampede is not confirmed by the database
    no_db = "\n".join(
        line for line in stampede_text.splitlines() if "db_query_duration" not in line
    )
    w = replay_dir(tmp_path, "warning", no_db + "\n")
    assert (
        json.loads(run("scan", "--replay", str(w), "--format", "json").stdout)["findings"][0][
            "severity"
        ]
        == "warning"
    )
    assert run("scan", "--replay", str(w), "-q").exit_code == 1
    assert run("scan", "--replay", str(w), "-q", "--fail-on", "critical").exit_code == 0


def test_config_check_and_rules_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "signals:\n  db_latency: myapp_db_seconds\nrules:\n  cache_stampede: {z_enter: 5}\n"
    )
    done = _main("config", "check", str(good), cwd=tmp_path)
    assert done.returncode == 0 and "SUCCESS" in done.stderr, done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "signals:\n  db_latency: myapp_db_seconds\nrules:\n  cache_stampede: {z_entr: 5}\n"
    )
    done = _main("config", "check", str(bad), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"{bad}:4" in done.stderr and "rules.cache_stampede.z_entr" in done.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("signals:\n  db_latenzy: x\n")
    done = _main("config", "check", str(unknown), cwd=tmp_path)
    assert (
        done.returncode == 2 and f"{unknown}:2" in done.stderr and "unknown signal" in done.stderr
    )
    assert _main("config", "check", str(tmp_path / "none.yaml")).returncode == 2
    done = _main("rules", "check", cwd=tmp_path)
    assert done.returncode == 0 and "7 rules" in done.stderr
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x.yaml").write_text("id: x\ndetector: no_such\ndescription: a broken rule file\n")
    done = _main("rules", "check", str(rules))
    assert done.returncode == 2 and str(rules / "x.yaml") in done.stderr, done.stderr


def test_the_replay_memory_budget_comes_from_the_config(
    run: Callable[..., Result], tmp_path: Path, quiet_text: str
) -> None:
    d = replay_dir(tmp_path, "quiet", quiet_text, "sources:\n  replay_memory: 10MiB\n")
    one_error_line(run("scan", "--replay", str(d)), "over the budget of 10 MiB")
