"""The `herdwatch` command: scan recorded incidents or live sources, capture a Prometheus range
as a replay directory, list and test the detection rules.

Exit codes: 0 no findings, 1 findings (or a failed rule test), 2 bad input or a source that
cannot be read (one line on stderr: `herdwatch: <message>`), 130 interrupted,
3 an internal error (a bug: the traceback is printed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sys
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from herdwatch import __version__
from herdwatch.config import (
    Config,
    PostgresConfig,
    PrometheusConfig,
    RedisConfig,
    SourcesConfig,
    TimeSpec,
    load_config,
    parse_duration,
    parse_time,
    redact,
)
from herdwatch.errors import ConfigError, HerdwatchError, ReplayFormatError
from herdwatch.model import RawData, SourceStatus
from herdwatch.render import (
    format_time,
    render_json,
    render_report,
    render_rule_results,
    render_rules,
    render_rules_json,
)

__all__ = ["DEFAULT_DURATION", "DISCOVERY", "PROGRESS_MIN_BYTES", "cli", "main"]

# Below this a replay parses in about a second: a progress bar would only flicker.
PROGRESS_MIN_BYTES = 32 * 1024 * 1024
_REPLAY_PATTERNS = ("*.om", "*.om.gz", "*.log", "*.log.gz")
# How long direct sources (Redis INFO, pg_stat_activity, /proc) are sampled without --duration.
DEFAULT_DURATION = 10.0
# Where `herdwatch scan` with no source looks (the usual local ports and paths).
DISCOVERY = {
    "prometheus": "http://127.0.0.1:9090",
    "redis": "redis://127.0.0.1:6379/0",
    "postgres": "postgresql://127.0.0.1:5432/postgres",
    "postgres_socket": "/var/run/postgresql/.s.PGSQL.5432",
    "host": "/proc/stat",
}


class _UserError(click.ClickException):
    """A HerdwatchError on its way out: one line on stderr, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"herdwatch: {self.message}", err=True)


class _Output(Console):
    """stdout for reports: when the reader goes away (`herdwatch scan | head`), the rest is
    dropped and the exit code still tells what was found (rich would exit 1 instead)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _Group(click.Group):
    """Maps every HerdwatchError raised below it to _UserError (the one place that does)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HerdwatchError as exc:
            raise _UserError(redact(str(exc))) from exc
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise _UserError(redact(f"{exc.filename}: {exc.strerror}")) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="herdwatch")
def cli() -> None:
    """Find thundering herds (cache stampedes, pool exhaustion, retry storms, cron herds...)
    in metrics and logs, recorded or live, with the evidence and the fix."""


_CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="HERDWATCH_CONFIG",
    help="Config file (default ./herdwatch.yaml, else $XDG_CONFIG_HOME/herdwatch/herdwatch.yaml).",
)


def _time_option(value: str | None, flag: str) -> TimeSpec | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key=flag) from None


def _relocate(exc: ConfigError, cfg: Config) -> ConfigError:
    """A ConfigError raised deeper down without a file, given the file:line of its key."""
    if exc.file is not None or not exc.key:
        return exc
    message = str(exc)
    if message.startswith(f"{exc.key}: "):
        message = message[len(exc.key) + 2 :]
    return cfg.error(exc.key, message)


def _check_signals(cfg: Config, *, promql: bool = False) -> None:
    """Every `signals:` entry names a known logical signal and a valid family or selector (or,
    with a Prometheus source, any PromQL); checked before anything is read, with the file:line
    of the entry."""
    from herdwatch.signals import LOGICAL_SIGNALS, parse_selector

    for name, target in cfg.signals.items():
        key = f"signals.{name}"
        if name not in LOGICAL_SIGNALS:
            raise cfg.error(key, f"unknown signal (known: {', '.join(sorted(LOGICAL_SIGNALS))})")
        if promql:
            continue
        try:
            parse_selector(target)
        except ConfigError as exc:
            raise cfg.error(key, str(exc)) from None


