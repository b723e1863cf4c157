"""The lab: real herds on real Redis and Postgres, watched live, with and without the fix.

`run_scenario` drives a scenario's load with the naive client or herdwatch.cache while a Watcher
watches; `herdwatch lab run|compare` are its command line (herdwatch/cli/lab.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herdwatch.lab.run import SCENARIOS, RunResult, Scenario, herdcache_settings, run_scenario

__all__ = ["SCENARIOS", "RunResult", "Scenario", "herdcache_settings", "run_scenario"]


def __getattr__(name: str) -> Any:
    # Lazily: the load workers import herdwatch.lab._worker, and must not pay for the engine.
    if name in __all__:
        return getattr(importlib.import_module("herdwatch.lab.run"), name)
    raise AttributeError(f"module 'herdwatch.lab' has no attribute {name!r}")
