"""`herdwatch rules export`: the rules pass `promtool check rules`, carry the rules' parameters
and the config's `signals:`, group per subject, and the promtool tests built from fixtures pass
`promtool test rules`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from herdwatch.cli import cli
from herdwatch.export import GAPS, alert_name
from herdwatch.sources.replay import replay_files

REPO = Path(__file__).resolve().parents[2]
INCIDENTS = REPO / "fixtures" / "incidents"
#: promtool runs one test file at a time: one run per core
JOBS = 2


def _export(tmp_path: Path, *args: str, config: str | None = None) -> tuple[Path, dict]:
    argv = ["rules", "export", *args]
    if config is not None:
        cfg = tmp_path / "herdwatch.yaml"
        cfg.write_text(config)
        argv += ["--config", str(cfg)]
    res = CliRunner().invoke(cli, argv, env={})
    assert res.exit_code == 0, res.output
    out = tmp_path / "herdwatch.rules.yml"
    out.write_text(res.output)
    return out, yaml.safe_load(res.output)


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=170
    )


def _alerts(doc: dict) -> dict[str, dict]:
    return {r["alert"]: r for r in doc["groups"][0]["rules"] if "alert" in r}


def test_promtool_check_rules_passes(tmp_path: Path) -> None:
    path, doc = _export(tmp_path)
    res = _promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    alerts = _alerts(doc)
    wanted = ["cache_stampede", "pool_exhaustion", "ctx_switch_burst", "retry_storm", "cron_herd"]
    assert set(alerts) == {alert_name(s) for s in wanted}
    for sig in wanted:
        alert = alerts[alert_name(sig)]
        assert alert["labels"]["signature"] == sig
        notes = alert["annotations"]
        assert notes["summary"].startswith(sig) and notes["recommendations"].startswith("1. ")
        assert notes["not_seen_by_promql"] == GAPS[sig]
    assert "lock_timeout_cluster" in GAPS and "ttl_cliff" in GAPS  # documented, not exported


def test_rules_group_per_subject(tmp_path: Path) -> None:
    _, doc = _export(tmp_path)
    recorded = {r["record"]: r["expr"] for r in doc["groups"][0]["rules"] if "record" in r}
    assert (
        "sum by (instance) (rate(redis_keyspace_misses_total[60s]))"
        in (recorded["herdwatch:cache_misses:rate"])
    )
    assert "by (instance)" in recorded["herdwatch:context_switches:rate"]
    assert "by (peer)" in recorded["herdwatch:upstream_requests:rate"]
    # the witnesses of the load stay fleet-wide, as in the engine
    assert "by" not in recorded["herdwatch:requests:rate"]
    stampede = _alerts(doc)["HerdwatchCacheStampede"]
    assert "and on() (" in stampede["expr"] and stampede["labels"]["subject"] == "instance"


def test_parameters_and_signals_come_from_the_config(tmp_path: Path) -> None:
    config = (
        "signals:\n  db_latency: myapp_db_query_seconds\n"
        "rules:\n  cache_stampede: {z_enter: 9, baseline: 10m, max_traffic_ratio: 1.2}\n"
        "  cron_herd: {enabled: false}\n"
    )
    path, doc = _export(tmp_path, "--interval", "30s", config=config)
    assert _promtool("check", "rules", str(path)).returncode == 0
    alerts = _alerts(doc)
    assert "HerdwatchCronHerd" not in alerts
    expr = alerts["HerdwatchCacheStampede"]["expr"]
    assert "median600s + 9 * clamp_min" in expr and "<= 1.2 * " in expr
    recorded = {r["record"]: r["expr"] for r in doc["groups"][0]["rules"] if "record" in r}
    assert recorded["herdwatch:db_latency:p99"] == (
        "histogram_quantile(0.99, sum by (le) (rate(myapp_db_query_seconds_bucket[120s])))"
    )
    assert doc["groups"][0]["interval"] == "30s"


def test_a_bad_signal_override_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "herdwatch.yaml"
    cfg.write_text("signals:\n  db_latnecy: x\n")
    res = CliRunner().invoke(cli, ["rules", "export", "--config", str(cfg)], env={})
    assert res.exit_code == 2
    assert "signals.db_latnecy" in res.output


#: fixtures whose promtool tests run in seconds, one run per core: a stampede (with its own
#: signals:), a retry storm, a pool filled by idle connections and a traffic surge that must
#: raise no alert. Every fixture, through promtool and the daemon's scan side by side, is
#: `python -m tests.export.measure` (about 26 minutes: docs/scale.md has its table).
QUICK = (
    "stampede_checkout_15s",
    "retry_storm_stripe_15s",
    "pool_exhaustion_idle_slots_15s",
    "neg_traffic_surge_10s",
)


@pytest.mark.timeout(300)
def test_promtool_tests_from_fixtures_pass(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    for name in QUICK:
        shutil.copytree(INCIDENTS / name, fixtures / name)
    out = tmp_path / "promtool"
    res = CliRunner().invoke(
        cli,
        ["rules", "export", "--format", "prometheus-tests", "-o", str(out),
         "--fixtures", str(fixtures)],
        env={},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    tests = sorted(out.glob("*.test.yml"))
    # every fixture the export can read (metrics and expectations) has its test
    readable = sorted(
        d.name for d in fixtures.iterdir() if (d / "expected.json").is_file() and replay_files(d)[0]
    )
    assert [p.name.removesuffix(".test.yml") for p in tests] == readable == sorted(QUICK)
    # the stampede fixture names its own histogram: its own rule file reads it
    rule_file = out / "herdwatch.rules.15s.stampede_checkout_15s.yml"
    assert "checkout_db_query_seconds_bucket" in rule_file.read_text()
    doc = yaml.safe_load((out / "stampede_checkout_15s.test.yml").read_text())
    checks = doc["tests"][0]["promql_expr_test"]
    assert any("HerdwatchCacheStampede" in c["expr"] and "firing" in c["expr"] for c in checks)
    assert any(c["expr"].startswith("absent_over_time") for c in checks)
    # the biggest files first, dealt round the runs, so the runs end together
    tests.sort(key=lambda p: -p.stat().st_size)
    shares = [[p.name for p in tests[i::JOBS]] for i in range(JOBS)]
    runs = [
        subprocess.Popen(["promtool", "test", "rules", *share], cwd=out, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for share in shares
    ]  # fmt: skip
    reports = [run.communicate(timeout=280)[0] for run in runs]
    failed = [r[-3000:] for run, r in zip(runs, reports, strict=True) if run.returncode != 0]
    assert not failed, "\n".join(failed)
    assert sum(r.count("SUCCESS") for r in reports) == len(tests)


def test_subject_label_flag(tmp_path: Path) -> None:
    path, doc = _export(tmp_path, "--subject-label", "pod")
    assert _promtool("check", "rules", str(path)).returncode == 0
    recorded = {r["record"]: r["expr"] for r in doc["groups"][0]["rules"] if "record" in r}
    for name in ("cache_misses:rate", "context_switches:rate", "db_connections:busy"):
        assert "by (pod)" in recorded[f"herdwatch:{name}"], recorded[f"herdwatch:{name}"]
        assert "instance" not in recorded[f"herdwatch:{name}"]
    alerts = _alerts(doc)
    stampede = alerts["HerdwatchCacheStampede"]
    assert (
        stampede["labels"]["subject"] == "pod"
        and "$labels.pod" in stampede["annotations"]["summary"]
    )
    assert "on(pod)" in alerts["HerdwatchCtxSwitchBurst"]["expr"]
    res = CliRunner().invoke(
        cli, ["rules", "export", "--format", "grafana", "--subject-label", "pod"], env={}
    )
    assert (
        res.exit_code == 0
        and "{{pod}}" in res.output
        and "{{instance}}" not in res.output.split('"annotations"')[0]
    )


@pytest.mark.parametrize("label", ["pod-name", "__name__", ""])
def test_a_bad_subject_label_is_one_line_exit_2(label: str) -> None:
    res = CliRunner().invoke(cli, ["rules", "export", "--subject-label", label], env={})
    assert res.exit_code == 2
    assert res.output.startswith("herdwatch: ") and len(res.output.splitlines()) == 1
    assert "--subject-label" in res.output and "not a label name" in res.output


@pytest.mark.parametrize("flag", ["--interval", "--keep-firing-for"])
def test_a_bad_duration_flag_is_exit_2(flag: str) -> None:
    res = CliRunner().invoke(cli, ["rules", "export", flag, "soon"], env={})
    assert res.exit_code == 2 and flag in res.output


def test_tests_need_an_output_dir() -> None:
    res = CliRunner().invoke(cli, ["rules", "export", "--format", "prometheus-tests"], env={})
    assert res.exit_code == 2 and "-o" in res.output
