"""What `herdwatch daemon` costs, and how soon it pages, on a real stack.

    .venv/bin/python benchmarks/daemon_cost.py [--minutes 10]

Starts Redis, PostgreSQL (max_connections 20), redis_exporter, postgres_exporter and Prometheus
(1 s scrapes) on free loopback ports (tests.support.servers), and a daemon (a child process)
polling Prometheus, Redis and the 100 ms Postgres sampler at `daemon.interval: 1s` with a
webhook notifier (a local HTTP receiver).

1. Cost: the daemon's CPU time over wall time for `--minutes` (% of one core; target < 2 %)
   and its peak RSS (VmHWM; target < 150 MB), from /proc.
2. Detection delay: a herd is driven (pgbench: 40 clients reconnecting against 20 slots, the
   connection stampede pool_exhaustion finds); the delay is from the driver's start to the
   webhook's receipt of the daemon's page (target < 2 s), beside a Prometheus alerting rule on
   the same stack (pool >= 80 % full, or the exporter unable to connect) evaluated every 15 s
   with `for: 30s` (delay to the rule's `firing` state in Prometheus' /api/v1/alerts, before any
   Alertmanager group_wait).
Servers are stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support lives in the repository, not in the package

from tests.alert.support import http_receiver  # noqa: E402
from tests.daemon.support import metrics, start_daemon, stop, wait_for  # noqa: E402
from tests.support.servers import (  # noqa: E402
    free_port,
    start_postgres,
    start_postgres_exporter,
    start_prometheus,
    start_redis,
    start_redis_exporter,
)

MAX_CONNECTIONS = 20
#: pool_exhaustion's baseline ends 10 s before the pool is full
QUIET = 12.0
RULE = """groups:
- name: herd
  interval: 15s
  rules:
  - alert: PoolExhausted
    expr: >
      sum(pg_stat_activity_count) >= 0.8 * max(pg_settings_max_connections)
      or max(pg_up) == 0
    for: 30s
"""


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_mb(pid: int) -> float:
    m = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def add_rule(prom: Any) -> None:
    """Give the running Prometheus the alerting rule (config rewrite + SIGHUP reload)."""
    import yaml

    cfg_path = prom.workdir / "prometheus.yml"
    (prom.workdir / "rules.yml").write_text(RULE)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["rule_files"] = [str(prom.workdir / "rules.yml")]
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.kill(prom.pid, signal.SIGHUP)
    wait_for(lambda: prom_rules(prom.url), 20, "the alerting rule loaded")


def prom_rules(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/api/v1/rules?type=alert", timeout=2) as r:
        return bool(json.load(r)["data"]["groups"])


def prom_firing(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=2) as r:
        alerts = json.load(r)["data"]["alerts"]
    return any(
        a["labels"]["alertname"] == "PoolExhausted" and a["state"] == "firing" for a in alerts
    )


def all_healthy(port: int, names: tuple[str, ...]) -> bool:
    text = metrics(port)
    ups = dict(re.findall(r'^herdwatch_source_healthy\{source="([^"]+)"\} (\S+)$', text, re.M))
    return all(any(k.startswith(n) and v == "1.0" for k, v in ups.items()) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the cost run")
    args = ap.parse_args()
    with ExitStack() as stack:
        redis = stack.enter_context(start_redis())
        pg = stack.enter_context(start_postgres(max_connections=MAX_CONNECTIONS))
        bench = ["pgbench", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
        subprocess.run([*bench, "-i", "-q", "postgres"], check=True, capture_output=True)
        rexp = stack.enter_context(start_redis_exporter(redis.url))
        pexp = stack.enter_context(start_postgres_exporter(pg.dsn))
        prom = stack.enter_context(
            start_prometheus({"redis": rexp.url, "postgres": pexp.url}, scrape_interval="1s")
        )
        add_rule(prom)
        hook = stack.enter_context(http_receiver())
        work = Path(prom.workdir).parent / f"herdwatch-daemon-cost-{os.getpid()}"
        work.mkdir(exist_ok=True)
        cfg = work / "cfg.yaml"
        cfg.write_text(
            "sources:\n"
            f"  prometheus: {{url: '{prom.url}'}}\n"
            f"  redis: {{url: '{redis.url}'}}\n"
            f"  postgres: {{dsn: '{pg.dsn}', sample_interval: 0.1}}\n"
            f"alerts:\n  webhook: {{url: '{hook.url}'}}\n"
            "daemon:\n  interval: 1s\n"
        )
        port = free_port()
        log = work / "daemon.log"
        d = start_daemon(
            cfg, "--listen", f"127.0.0.1:{port}", "--outbox", str(work / "outbox.db"), log=log
        )
        stack.callback(stop, d, signal.SIGKILL)
        wait_for(lambda: all_healthy(port, ("prometheus", "redis", "postgres")), 60, "sources")
        time.sleep(5)  # past start-up (imports, first reads) before the meter runs

        cpu0, wall0 = proc_cpu(d.pid), time.monotonic()
        time.sleep(args.minutes * 60)
        cpu, wall = proc_cpu(d.pid) - cpu0, time.monotonic() - wall0
        hwm = proc_hwm_mb(d.pid)
        ticks = re.search(r"^herdwatch_ticks_total (\S+)$", metrics(port), re.M)
        print(f"daemon cost over {wall / 60:.1f} min (Prometheus, Redis, the 100 ms sampler):")
        print(f"  CPU {100 * cpu / wall:.2f} % of one core (target < 2 %)")
        print(f"  peak RSS {hwm:.1f} MB (target < 150 MB)")
        text = metrics(port)
        tick_sum = re.search(r"^herdwatch_tick_duration_seconds_sum (\S+)$", text, re.M)
        tick_n = re.search(r"^herdwatch_tick_duration_seconds_count (\S+)$", text, re.M)
        if tick_sum and tick_n and float(tick_n.group(1)):
            # a tick a second: the mean tick in ms / 10 is the ticks' share of a core in %
            mean_ms = 1000 * float(tick_sum.group(1)) / float(tick_n.group(1))
            print(f"  ticks {tick_n.group(1)}, mean tick (scan) {mean_ms:.1f} ms")
        else:
            print(f"  ticks {ticks.group(1) if ticks else '?'}")

        time.sleep(QUIET)
        onset = time.time()
        herd = subprocess.Popen(
            [*bench, "-C", "-c", "40", "-j", "2", "-T", "75", "postgres"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(lambda: herd.poll() is None and herd.kill())
        got: dict[str, float] = {}
        while time.time() - onset < 90 and len(got) < 2:
            if "daemon" not in got and any(
                a.get("signature") == "pool_exhaustion"
                for _, body in hook.requests
                for a in body.get("alerts", [])
            ):
                got["daemon"] = time.time() - onset
            if "rule" not in got and prom_firing(prom.url):
                got["rule"] = time.time() - onset
            time.sleep(0.05)
        herd.wait(120)
        print("detection delay from the herd driver's start:")
        print(f"  herdwatch daemon -> webhook receipt: {fmt(got.get('daemon'))} (target < 2 s)")
        print(f"  Prometheus rule (eval 15 s, for: 30s) -> firing: {fmt(got.get('rule'))}")
        print(f"  (daemon log: {log})")


def fmt(x: float | None) -> str:
    return "not within 90 s" if x is None else f"{x:.2f} s"


if __name__ == "__main__":
    main()
