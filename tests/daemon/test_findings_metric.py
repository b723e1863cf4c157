"""`herdwatch_findings{signature, severity, <subject labels>}` = 1 while a finding is active:
what the exported Grafana dashboard (herdwatch/export/) reads."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from prometheus_client import generate_latest

from herdwatch.daemon._http import DaemonMetrics
from herdwatch.export.grafana import FINDINGS_METRIC
from tests.daemon.support import STAMPEDE, metrics, start_daemon, stop, wait_for
from tests.support.servers import free_port

ACTIVE = re.compile(r"^herdwatch_findings\{(?P<labels>[^}]*)\} 1\.0$", re.M)


def samples(text: str) -> list[dict[str, str]]:
    """The label sets of the herdwatch_findings samples that are 1."""
    return [dict(re.findall(r'(\w+)="([^"]*)"', x.group("labels"))) for x in ACTIVE.finditer(text)]


def test_one_sample_per_active_finding_with_its_subject_labels() -> None:
    m = DaemonMetrics()
    m.active.set(
        [
            ("cache_stampede", "critical", (("instance", "redis-3:9121"),)),
            ("pool_exhaustion", "warning", (("instance", "pg:5432"), ("datname", "app"))),
            ("retry_storm", "warning", ()),
        ]
    )
    text = generate_latest(m.registry).decode()
    got = sorted(samples(text), key=lambda d: d["signature"])
    assert FINDINGS_METRIC == "herdwatch_findings"
    assert got == [
        {"signature": "cache_stampede", "severity": "critical", "instance": "redis-3:9121"},
        {"signature": "pool_exhaustion", "severity": "warning", "instance": "pg:5432",
         "datname": "app"},
        {"signature": "retry_storm", "severity": "warning"},
    ]  # fmt: skip
    m.active.set([])
    assert not ACTIVE.search(generate_latest(m.registry).decode())


def test_a_replayed_stampede_is_exported_while_active(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("daemon:\n  interval: 1s\n")
    port = free_port()
    p = start_daemon(
        cfg,
        "--replay",
        str(STAMPEDE),
        "--speed",
        "30",
        "--listen",
        f"127.0.0.1:{port}",
        log=tmp_path / "d.log",
    )
    try:

        def active() -> list[dict[str, str]]:
            return samples(metrics(port))

        got = wait_for(active, 30, "an active herdwatch_findings sample")
        assert isinstance(got, list) and len(got) == 1, got
        assert got[0]["signature"] == "cache_stampede" and got[0]["severity"] == "critical"
        assert set(got[0]) == {"signature", "severity", "instance"}
        assert p.wait(60) == 0
    finally:
        stop(p, signal.SIGKILL)
