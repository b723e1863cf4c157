"""`herdwatch rules list|test|check`: the detection rules, their tests and their validation."""

from __future__ import annotations

from pathlib import Path

import click

from herdwatch.cli._app import CONFIG_OPTION, Output, cli, err_console
from herdwatch.cli._sources import load_rules
from herdwatch.config import load_config
from herdwatch.errors import ReplayFormatError

__all__ = ["rules", "rules_check", "rules_list", "rules_test"]


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
