"""What every mitigation shares: the allow-list, the audit line and the undo file.

A mitigation that changes anything runs only with `--apply`, only on what `mitigations.allow`
allows, appends one audit line (JSON) to the audit log and writes an undo file that
`herdwatch mitigate undo FILE` replays. The undo file is written *before* each change is sent,
and flushed, so an interrupted apply leaves a file that covers everything it wrote.
"""

from __future__ import annotations

import fnmatch
import getpass
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from herdwatch.config import redact
from herdwatch.errors import ConfigError, HerdwatchError

__all__ = [
    "UndoWriter",
    "allowed",
    "audit",
    "read_undo",
    "require_allowed",
    "state_dir",
]

UNDO_VERSION = 1


def allowed(target: str, allow: Sequence[str]) -> bool:
    """True when `target` (a key pattern such as `product:*`, or `client:<namespace>`) is covered
    by one entry of the allow-list: the entry, read as a glob, matches the target's text
    (`product:*` covers `product:*` and `product:1*`, not `session:*` nor `*`)."""
    return any(fnmatch.fnmatchcase(target, entry) for entry in allow)


def require_allowed(target: str, allow: Sequence[str], what: str) -> None:
    """ConfigError (exit 2) unless `target` is allowed; the message says how to allow it."""
    if not allowed(target, allow):
        listed = ", ".join(repr(a) for a in allow) if allow else "nothing"
        raise ConfigError(
            f"{what} {target!r} is not allowed by mitigations.allow (it allows {listed}); "
            f"add it to mitigations: {{allow: [...]}} in the config to apply it",
            key="mitigations.allow",
        )


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where audit log and undo files go by default: $HERDWATCH_STATE_DIR, else
    $XDG_STATE_HOME/herdwatch, else ~/.local/state/herdwatch."""
    env = os.environ if environ is None else environ
    if env.get("HERDWATCH_STATE_DIR"):
        return Path(env["HERDWATCH_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local/state"
    )
    return Path(base) / "herdwatch"


def audit(action: str, target: str, detail: Mapping[str, Any], log: Path | None = None) -> str:
    """Append one JSON line (time, user, host, action, target, detail) to the audit log and
    return it. Passwords in the target or detail strings are redacted."""
    path = log or state_dir() / "audit.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    record = {
        "time": round(time.time(), 3),
        "user": user,
        "host": socket.gethostname(),
        "action": action,
        "target": redact(target),
        **{k: redact(v) if isinstance(v, str) else v for k, v in detail.items()},
    }
    line = json.dumps(record, sort_keys=False)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return line


def default_undo_path(kind: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return state_dir() / "undo" / f"{kind}-{stamp}-{os.getpid()}.jsonl"


class UndoWriter:
    """An undo file: a header line, then one JSON line per change, each flushed and fsynced
    before the change it describes is sent."""

    def __init__(self, path: Path, kind: str, header: Mapping[str, Any]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise ConfigError(f"{path}: exists already (undo files are never overwritten)")
        self._fh: IO[str] = path.open("x", encoding="utf-8")
        self._write({"undo": kind, "version": UNDO_VERSION, "created": time.time(), **header})

    def _write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")

    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Record `records` durably (flush + fsync) before they are applied."""
        for r in records:
            self._write(r)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> UndoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_undo(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and records of an undo file; HerdwatchError naming file:line when malformed.
    A last line cut short (the apply was killed while writing it) is ignored: its change was
    never sent."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise HerdwatchError(f"{path}: {exc.strerror}") from None
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if i == len(lines):
                break
            raise ConfigError(
                "not an undo file line (JSON expected)", file=str(path), line=i
            ) from None
        if not isinstance(rec, dict):
            raise ConfigError(
                "not an undo file line (JSON object expected)", file=str(path), line=i
            )
        records.append(rec)
    if not records or "undo" not in records[0]:
        raise ConfigError("not a herdwatch undo file (no header)", file=str(path), line=1)
    return records[0], records[1:]