def _load_rules(cfg: Config) -> list[Any]:
    """The rules with the config's overrides; a bad override names its file:line."""
    from herdwatch.rules import load_rules

    try:
        return list(load_rules(overrides=cfg.rules))
    except ConfigError as exc:
        raise _relocate(exc, cfg) from None


def _replay_size(directory: Path) -> int:
    return sum(p.stat().st_size for pat in _REPLAY_PATTERNS for p in directory.glob(pat))


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar on stderr, or None when nobody would see it."""
    err = Console(stderr=True)
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
) -> Any:
    from herdwatch.engine import scan as engine_scan
    from herdwatch.sources.replay import load_replay

    # Check the config before reading a possibly large replay.
    _check_signals(cfg)
    _load_rules(cfg)
    abs_since = since.absolute if since else None
    abs_until = until.absolute if until else None
    with _progress(_replay_size(directory)) as progress:
        raw: RawData = load_replay(directory, since=abs_since, until=abs_until, progress=progress)
    # In a replay, "2h" counts back from the end of the recording, not from now.
    window = raw.window()
    end = window[1] if window else 0.0
    try:
        return engine_scan(
            raw,
            signal_overrides=cfg.signals,
            rule_overrides=cfg.rules,
            since=since.resolve(end) if since else None,
            until=until.resolve(end) if until else None,
        )
    except ConfigError as exc:
        raise _relocate(exc, cfg) from None


def _live_config(cfg: Config, flagged: set[str]) -> Config:
    """With source flags, only the flagged sources are read (their other keys, such as
    password_env, may still come from the config); without, every configured source."""
    if not flagged:
        return cfg
    src = cfg.sources
    return dataclasses.replace(
        cfg,
        sources=SourcesConfig(
            prometheus=src.prometheus if "prometheus" in flagged else None,
            redis=src.redis if "redis" in flagged else None,
            postgres=src.postgres if "postgres" in flagged else None,
            host=False,
            logs=src.logs if "logs" in flagged else (),
        ),
    )


def _build_sources(cfg: Config) -> list[Any]:
    """One Source per configured system (see herdwatch.sources.base.Source)."""
    src = cfg.sources
    out: list[Any] = []
    if src.prometheus is not None:
        from herdwatch.sources.prometheus import PrometheusSource

        out.append(PrometheusSource(src.prometheus, cfg.signals))
    if src.redis is not None:
        from herdwatch.sources.redis_direct import RedisDirectSource

        out.append(RedisDirectSource(src.redis))
    if src.postgres is not None:
        from herdwatch.sources.postgres_direct import PostgresDirectSource

        out.append(PostgresDirectSource(src.postgres))
    if src.host:
        from herdwatch.sources.host import HostSource

        out.append(HostSource())
    if src.logs:
        from herdwatch.sources.logtail import LogTailSource

        out.append(LogTailSource(src.logs))
    return out


async def _collect(sources: Sequence[Any], window: Any, *, tolerant: bool = False) -> RawData:
    """Every source's data, read concurrently. A source that cannot be read is fatal, unless
    `tolerant` (discovered sources): then it is listed with ok=false and the scan goes on."""
    from herdwatch.sources.base import merge

    parts = await asyncio.gather(*(s.collect(window) for s in sources), return_exceptions=True)
    if tolerant:
        parts = [
            RawData(sources=[SourceStatus(src.name, False, str(part))])
            if isinstance(part, HerdwatchError)
            else part
            for src, part in zip(sources, parts, strict=True)
        ]
    # Report a source that cannot be read before anything else went wrong.
    for part in parts:
        if isinstance(part, HerdwatchError):
            raise part
    for part in parts:
        if isinstance(part, BaseException):
            raise part
    return merge([p for p in parts if isinstance(p, RawData)])


def _listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _prometheus_ready(url: str, timeout: float = 0.5) -> bool:
    # No proxy: discovery only ever looks at this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/-/ready", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def _discover() -> SourcesConfig:
    """The sources found on this machine: Prometheus answering /-/ready, something listening
    on the Redis and Postgres ports (or the Postgres socket), and the host's /proc/stat."""
    found = DISCOVERY
    prom = found["prometheus"]
    redis_url, pg_dsn = found["redis"], found["postgres"]
    redis_at = urllib.parse.urlsplit(redis_url)
    pg_at = urllib.parse.urlsplit(pg_dsn)
    pg_socket = Path(found["postgres_socket"])
    return SourcesConfig(
        prometheus=PrometheusConfig(url=prom) if _prometheus_ready(prom) else None,
        redis=RedisConfig(url=redis_url)
        if _listening(redis_at.hostname or "127.0.0.1", redis_at.port or 6379)
        else None,
        postgres=PostgresConfig(dsn=pg_dsn)
        if _listening(pg_at.hostname or "127.0.0.1", pg_at.port or 5432) or pg_socket.exists()
        else None,
        host=Path(found["host"]).is_file(),
    )


