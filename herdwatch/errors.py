"""The one error tree of herdwatch.

    HerdwatchError
    ├── ConfigError        (file, line, key)      bad herdwatch.yaml, flag or HERDWATCH_* variable
    ├── SourceError        (source)               a source that cannot be read; never its password
    ├── ReplayFormatError  (file, line)           malformed OpenMetrics or replay directory
    └── RuleError          (file, line)           an invalid rule file or rule parameter

The cache client (`herdwatch.cache`) keeps its own tree so that it imports nothing of herdwatch:
`LeaseLostError`, `Overloaded`, `CircuitOpen` live in `herdwatch.cache.errors`.

The CLI is the only place that maps these to exit codes (all user errors are exit 2).
"""

from __future__ import annotations

__all__ = ["ConfigError", "HerdwatchError", "ReplayFormatError", "RuleError", "SourceError"]


def _where(file: str | None, line: int | None) -> str:
    if file is None:
        return ""
    return f"{file}:{line}: " if line is not None else f"{file}: "


class HerdwatchError(Exception):
    """Base of every error herdwatch raises on purpose; its str() is one line for the user."""

    exit_code = 2


class ConfigError(HerdwatchError):
    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file, self.line, self.key = file, line, key
        prefix = _where(file, line)
        keypart = f"{key}: " if key else ""
        super().__init__(f"{prefix}{keypart}{message}")


class SourceError(HerdwatchError):
    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"source {source}: {message}")


class ReplayFormatError(HerdwatchError):
    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file, self.line = file, line
        super().__init__(f"{_where(file, line)}{message}")


class RuleError(HerdwatchError):
    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file, self.line = file, line
        super().__init__(f"{_where(file, line)}{message}")
