"""`herdwatch config check [FILE]`: validate a config without scanning."""

from __future__ import annotations

from pathlib import Path

import click

from herdwatch.cli._app import cli, err_console
from herdwatch.errors import ConfigError

__all__ = ["config", "config_check"]


@cli.group()
def config() -> None:
    """The configuration (herdwatch.yaml and HERDWATCH_* variables)."""


@config.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
def config_check(file: Path | None) -> None:
    """Validate FILE (else the config a scan would read, with HERDWATCH_* variables) as a scan
    would: every key, type and value, each `signals:` entry and each `rules:` override. Exit 0
    when valid, 2 with file:line and key otherwise."""
    if file is not None and not file.is_file():
        raise ConfigError("no such config file", file=str(file))
    from herdwatch.rules import check_config

    cfg = check_config(file)
    where = ", ".join(cfg.files) or "defaults and HERDWATCH_* variables (no config file found)"
    err_console().print(f"SUCCESS: {where} is valid", highlight=False, markup=False)