def _scan_live(
    cfg: Config,
    duration: float,
    since: TimeSpec | None,
    until: TimeSpec | None,
    *,
    discovered: bool = False,
) -> Any:
    from herdwatch.engine import scan as engine_scan
    from herdwatch.sources.base import CollectWindow

    sources = _build_sources(cfg)
    overrides: Mapping[str, str] = cfg.signals
    if cfg.sources.prometheus is not None:
        from herdwatch.sources.prometheus import scan_overrides

        # PromQL overrides are queried by the source; the engine sees the series' names.
        overrides = scan_overrides(cfg.signals)
    _check_signals(cfg, promql=cfg.sources.prometheus is not None)
    _load_rules(cfg)
    now = time.time()
    window = CollectWindow(
        since=since.resolve(now) if since else None,
        until=until.resolve(now) if until else None,
        duration=duration,
    )
    err = Console(stderr=True)
    names = ", ".join(s.name for s in sources)
    if err.is_terminal and duration >= 1:
        with err.status(f"sampling {names} for {duration:g}s"):
            raw = asyncio.run(_collect(sources, window, tolerant=discovered))
    else:
        raw = asyncio.run(_collect(sources, window, tolerant=discovered))
    try:
        return engine_scan(
            raw,
            signal_overrides=overrides,
            rule_overrides=cfg.rules,
            since=window.since,
            until=window.until,
        )
    except ConfigError as exc:
        raise _relocate(exc, cfg) from None


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
@_CONFIG_OPTION
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
    config_file: Path | None,
) -> None:
    """Scan for herds. Exit 0: none found, 1: findings, 2: bad input.

    Sources: --replay DIR (a recording), or live: --prometheus, --redis, --postgres, --logs
    (only these when given), else the sources of herdwatch.yaml, else what is found on this
    machine. With --replay, durations in --since/--until count back from the end of the
    recording, otherwise from now.
    """
    since_t = _time_option(since, "--since")
    until_t = _time_option(until, "--until")
    if (
        since_t
        and until_t
        and since_t.absolute is not None
        and until_t.absolute is not None
        and since_t.absolute >= until_t.absolute
    ):
        raise ConfigError("must be later than --since", key="--until")
    flags = {
        "sources.prometheus.url": prometheus,
        "sources.redis.url": redis,
        "sources.postgres.dsn": postgres,
        "sources.logs": logs,
    }
    flagged = {k.split(".")[1] for k, v in flags.items() if v}
    if replay is not None:
        if flagged or duration:
            given = ", ".join(f"--{f}" for f in sorted(flagged)) or "--duration"
            raise ConfigError(f"cannot be combined with {given}", key="--replay")
        cfg = load_config(config_file, replay_dir=replay)
        result = _scan_replay(replay, cfg, since_t, until_t)
    else:
        cfg = _live_config(load_config(config_file, flags=flags), flagged)
        discovered = not cfg.sources.any
        if discovered:
            cfg = dataclasses.replace(cfg, sources=_discover())
            if not cfg.sources.any:
                raise HerdwatchError(
                    "no sources: none given and none found on this machine (tried "
                    + ", ".join(f"{k} {v}" for k, v in DISCOVERY.items())
                    + "); give --replay DIR, --prometheus, --redis, --postgres or --logs"
                )
            names = [s.name for s in _build_sources(cfg)]
            Console(stderr=True).print(f"discovered: {', '.join(names)}", highlight=False)
        direct = bool(cfg.sources.redis or cfg.sources.postgres or cfg.sources.host)
        if duration is not None:
            try:
                seconds = parse_duration(duration)
            except ValueError as exc:
                raise ConfigError(str(exc), key="--duration") from None
        else:
            seconds = DEFAULT_DURATION if direct else 0.0
        result = _scan_live(cfg, seconds, since_t, until_t, discovered=discovered)
    if fmt == "json":
        click.echo(render_json(result))
    else:
        render_report(result, _Output(), config_files=cfg.files)
    ctx.exit(1 if result.findings else 0)


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
@_CONFIG_OPTION
def capture(
    prometheus: str | None,
    since: str | None,
    until: str | None,
    output: Path,
    config_file: Path | None,
) -> None:
    """Write a Prometheus range as a replay directory (metrics and the herdwatch.yaml that
    reads them), to share an incident or rescan it offline with --replay."""
    from herdwatch.capture import capture as capture_range

    since_t = _time_option(since, "--since")
    until_t = _time_option(until, "--until")
    cfg = load_config(config_file, flags={"sources.prometheus.url": prometheus})
    if cfg.sources.prometheus is None:
        raise ConfigError("a Prometheus is needed: give --prometheus URL", key="sources.prometheus")
    _check_signals(cfg, promql=True)
    _load_rules(cfg)
    now = time.time()
    used = {"signals": dict(cfg.signals), "rules": {k: dict(v) for k, v in cfg.rules.items()}}
    done = capture_range(
        cfg.sources.prometheus,
        since_t.resolve(now) if since_t else None,
        until_t.resolve(now) if until_t else None,
        output,
        used,
    )
    click.echo(
        f"captured {done.series} series, {done.samples} samples at a {done.step:g}s step "
        f"({format_time(done.since)} .. {format_time(done.until)} UTC) into {done.directory}",
        err=True,
    )


