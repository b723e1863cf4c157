"""`herdwatch rules list|test|check|export`: the detection rules, their tests, their validation
and their export to Prometheus rules, promtool unit tests and a Grafana dashboard."""

from __future__ import annotations

import re
from pathlib import Path

import click

from herdwatch.cli._app import CONFIG_OPTION, Output, cli, err_console
from herdwatch.cli._sources import load_rules
from herdwatch.config import load_config, parse_duration
from herdwatch.errors import ConfigError, ReplayFormatError

__all__ = ["rules", "rules_check", "rules_export", "rules_list", "rules_test"]


@cli.group()
def rules() -> None:
    """The detection rules (rules/*.yaml) and their tests against the fixtures."""


@rules.command("list")
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich")
@CONFIG_OPTION
def rules_list(fmt: str, config_file: Path | None) -> None:
    """Each rule: id, detector, description, parameters with their defaults and docs.

    Values changed by the config are marked with *."""
    from herdwatch.render import render_rules, render_rules_json

    cfg = load_config(config_file)
    items = load_rules(cfg)
    if fmt == "json":
        click.echo(render_rules_json(items))
    else:
        render_rules(items, Output())


@rules.command("test")
@click.option(
    "--fixtures",
    metavar="DIR",
    type=click.Path(path_type=Path),
    default=Path("fixtures/incidents"),
    show_default=True,
    help="A directory of replay dirs, each with expected.json.",
)
@click.pass_context
def rules_test(ctx: click.Context, fixtures: Path) -> None:
    """Run every rule against the fixtures; PASS/FAIL per expectation. Exit 1 on any failure."""
    from herdwatch.render import render_rule_results
    from herdwatch.ruletest import run_fixtures

    results = run_fixtures(fixtures)
    if not results:
        raise ReplayFormatError("no fixtures with expected.json here", file=str(fixtures))
    render_rule_results(results, Output(soft_wrap=True))
    ctx.exit(0 if all(r.passed for r in results) else 1)


@rules.command("check")
@click.argument(
    "directory", required=False, type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@CONFIG_OPTION
def rules_check(directory: Path | None, config_file: Path | None) -> None:
    """Validate the rule files (the built-in ones, or those in DIRECTORY) and the config's
    `rules:` overrides without scanning, as `promtool check rules` does. Exit 0 when valid."""
    from herdwatch.rules import load_rules as load

    if directory is not None:
        found = load(rules_dir=directory)
    else:
        found = load_rules(load_config(config_file))
    err_console().print(f"SUCCESS: {len(found)} rules found", highlight=False)


@rules.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["prometheus", "prometheus-tests", "grafana"]),
    default="prometheus",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory the promtool tests are written to (--format prometheus-tests).",
)
@click.option(
    "--interval",
    default="15s",
    show_default=True,
    help="Scrape and rule evaluation interval the rules are written for (rate windows are 4x).",
)
@click.option(
    "--keep-firing-for",
    default="5m",
    show_default=True,
    help="How long an alert keeps firing after its condition clears; 0 for Prometheus < 2.42.",
)
@click.option(
    "--subject-label",
    metavar="LABEL",
    default="instance",
    show_default=True,
    help="The label per-server signals are grouped by (cache, context switches, connections).",
)
@click.option(
    "--fixtures",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("fixtures/incidents"),
    show_default=True,
    help="The recorded incidents the promtool tests are built from.",
)
@CONFIG_OPTION
def rules_export(
    fmt: str,
    output: Path | None,
    interval: str,
    keep_firing_for: str,
    subject_label: str,
    fixtures: Path,
    config_file: Path | None,
) -> None:
    """Export the rules PromQL can express, with the config's `rules:` parameters and
    `signals:` overrides: Prometheus recording and alerting rules (stdout), promtool unit tests
    built from the fixtures (-o DIR) or a Grafana dashboard (stdout). docs/scale.md says what
    the exported rules cannot see."""
    import json

    from herdwatch.export import (
        ExportOptions,
        grafana_dashboard,
        prometheus_rules,
        promtool_tests,
        render_prometheus,
    )

    cfg = load_config(config_file)
    found = load_rules(cfg)
    opts = ExportOptions(
        interval=_duration(interval, "--interval"),
        keep_firing_for=_duration(keep_firing_for, "--keep-firing-for"),
        subject_label=_label_name(subject_label, "--subject-label"),
    )
    try:
        doc = prometheus_rules(found, cfg.signals, opts)
    except ConfigError as exc:
        raise cfg.relocate(exc) from None
    if fmt == "prometheus":
        click.echo(render_prometheus(doc), nl=False)
    elif fmt == "grafana":
        click.echo(json.dumps(grafana_dashboard(doc, opts.subject_label), indent=2))
    else:
        if output is None:
            raise ConfigError("--format prometheus-tests writes files: give -o DIR", key="-o")
        if not fixtures.is_dir():
            raise ReplayFormatError("no fixtures directory here", file=str(fixtures))
        files = promtool_tests(found, fixtures, cfg.signals, opts)
        output.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (output / name).write_text(text)
        tests = sum(name.endswith(".test.yml") for name in files)
        err_console().print(
            f"wrote {tests} promtool tests and {len(files) - tests} rule files to {output}; "
            f"run: promtool test rules {output}/*.test.yml",
            highlight=False,
        )


def _label_name(text: str, flag: str) -> str:
    """A Prometheus label name, or ConfigError naming the flag."""
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", text) or text.startswith("__"):
        raise ConfigError(f"not a label name: {text!r}", key=flag)
    return text


def _duration(text: str, flag: str) -> float:
    """A duration flag in seconds, or ConfigError naming the flag."""
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise ConfigError(str(exc), key=flag) from None
