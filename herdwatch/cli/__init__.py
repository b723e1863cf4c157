"""The `herdwatch` command: one module per command (scan, capture, rules, config, daemon, top,
lab, mitigate), each loaded when its command runs (`herdwatch.cli._app.COMMANDS`).

Exit codes: 0 no findings, 1 findings (or a failed rule test), 2 bad input or a source that
cannot be read (one line on stderr: `herdwatch: <message>`), 130 interrupted,
3 an internal error (a bug: the traceback is printed).
"""

from herdwatch.cli._app import COMMANDS, cli, main

__all__ = ["COMMANDS", "cli", "main"]
