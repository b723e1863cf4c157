"""The `herdwatch` command group, its error mapping and the options its commands share.

Exit codes: 0 no findings, 1 findings (or a failed rule test), 2 bad input or a source that
cannot be read (one line on stderr: `herdwatch: <message>`), 130 interrupted,
3 an internal error (a bug: the traceback is printed).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from herdwatch import __version__
from herdwatch.config import TimeSpec, parse_duration, parse_time, redact
from herdwatch.errors import ConfigError, HerdwatchError

__all__ = [
    "COMMANDS",
    "CONFIG_OPTION",
    "Output",
    "cli",
    "duration_flag",
    "err_console",
    "main",
    "time_option",
]


class _UserError(click.ClickException):
    """A HerdwatchError on its way out: one line on stderr, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"herdwatch: {redact(self.message)}", err=True)


class Output(Console):
    """stdout for reports: when the reader goes away (`herdwatch scan | head`), the rest is
    dropped and the exit code still tells what was found (rich would exit 1 instead)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def err_console() -> Console:
    """stderr for people: never wrapped at 80 columns when it is not a terminal (a log file or
    a CI job keeps each message on one line)."""
    err = Console(stderr=True)
    if not err.is_terminal:
        err = Console(stderr=True, soft_wrap=True, width=10_000)
    return err


#: command -> the module that defines it, imported when the command runs (or help lists it),
#: so that `herdwatch scan` does not pay for the lab's, the daemon's or the TUI's imports
COMMANDS = {
    "capture": "herdwatch.cli.capture",
    "config": "herdwatch.cli.config",
    "daemon": "herdwatch.cli.daemon",
    "lab": "herdwatch.cli.lab",
    "mitigate": "herdwatch.cli.mitigate",
    "outbox": "herdwatch.cli.daemon",
    "rules": "herdwatch.cli.rules",
    "scan": "herdwatch.cli.scan",
    "silence": "herdwatch.cli.daemon",
    "top": "herdwatch.cli.top",
}


class _Group(click.Group):
    """Maps every HerdwatchError raised below it to _UserError (the one place that does);
    the top group loads its commands lazily (`COMMANDS`, as click's docs show)."""

    group_class: type[click.Group] | type[type] | None = type  # subgroups are _Group too

    def list_commands(self, ctx: click.Context) -> list[str]:
        if self.parent_commands is not None:
            return sorted({*self.commands, *self.parent_commands})
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self.parent_commands is not None and cmd_name not in self.commands:
            module = self.parent_commands.get(cmd_name)
            if module is not None:
                importlib.import_module(module)  # its @cli.command() registers it here
        return super().get_command(ctx, cmd_name)

    parent_commands: dict[str, str] | None = None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A group without its command is a usage error (exit 2, as click >= 8.2 has it), told
        # in one line that lists the commands, not the whole help squeezed into one line.
        if not args and not self.invoke_without_command and not ctx.resilient_parsing:
            names = ", ".join(self.list_commands(ctx))
            raise click.UsageError(f"missing command: one of {names}", ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # Past click's own handler, which would print a blank line before the message.
            raise _Interrupted from None
        except HerdwatchError as exc:
            raise _UserError(redact(str(exc))) from exc
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise _UserError(redact(f"{exc.filename}: {exc.strerror}")) from exc


class _Interrupted(Exception):
    """Ctrl-C while a command ran (see _Group.invoke)."""


class _TopGroup(_Group):
    parent_commands = COMMANDS
    group_class = _Group  # its subgroups list their own commands, not COMMANDS (importing all)


@click.group(cls=_TopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="herdwatch")
def cli() -> None:
    """Find thundering herds (cache stampedes, pool exhaustion, retry storms, cron herds...)
    in metrics and logs, recorded or live, with the evidence and the fix.

    Shell completion: eval "$(_HERDWATCH_COMPLETE=bash_source herdwatch)" (zsh_source,
    fish_source for the other shells)."""


CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="HERDWATCH_CONFIG",
    help="Config file (default ./herdwatch.yaml, else $XDG_CONFIG_HOME/herdwatch/herdwatch.yaml).",
)


def duration_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option's callback: a positive duration (`31d`, `2h30m`, `90s`) as seconds; a bad
    one is click's usage error naming the option."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    if not seconds > 0:
        raise click.BadParameter(f"a duration must be positive, got {value!r}", ctx, param)
    return seconds


def time_option(value: str | None, flag: str) -> TimeSpec | None:
    """A --since/--until value parsed, or ConfigError naming the flag."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key=flag) from None


def _usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line: the message, and which command it concerns."""
    message = " ".join(exc.format_message().split())
    cmd = exc.ctx.command_path if exc.ctx is not None else "herdwatch"
    hint = f"(see '{cmd} --help')"
    return f"{cmd}: {message} {hint}" if cmd != "herdwatch" else f"{message} {hint}"


def _redacting_log_records() -> None:
    """Every log record of herdwatch's loggers passes through `redact` when it is made (its
    message and any traceback), whatever handler later writes it."""
    make = logging.getLogRecordFactory()
    if getattr(make, "herdwatch_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if record.name.startswith("herdwatch"):
            record.msg, record.args = redact(record.getMessage()), None
            if record.exc_info:
                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
                record.exc_info = None
        return record

    factory.herdwatch_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _one_line(text: str) -> str:
    return redact(" ".join(text.split()))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: runs the CLI and exits with its code (see the module doc).
    Whatever it prints about an error, a traceback included, has passed through `redact`."""
    try:
        _redacting_log_records()
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="herdwatch",
                      standalone_mode=False)  # fmt: skip
        code = rv if isinstance(rv, int) else 0
    except click.UsageError as exc:
        click.echo(f"herdwatch: {_one_line(_usage_line(exc))}", err=True)
        code = 2
    except click.ClickException as exc:
        click.echo(f"herdwatch: {_one_line(exc.format_message())}", err=True)
        code = exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt, _Interrupted):
        # One line; on a terminal it starts on a fresh one, after the ^C the terminal echoed.
        fresh = "\n" if sys.stderr.isatty() else ""
        click.echo(f"{fresh}herdwatch: interrupted", err=True)
        code = 130
    except BrokenPipeError:
        # The reader went away (`herdwatch scan ... | head`): not an error of ours, and the
        # interpreter must not fail again flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except OSError as exc:
        # A file the user named that cannot be read (a symlink loop, a device, no access):
        # bad input. An OSError without a file name is ours.
        code = _bad_file(exc) if exc.filename is not None else _internal_error(exc)
    except Exception as exc:
        code = _internal_error(exc)
    sys.exit(code)


def _bad_file(exc: OSError) -> int:
    click.echo(f"herdwatch: {_one_line(f'{exc.filename}: {exc.strerror or exc}')}", err=True)
    return 2


def _internal_error(exc: BaseException) -> int:
    # A bug: the traceback is for the report, but it may quote a URL or a secret.
    sys.stderr.write(redact(traceback.format_exc()))
    message = redact(repr(exc))
    click.echo(f"herdwatch: internal error (a bug, please report it): {message}", err=True)
    return 3
