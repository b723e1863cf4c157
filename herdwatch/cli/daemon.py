"""`herdwatch daemon`, `herdwatch silence add|list|expire` and `herdwatch outbox list`."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from herdwatch.cli._app import CONFIG_OPTION, cli
from herdwatch.config import Config, load_config, parse_duration
from herdwatch.errors import ConfigError, HerdwatchError

__all__ = ["daemon", "outbox", "silence"]

log = logging.getLogger("herdwatch.daemon")

OUTBOX_OPTION = click.option(
    "--outbox",
    "outbox_path",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The outbox (SQLite); default alerts.outbox, else $STATE_DIRECTORY/outbox.db, else "
    "$XDG_STATE_HOME/herdwatch/outbox.db.",
)


def _config_parts(cfg: Config) -> tuple[list[Any], dict[str, str]]:
    """The rules and signal overrides a config asks for (ConfigError at the key's file:line)."""
    from herdwatch.cli._sources import load_rules
    from herdwatch.rules import check_signals

    overrides = dict(cfg.signals)
    if cfg.sources.prometheus is not None:
        from herdwatch.sources.prometheus import scan_overrides

        overrides = dict(scan_overrides(cfg.signals))
    try:
        check_signals(cfg, promql=cfg.sources.prometheus is not None)
    except ConfigError as exc:
        raise cfg.relocate(exc) from None
    return load_rules(cfg), overrides


def _load(config_file: Path | None, replay: Path | None) -> Config:
    if replay is not None:
        return load_config(config_file, replay_dir=replay)
    from herdwatch.cli._sources import discover

    cfg = load_config(config_file)
    if not cfg.sources.any:
        cfg = dataclasses.replace(cfg, sources=discover())
        if not cfg.sources.any:
            raise HerdwatchError(
                "no sources: none configured and none found on this machine; "
                "set sources: in the config, or give --replay DIR"
            )
    return cfg


def _outbox_path(cfg: Config, flag: Path | None) -> Path:
    from herdwatch.daemon import default_outbox

    if flag is not None:
        return flag
    if cfg.alerts.outbox:
        return Path(cfg.alerts.outbox).expanduser()
    return default_outbox()


@cli.command()
@CONFIG_OPTION
@click.option(
    "--replay",
    metavar="DIR",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Drive the loop on a recording (a drill through the real notifiers).",
)
@click.option(
    "--speed",
    default="1",
    show_default=True,
    metavar="N|max",
    help="With --replay: simulated seconds per real second, or max.",
)
@OUTBOX_OPTION
@click.option("--listen", metavar="HOST:PORT", help="Serve /metrics and /healthz here.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines (default daemon.log_format).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every poll and delivery (debug).")
def daemon(
    config_file: Path | None,
    replay: Path | None,
    speed: str,
    outbox_path: Path | None,
    listen: str | None,
    log_format: str | None,
    verbose: bool,
) -> None:
    """Watch the sources continuously and notify once per herd (SMTP, webhook, Alertmanager).

    Every notification goes through a durable outbox (at-least-once, each with an idempotency
    key). With --replay DIR the same loop runs on the recording's clock and the command exits
    0 once the recording has ended, every alert has resolved and the outbox has drained
    (1 when a notifier did not take its notifications within daemon.drain_timeout; they stay
    queued for the next run). SIGTERM drains the outbox (daemon.drain_timeout) and exits 0;
    SIGHUP reloads the config.
    """
    from herdwatch.alert import Outbox
    from herdwatch.daemon import Daemon, DaemonSetup, finite_speed, setup_logging

    try:
        rate = finite_speed(speed)
    except ValueError:
        raise ConfigError(
            f"expected a positive number or max, got {speed!r}", key="--speed"
        ) from None
    cfg = _load(config_file, replay)
    setup_logging(log_format or cfg.daemon.log_format, logging.DEBUG if verbose else logging.INFO)
    rules, overrides = _config_parts(cfg)
    if replay is not None:
        from herdwatch.config._zones import log_zone
        from herdwatch.sources.replay import ReplaySource

        src = ReplaySource(
            replay,
            memory_budget=cfg.sources.replay_memory,
            default_tz=log_zone(cfg.sources.log_timezone),
        )
        span = src.span
        if span is None:
            raise HerdwatchError(f"{replay}: the recording holds no samples")
        setup = DaemonSetup(cfg, [src], rules, overrides, (span[0], span[1], rate))
    else:
        from herdwatch.cli._sources import build_sources

        setup = DaemonSetup(cfg, build_sources(cfg), rules, overrides)

    def reload() -> DaemonSetup:
        new = _load(config_file, replay)
        new_rules, new_overrides = _config_parts(new)
        return dataclasses.replace(setup, cfg=new, rules=new_rules, signal_overrides=new_overrides)

    scratch = None
    if outbox_path is None and cfg.alerts.outbox is None and replay is not None:
        # A drill gets an outbox of its own: the live daemon's would hold the same keys (the
        # recording's herds) as sent, and a second drill would then send nothing.
        scratch = Path(tempfile.mkdtemp(prefix="herdwatch-drill-"))
        path = scratch / "outbox.db"
    else:
        path = _outbox_path(cfg, outbox_path)
    box = Outbox(path, dead_after=cfg.alerts.dead_after)
    log.info("outbox %s", path)
    undelivered = 0
    try:
        d = Daemon(setup, box, reload=reload, listen=listen)
        code = asyncio.run(d.run())
        undelivered = box.depth()
    finally:
        box.close()
        if scratch is not None and not undelivered:
            shutil.rmtree(scratch, ignore_errors=True)
    if scratch is not None and undelivered:
        # nothing is lost: the drill's own outbox outlives it when it still holds alerts
        log.error("kept the drill's outbox %s: --outbox %s sends what it holds", path, path)
    raise SystemExit(code)


def _open_outbox(config_file: Path | None, outbox_path: Path | None) -> Any:
    from herdwatch.alert import Outbox

    cfg = load_config(config_file) if outbox_path is None else Config()
    path = _outbox_path(cfg, outbox_path)
    return Outbox(path)


def _when(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@cli.group()
def silence() -> None:
    """Silence alerts by matcher for a while (stored beside the outbox)."""


@silence.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--duration", default="2h", show_default=True, help="How long it holds.")
@click.option("--comment", default="", help="Why (shown by silence list).")
@CONFIG_OPTION
@OUTBOX_OPTION
def silence_add(
    matchers: tuple[str, ...],
    duration: str,
    comment: str,
    config_file: Path | None,
    outbox_path: Path | None,
) -> None:
    """Add a silence: MATCHERS like alertname=cache_stampede instance=~'redis-.*'."""
    from herdwatch.alert import parse_matcher

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--duration") from None
    try:
        parsed = [parse_matcher(m) for m in matchers]
    except ValueError as exc:
        raise ConfigError(str(exc), key="MATCHERS") from None
    box = _open_outbox(config_file, outbox_path)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    s = box.add_silence(parsed, duration=seconds, comment=comment, created_by=user)
    click.echo(f"{s.id} until {_when(s.ends)}: {' '.join(str(m) for m in s.matchers)}")


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="Expired silences too.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@CONFIG_OPTION
@OUTBOX_OPTION
def silence_list(
    show_all: bool, fmt: str, config_file: Path | None, outbox_path: Path | None
) -> None:
    """List the active silences (or all of them)."""
    box = _open_outbox(config_file, outbox_path)
    found = box.silences(include_expired=show_all)
    if fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "id": s.id,
                        "matchers": [str(m) for m in s.matchers],
                        "starts": s.starts,
                        "ends": s.ends,
                        "comment": s.comment,
                        "created_by": s.created_by,
                    }
                    for s in found
                ]
            )
        )
        return
    for s in found:
        click.echo(
            f"{s.id}  {_when(s.starts)} .. {_when(s.ends)}  "
            f"{' '.join(str(m) for m in s.matchers)}  {s.comment}"
        )


