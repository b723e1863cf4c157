"""`herdwatch scan`: one Watcher pass over a fixed window of a recording or of live sources."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from herdwatch.cli._app import CONFIG_OPTION, Output, cli, duration_flag, err_console, time_option
from herdwatch.cli._sources import build_sources, engine_overrides, live_setup, load_rules
from herdwatch.config import Config, TimeSpec, load_config, parse_duration
from herdwatch.errors import ConfigError, HerdwatchError
from herdwatch.model import ScanResult

__all__ = ["DEFAULT_DURATION", "PROGRESS_MIN_BYTES", "SEVERITIES", "run_scan", "scan"]

# Below this a replay parses in about a second: a progress bar would only flicker.
PROGRESS_MIN_BYTES = 32 * 1024 * 1024
# How long direct sources (Redis INFO, pg_stat_activity, /proc) are sampled without --duration.
DEFAULT_DURATION = 10.0
#: lowest first; `--fail-on` names the lowest that makes exit 1
SEVERITIES = ("info", "warning", "critical")
# keys of the flags that bound how a source is read (they name no source)
_BOUNDS = ("max_queries", "max_range")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar on stderr, or None when nobody would see it."""
    err = err_console()
    if total < PROGRESS_MIN_BYTES or not err.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("reading replay", total=total)

        def update(done: int, total_bytes: int) -> None:
            bar.update(task, completed=done, total=total_bytes)

        yield update


def _scan_replay(
    directory: Path, cfg: Config, since: TimeSpec | None, until: TimeSpec | None
) -> ScanResult:
    from herdwatch.config._zones import log_zone
    from herdwatch.engine import Watcher

    # Check the config before reading a possibly large replay.
    from herdwatch.rules import check_signals
    from herdwatch.sources.base import CollectWindow
    from herdwatch.sources.replay import ReplaySource, replay_size

    check_signals(cfg)
    rules = load_rules(cfg)
    source = ReplaySource(
        directory,
        since=since.absolute if since else None,
        until=until.absolute if until else None,
        memory_budget=cfg.sources.replay_memory,
        default_tz=log_zone(cfg.sources.log_timezone),
    )
    with _progress(replay_size(directory)) as progress:
        source.progress = progress
        span = source.span
    # In a replay, "2h" counts back from the end of the recording, not from now.
    end = span[1] if span else 0.0
    watcher = Watcher([source], rules=rules, signal_overrides=cfg.signals, lookback=None)
    # Read here, as Watcher.poll would (everything up to the end), but without an event loop:
    # asyncio and its imports (~15 ms) are left to the live sources.
    watcher.feed(source.name, end, source.read(CollectWindow(until=end)))
    try:
        return watcher.tick(
            end,
            since=since.resolve(end) if since else None,
            until=until.resolve(end) if until else None,
        ).result
    except ConfigError as exc:
        raise cfg.relocate(exc) from None


def _scan_live(
    cfg: Config,
    duration: float,
    since: TimeSpec | None,
    until: TimeSpec | None,
    *,
    discovered: bool = False,
    quiet: bool = False,
) -> ScanResult:
    import asyncio

    from herdwatch.engine import Watcher

    sources = build_sources(cfg)
    overrides = engine_overrides(cfg)
    from herdwatch.rules import check_signals

    check_signals(cfg, promql=cfg.sources.prometheus is not None)
    rules = load_rules(cfg)
    if discovered and not quiet:
        # said once the config has passed its checks: bad input stays one line
        err_console().print(f"discovered: {', '.join(s.name for s in sources)}", highlight=False)
    now = time.time()
    lo = since.resolve(now) if since else None
    hi = until.resolve(now) if until else None
    watcher = Watcher(sources, rules=rules, signal_overrides=overrides, lookback=None)
    err = err_console()
    names = ", ".join(s.name for s in sources)
    poll = watcher.poll(now, since=lo, until=hi, duration=duration, strict=not discovered)
    if err.is_terminal and duration >= 1:
        with err.status(f"sampling {names} for {duration:g}s"):
            asyncio.run(poll)
    else:
        asyncio.run(poll)
    try:
        return watcher.tick(time.time(), since=lo, until=hi).result
    except ConfigError as exc:
        raise cfg.relocate(exc) from None


