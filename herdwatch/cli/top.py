"""`herdwatch top`: the live screen (herdwatch.tui) over a replay or over live sources."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from herdwatch.cli._app import CONFIG_OPTION, cli
from herdwatch.cli._sources import build_sources, engine_overrides, live_setup, load_rules
from herdwatch.config import Config, load_config
from herdwatch.config._zones import log_zone
from herdwatch.errors import ConfigError, HerdwatchError
from herdwatch.tui.data import DEFAULT_BUDGET

__all__ = ["parse_speed", "top"]


def parse_speed(text: str) -> float:
    """`--speed`: a positive factor, or `max` (as fast as the engine ticks)."""
    if text.strip().lower() == "max":
        return math.inf
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not (speed > 0 and math.isfinite(speed)):
        raise ConfigError(f"{text!r} is not a positive number or 'max'", key="--speed")
    return speed


def _replay(directory: Path, config_file: Path | None, speed: float) -> tuple[Any, ...]:
    from herdwatch.rules import check_signals
    from herdwatch.sources.replay import ReplaySource
    from herdwatch.tui import PausableClock, ReplayInfo

    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such directory", key="--replay")
    cfg = load_config(config_file, replay_dir=directory)
    check_signals(cfg)
    source = ReplaySource(
        directory,
        memory_budget=cfg.sources.replay_memory,
        default_tz=log_zone(cfg.sources.log_timezone),
    )
    span = source.span
    if span is None:
        raise HerdwatchError(f"{directory}: nothing recorded (no *.om or *.log data)")
    clock = PausableClock(span[0], span[1], speed)
    info = ReplayInfo(directory.name or str(directory), span[0], span[1], speed)
    return cfg, [source], dict(cfg.signals), clock, info


def _live(
    flags: dict[str, object], config_file: Path | None
) -> tuple[Config, list[Any], dict[str, str]]:
    """Sources as `herdwatch scan` picks them: the flags, else the config, else discovery."""
    from herdwatch.rules import check_signals

    cfg, _ = live_setup(config_file, flags)
    check_signals(cfg, promql=cfg.sources.prometheus is not None)
    return cfg, build_sources(cfg), engine_overrides(cfg)


@cli.command()
@click.option(
    "--replay",
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="Show a recorded incident unfold (DIR/*.om[.gz], *.log[.gz], herdwatch.yaml).",
)
@click.option(
    "--speed",
    metavar="N|max",
    default="1",
    show_default=True,
    help="Replay speed: simulated seconds per second, or max.",
)
@click.option("--prometheus", metavar="URL", help="Read this Prometheus.")
@click.option("--redis", metavar="URL", help="Sample this Redis directly (INFO, key TTLs).")
@click.option("--postgres", metavar="DSN", help="Sample this Postgres (pg_stat_activity).")
@click.option("--logs", metavar="GLOB", multiple=True, help="Tail these log files.")
@click.option(
    "--interval",
    type=click.FloatRange(0.5, 5.0),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes (+/- change it: 0.5 to 5).",
)
@click.option(
    "--cpu-budget",
    type=click.FloatRange(0, 100),
    default=DEFAULT_BUDGET * 100,
    show_default=True,
    help="Live: the % of a core polling and ticking may use; ticks are spaced out beyond (0: off).",
)
@click.option("--exit-at-end", is_flag=True, help="With --replay: quit when the recording ends.")
@CONFIG_OPTION
def top(
    replay: Path | None,
    speed: str,
    prometheus: str | None,
    redis: str | None,
    postgres: str | None,
    logs: tuple[str, ...],
    interval: float,
    cpu_budget: float,
    exit_at_end: bool,
    config_file: Path | None,
) -> None:
    """The herd as it happens: signals on one timeline, findings as they fire, what to do.

    Keys: q quit, p pause, +/- refresh interval, arrows select, enter opens a finding, esc back,
    s per-subject rows, / filters signals, ? help. Sources as for `herdwatch scan`: --replay
    DIR (with --speed), or --prometheus/--redis/--postgres/--logs, else herdwatch.yaml, else
    what runs on this machine.
    """
    from rich.console import Console

    from herdwatch.engine import Watcher
    from herdwatch.tui import Feed, Top, run_in_terminal

    flags: dict[str, object] = {
        "sources.prometheus.url": prometheus,
        "sources.redis.url": redis,
        "sources.postgres.dsn": postgres,
        "sources.logs": logs,
    }
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise HerdwatchError("top needs a terminal; for a report use herdwatch scan")
    info = clock = None
    if replay is not None:
        if any(flags.values()):
            given = ", ".join(f"--{k.split('.')[1]}" for k, v in flags.items() if v)
            raise ConfigError(f"cannot be combined with {given}", key="--replay")
        cfg, sources, overrides, clock, info = _replay(replay, config_file, parse_speed(speed))
    else:
        cfg, sources, overrides = _live(flags, config_file)
    rules = load_rules(cfg)
    # The daemon's Watcher: the same rules, overrides and lookback, so the same Snapshots.
    watcher = Watcher(sources, rules=rules, signal_overrides=overrides)
    feed = Feed(watcher, clock=clock, interval=interval, on_snapshot=lambda _: None,
                tick=cfg.daemon.interval, budget=cpu_budget / 100)  # fmt: skip
    session = Top(feed, Console(), replay=info, exit_at_end=exit_at_end)
    try:
        run_in_terminal(session)
    except ConfigError as exc:
        raise cfg.relocate(exc) from None
