"""`herdwatch daemon`: watch the sources on a clock, page once per herd, never lose an alert.

The loop (herdwatch.daemon._loop), /metrics and /healthz (_http), leadership through a Redis
lease (_leader), the findings a shard owns (_shard) and JSON log lines (_logs). See docs/daemon.md.
"""

from herdwatch.daemon._http import DaemonMetrics, serve
from herdwatch.daemon._leader import Lease
from herdwatch.daemon._logs import JsonFormatter, setup_logging
from herdwatch.daemon._loop import Daemon, DaemonSetup, default_outbox, finite_speed
from herdwatch.daemon._shard import Shard

__all__ = [
    "Daemon",
    "DaemonMetrics",
    "DaemonSetup",
    "JsonFormatter",
    "Lease",
    "Shard",
    "default_outbox",
    "finite_speed",
    "serve",
    "setup_logging",
]
