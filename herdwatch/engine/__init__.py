"""The engine: one pure scan of a window (`scan`), and the Watcher that runs it on a clock.

`herdwatch scan` is one Watcher pass over a fixed window; the daemon, `herdwatch top` and the lab
tick a Watcher on a real or replayed clock. Views and notifiers read only its `Snapshot`.
"""

from herdwatch.engine.scan import cut_window, scan
from herdwatch.engine.snapshot import (
    SignalView,
    Snapshot,
    SourceHealth,
    TickCost,
    TrackedFinding,
)
from herdwatch.engine.watch import DEFAULT_LOOKBACK, Backoff, Buffer, ReplayClock, Watcher

__all__ = [
    "DEFAULT_LOOKBACK",
    "Backoff",
    "Buffer",
    "ReplayClock",
    "SignalView",
    "Snapshot",
    "SourceHealth",
    "TickCost",
    "TrackedFinding",
    "Watcher",
    "cut_window",
    "scan",
]