@cli.group(cls=_Group)
def rules() -> None:
    """The detection rules (rules/*.yaml) and their tests against the fixtures."""


@rules.command("list")
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich")
@_CONFIG_OPTION
def rules_list(fmt: str, config_file: Path | None) -> None:
    """Each rule: id, detector, description, parameters with their defaults and docs.

    Values changed by the config are marked with *."""
    cfg = load_config(config_file)
    items = _load_rules(cfg)
    if fmt == "json":
        click.echo(render_rules_json(items))
    else:
        render_rules(items, _Output())


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
    from herdwatch.ruletest import run_fixtures

    results = run_fixtures(fixtures)
    if not results:
        raise ReplayFormatError("no fixtures with expected.json here", file=str(fixtures))
    render_rule_results(results, _Output(soft_wrap=True))
    ctx.exit(0 if all(r.passed for r in results) else 1)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: runs the CLI and exits with its code (see the module doc)."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="herdwatch",
                      standalone_mode=False)  # fmt: skip
        code = rv if isinstance(rv, int) else 0
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("herdwatch: interrupted", err=True)
        code = 130
    except BrokenPipeError:
        # The reader went away (`herdwatch scan ... | head`): not an error of ours, and the
        # interpreter must not fail again flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as exc:
        traceback.print_exc()
        click.echo(f"herdwatch: internal error (a bug, please report it): {exc!r}", err=True)
        code = 3
    sys.exit(code)
