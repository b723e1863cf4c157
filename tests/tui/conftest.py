"""Snapshots for the view tests: one built by hand (its text is compared exactly) and one a
Watcher computed during the bundled stampede."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from herdwatch.engine import Watcher
from herdwatch.engine.snapshot import SignalView, Snapshot, SourceHealth, TickCost, TrackedFinding
from herdwatch.model import Finding, Recommendation, ScanResult
from herdwatch.rules import load_rules
from herdwatch.sources.replay import ReplaySource

ROOT = Path(__file__).resolve().parents[2]
STAMPEDE = ROOT / "fixtures" / "incidents" / "stampede_catalog_1s"
AT = 1_764_001_330.0  # 2025-11-24 16:22:10 UTC


def _view(name: str, level: float, *, jump: float = 0.0, subject=(), score: float = 0.0):
    t = AT - 600 + np.arange(601.0)
    v = np.full(601, level)
    v[-60:] += jump
    return SignalView(name, subject, t, v, float(v[-1]), level, score, 1.0, "")


def hand_snapshot() -> Snapshot:
    """A stampede on one of two shards, in round numbers."""
    shard = (("instance", "cache-1:9121"),)
    other = (("instance", "cache-2:9121"),)
    signals = (
        _view("miss_ratio", 0.04, jump=0.46, score=68.9),
        _view("cache_requests", 5400.0, score=-1.1),
        _view("requests", 1800.0, score=-0.4),
        _view("db_latency_p99", 0.019, jump=0.2, score=12.0),
        _view("db_connections", 3.0, jump=27.0, score=4.5),
        _view("db_connections_max", 100.0),
        _view("miss_ratio", 0.04, jump=0.9, subject=shard, score=90.0),
        _view("miss_ratio", 0.04, subject=other, score=0.2),
    )
    finding = Finding(
        "cache_stampede",
        AT - 63,
        AT - 1,
        "critical",
        "miss ratio 0.04 -> 0.5, db p99 0.019s -> 0.22s while traffic stayed flat (x0.98)",
        {"miss_ratio": {"baseline": 0.04, "peak": 0.5, "onset": AT - 63}, "traffic_ratio": 0.98},
        (
            Recommendation(
                "Collapse concurrent loads of one key",
                "One caller reloads.",
                "HerdCache.from_url(url, lease_ttl=2)",
            ),
            Recommendation(
                "Add TTL jitter",
                "Spread the expiries over 900 s.",
                "HerdCache.from_url(url, ttl_jitter=900)",
                command="herdwatch mitigate client --redis URL --set ttl_jitter=900",
            ),
        ),
        ("miss_ratio", "db_latency_p99"),
        shard,
    )
    ended = Finding("cron_herd", AT - 500, AT - 480, "warning", "load spikes at minute 0", {})
    return Snapshot(
        at=AT,
        window=(AT - 600, AT),
        signals=signals,
        findings=(
            TrackedFinding("cron_herd-00000001", "resolved", ended, AT - 490, AT - 10),
            TrackedFinding("cache_stampede-0000abcd", "active", finding, AT - 60, AT),
        ),
        sources=(
            SourceHealth("prometheus", True, AT, detail="101 series"),
            SourceHealth("redis", False, AT - 30, "connection refused", AT + 4, 3),
        ),
        not_evaluated=(),
        cost=TickCost(0.031, 101, 60_000),
        result=ScanResult([], (AT - 600, AT), []),
    )


@pytest.fixture
def snap() -> Snapshot:
    return hand_snapshot()


@pytest.fixture(scope="session")
def stampede_snapshot() -> Snapshot:
    """What the daemon's Watcher sees 13 min into the recorded stampede (onset at 16:21:07)."""
    source = ReplaySource(STAMPEDE)
    span = source.span
    assert span is not None
    watcher = Watcher([source], rules=load_rules())
    at = span[0] + 850
    asyncio.run(watcher.poll(at))
    return watcher.tick(at)
