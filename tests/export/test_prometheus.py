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

REPO = Path(__file__).resolve().parents[2]
INCIDENTS = REPO / "fixtures" / "incidents"
#: fixtures at 10-15 s whose promtool tests run in seconds: a stampede (with its own
#: signals:), a retry storm, a pool herd and a traffic surge that must raise no alert
QUICK = (
    "stampede_checkout_15s",
    "retry_storm_stripe_15s",
    "pool_exhaustion_nolog_10s",
    "neg_traffic_surge_10s",
)


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
    tests = sorted(p.name for p in out.glob("*.test.yml"))
    assert tests == sorted(f"{n}.test.yml" for n in QUICK)
    # the stampede fixture names its own histogram: its own rule file
    assert (out / "herdwatch.rules.15s.stampede_checkout_15s.yml").is_file()
    doc = yaml.safe_load((out / "stampede_checkout_15s.test.yml").read_text())
    checks = doc["tests"][0]["promql_expr_test"]
    assert any("HerdwatchCacheStampede" in c["expr"] and "firing" in c["expr"] for c in checks)
    assert any(c["expr"].startswith("absent_over_time") for c in checks)
    run = _promtool("test", "rules", *tests, cwd=out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("SUCCESS") == len(QUICK)


@pytest.mark.parametrize("flag", ["--interval", "--keep-firing-for"])
def test_a_bad_duration_flag_is_exit_2(flag: str) -> None:
    res = CliRunner().invoke(cli, ["rules", "export", flag, "soon"], env={})
    assert res.exit_code == 2 and flag in res.output


def test_tests_need_an_output_dir() -> None:
    res = CliRunner().invoke(cli, ["rules", "export", "--format", "prometheus-tests"], env={})
    assert res.exit_code == 2 and "-o" in res.output
