"""What every source promises, and how their outputs combine.

A source reads one system and returns raw series named as the standard Prometheus exporters name
them (`redis_keyspace_hits_total`, `pg_stat_activity_count`, ...), log events, and its own
status. It never detects. Driver errors (redis, psycopg, HTTP) are converted
to `SourceError(name, message)` where they enter, with passwords redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from herdwatch.model import RawData

__all__ = ["CollectWindow", "Source", "merge"]


@dataclass(frozen=True, slots=True)
class CollectWindow:
    """What to read: a recorded range [since, until] (unix seconds; sources that keep history,
    such as Prometheus and log files, read it) and how long to sample live (`duration` seconds;
    sources without history, such as Redis INFO, pg_stat_activity and /proc, sample that long).
    """

    since: float | None = None
    until: float | None = None
    duration: float = 0.0


class Source(Protocol):
    """A source of raw data. `name` is shown to the user (never with a password in it)."""

    name: str

    async def collect(self, window: CollectWindow) -> RawData: ...


def merge(parts: list[RawData]) -> RawData:
    """One RawData from several sources' outputs (series, events and statuses concatenated)."""
    out = RawData()
    for p in parts:
        out.series.extend(p.series)
        out.events.extend(p.events)
        out.sources.extend(p.sources)
        out.log_lines += p.log_lines
        out.key_expiry.extend(p.key_expiry)
    out.events.sort(key=lambda e: e.timestamp)
    return out