def run_scan(
    *,
    replay: Path | None,
    flags: dict[str, object],
    duration: str | None,
    since: TimeSpec | None,
    until: TimeSpec | None,
    config_file: Path | None,
    quiet: bool = False,
) -> tuple[ScanResult, Config]:
    """The scan the flags ask for, and the config it used; HerdwatchError on bad input."""
    # A bound such as sources.prometheus.max_queries does not choose a source.
    flagged = {k.split(".")[1] for k, v in flags.items() if v and not k.endswith(_BOUNDS)}
    if replay is not None:
        if flagged or duration:
            given = ", ".join(f"--{f}" for f in sorted(flagged)) or "--duration"
            raise ConfigError(f"cannot be combined with {given}", key="--replay")
        cfg = load_config(config_file, replay_dir=replay)
        return _scan_replay(replay, cfg, since, until), cfg
    cfg, discovered = live_setup(config_file, flags)
    direct = bool(cfg.sources.redis or cfg.sources.postgres or cfg.sources.host)
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise ConfigError(str(exc), key="--duration") from None
    else:
        seconds = DEFAULT_DURATION if direct else 0.0
    return _scan_live(cfg, seconds, since, until, discovered=discovered, quiet=quiet), cfg


def nothing_to_scan(result: ScanResult) -> HerdwatchError:
    """The error for a scan that read its sources but could evaluate no rule."""
    why = "; ".join(f"{n.rule}: {n.why}" for n in result.not_evaluated) or "no rule is enabled"
    return HerdwatchError(f"nothing to scan: no rule could run ({why})")


@cli.command()
@click.option(
    "--replay",
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="A recorded incident: DIR/*.om[.gz], DIR/*.log[.gz], DIR/herdwatch.yaml.",
)
@click.option("--prometheus", metavar="URL", help="Read the window from this Prometheus.")
@click.option("--redis", metavar="URL", help="Sample this Redis directly (INFO, key TTLs).")
@click.option("--postgres", metavar="DSN", help="Sample this Postgres (pg_stat_activity).")
@click.option("--logs", metavar="GLOB", multiple=True, help="Read (and tail) these log files.")
@click.option(
    "--duration",
    metavar="DURATION",
    help="How long to sample direct sources (default 10s; 0s for one sample).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rich", "json"]),
    default="rich",
    show_default=True,
    help="A report for people, or the JSON contract for scripts.",
)
@click.option("--since", metavar="TIME", help="Start: a duration back (2h), RFC 3339 or unix s.")
@click.option("--until", metavar="TIME", help="End: a duration back (5m), RFC 3339 or unix s.")
@click.option(
    "--fail-on",
    type=click.Choice(SEVERITIES[1:]),
    default="warning",
    show_default=True,
    help="The lowest severity that makes the exit code 1.",
)
@click.option("-q", "--quiet", is_flag=True, help="No report; only the exit code (and errors).")
@click.option(
    "--max-queries",
    type=click.IntRange(1, 2**31 - 1),
    help="Most HTTP requests to Prometheus in one scan (default 2000).",
)
@click.option(
    "--max-range",
    metavar="DURATION",
    callback=duration_flag,
    help="Longest range read from Prometheus in one scan (default 31d).",
)
@CONFIG_OPTION
@click.pass_context
def scan(
    ctx: click.Context,
    replay: Path | None,
    prometheus: str | None,
    redis: str | None,
    postgres: str | None,
    logs: tuple[str, ...],
    duration: str | None,
    fmt: str,
    since: str | None,
    until: str | None,
    fail_on: str,
    quiet: bool,
    max_queries: int | None,
    max_range: float | None,
    config_file: Path | None,
) -> None:
    """Scan for herds. Exit 0: none found, 1: findings, 2: bad input.

    Sources: --replay DIR (a recording), or live: --prometheus, --redis, --postgres, --logs
    (only these when given), else the sources of herdwatch.yaml, else what is found on this
    machine. With --replay, durations in --since/--until count back from the end of the
    recording, otherwise from now.
    """
    from herdwatch.render import render_json, render_report

    since_t = time_option(since, "--since")
    until_t = time_option(until, "--until")
    if (
        since_t
        and until_t
        and since_t.absolute is not None
        and until_t.absolute is not None
        and since_t.absolute >= until_t.absolute
    ):
        raise ConfigError("must be later than --since", key="--until")
    flags: dict[str, object] = {
        "sources.prometheus.url": prometheus,
        "sources.redis.url": redis,
        "sources.postgres.dsn": postgres,
        "sources.logs": logs,
        "sources.prometheus.max_queries": max_queries,
        "sources.prometheus.max_range": max_range,
    }
    result, cfg = run_scan(
        replay=replay,
        flags=flags,
        duration=duration,
        since=since_t,
        until=until_t,
        config_file=config_file,
        quiet=quiet,
    )
    if result.evaluated == 0:
        raise nothing_to_scan(result)
    if not quiet:
        if fmt == "json":
            click.echo(render_json(result))
        else:
            render_report(result, Output(), config_files=cfg.files)
    lowest = SEVERITIES.index(fail_on)
    failing = [f for f in result.findings if SEVERITIES.index(f.severity) >= lowest]
    ctx.exit(1 if failing else 0)
