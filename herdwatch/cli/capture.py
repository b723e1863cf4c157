"""`herdwatch capture`: a Prometheus range written as a replay directory."""

from __future__ import annotations

import time
from pathlib import Path

import click

from herdwatch.cli._app import CONFIG_OPTION, cli, duration_flag, err_console, time_option
from herdwatch.cli._sources import load_rules
from herdwatch.config import load_config
from herdwatch.errors import ConfigError

__all__ = ["capture"]


@cli.command()
@click.option("--prometheus", metavar="URL", help="The Prometheus to read (else the config's).")
@click.option("--since", metavar="TIME", help="Start: a duration back (3h), RFC 3339 or unix s.")
@click.option("--until", metavar="TIME", help="End (default now).")
@click.option(
    "-o",
    "--output",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The replay directory to write (new or empty).",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not say what was captured.")
@click.option(
    "--max-queries",
    type=click.IntRange(1, 2**31 - 1),
    help="Most HTTP requests to Prometheus (default 2000).",
)
@click.option(
    "--max-range",
    metavar="DURATION",
    callback=duration_flag,
    help="Longest range read from Prometheus (default 31d).",
)
@CONFIG_OPTION
def capture(
    prometheus: str | None,
    since: str | None,
    until: str | None,
    output: Path,
    quiet: bool,
    max_queries: int | None,
    max_range: float | None,
    config_file: Path | None,
) -> None:
    """Write a Prometheus range as a replay directory (metrics and the herdwatch.yaml that
    reads them), to share an incident or rescan it offline with --replay."""
    from herdwatch.capture import capture as capture_range
    from herdwatch.render import format_time

    since_t = time_option(since, "--since")
    until_t = time_option(until, "--until")
    flags = {
        "sources.prometheus.url": prometheus,
        "sources.prometheus.max_queries": max_queries,
        "sources.prometheus.max_range": max_range,
    }
    cfg = load_config(config_file, flags=flags)
    if cfg.sources.prometheus is None:
        raise ConfigError("a Prometheus is needed: give --prometheus URL", key="sources.prometheus")
    from herdwatch.rules import check_signals

    check_signals(cfg, promql=True)
    load_rules(cfg)
    now = time.time()
    used = {"signals": dict(cfg.signals), "rules": {k: dict(v) for k, v in cfg.rules.items()}}
    done = capture_range(
        cfg.sources.prometheus,
        since_t.resolve(now) if since_t else None,
        until_t.resolve(now) if until_t else None,
        output,
        used,
    )
    if not quiet:
        err_console().print(
            f"captured {done.series} series, {done.samples} samples at a {done.step:g}s step "
            f"({format_time(done.since)} .. {format_time(done.until)} UTC) into {done.directory}",
            highlight=False,
            markup=False,
        )
