"""The lab: real herds on real Redis and Postgres, watched live, with and without the fix.

`run_scenario` drives a scenario's load with the naive client or herdwatch.cache while a Watcher
watches; `herdwatch lab run|compare` are its command line (herdwatch/cli/lab.py).
"""

from herdwatch.lab.run import SCENARIOS, RunResult, Scenario, herdcache_settings, run_scenario

__all__ = ["SCENARIOS", "RunResult", "Scenario", "herdcache_settings", "run_scenario"]
