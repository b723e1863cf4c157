"""`python -m herdwatch` and the `herdwatch` console script.

The CLI is imported inside the entry point, so a Ctrl-C while its modules load (a few hundred
milliseconds) is `herdwatch: interrupted`, exit 130, like one a moment later, not a traceback.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main() -> None:
    """Import the CLI and run it (herdwatch.cli._app.main exits with the command's code)."""
    # herdwatch does no linear algebra: the OpenBLAS worker threads numpy starts on import (one
    # per core) only spin, ~0.1 s of CPU of a replay scan on two cores. A user's setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from herdwatch.cli._app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("herdwatch: interrupted\n")
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
