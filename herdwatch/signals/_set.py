"""SignalSet: what `derive` returns and every detector reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from herdwatch.model import KeyExpirySample, LogEvent, Signal


@dataclass(slots=True)
class SignalSet:
    """Logical signals derived from one scan's raw data.

    `signals` holds the whole-system view of each logical signal; `groups` holds per-server or
    per-peer views where that matters (`db_connections`, `upstream_requests`, ...), keyed by a
    readable group label such as `instance=db1:9187`.
    """

    signals: dict[str, Signal] = field(default_factory=dict)
    groups: dict[str, dict[str, Signal]] = field(default_factory=dict)
    events: list[LogEvent] = field(default_factory=list)
    window: tuple[float, float] | None = None
    key_expiry: list[KeyExpirySample] = field(default_factory=list)

    def get(self, name: str) -> Signal | None:
        return self.signals.get(name)
