"""Mitigations: a pure plan, applied only with `--apply`, on what `mitigations.allow` allows,
each with an audit line and an undo file (`herdwatch mitigate undo FILE`).

- `ttl_spread`: re-spread the expiries of Redis keys that would expire together;
- `client`: push runtime settings to herdwatch.cache clients, and read their confirmations.
"""

from herdwatch.mitigate._common import (
    UndoWriter,
    allowed,
    audit,
    read_undo,
    require_allowed,
    state_dir,
)

__all__ = ["UndoWriter", "allowed", "audit", "read_undo", "require_allowed", "state_dir"]