@silence.command("expire")
@click.argument("silence_id")
@CONFIG_OPTION
@OUTBOX_OPTION
def silence_expire(silence_id: str, config_file: Path | None, outbox_path: Path | None) -> None:
    """End the silence SILENCE_ID (a prefix is enough) now."""
    box = _open_outbox(config_file, outbox_path)
    if not box.expire_silence(silence_id):
        raise HerdwatchError(f"no active silence {silence_id!r}")
    click.echo(f"expired {silence_id}")


@cli.group()
def outbox() -> None:
    """Inspect the daemon's outbox of notifications."""


@outbox.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["queued", "sent", "dead", "superseded"]),
    help="Only these states (repeatable; default all).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--limit", default=100, show_default=True)
@CONFIG_OPTION
@OUTBOX_OPTION
def outbox_list(
    states: tuple[str, ...],
    fmt: str,
    limit: int,
    config_file: Path | None,
    outbox_path: Path | None,
) -> None:
    """List notifications, newest first: state, notifier, attempts, title, last error."""
    from herdwatch.alert import STATES

    box = _open_outbox(config_file, outbox_path)
    rows = box.rows(states or STATES, limit=limit)
    if fmt == "json":
        click.echo(json.dumps([r.to_json() for r in rows]))
        return
    for r in rows:
        err = f"  ({r.last_error})" if r.last_error else ""
        click.echo(
            f"{_when(r.created)}  {r.state:<10} {r.notifier:<12} {r.attempts:>3}  "
            f"{r.notification.title}{err}"
        )
