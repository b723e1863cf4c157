"""`python -m herdwatch` and the `herdwatch` console script.

The CLI is imported inside the entry point, so a Ctrl-C while its modules load (a few hundred
milliseconds) is `herdwatch: interrupted`, exit 130, like one a moment later, not a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Import the CLI and run it (herdwatch.cli._app.main exits with the command's code)."""
    try:
        from herdwatch.cli._app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("herdwatch: interrupted\n")
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
