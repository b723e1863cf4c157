"""A replay in top shows the Snapshots the daemon's Watcher computes at the same times."""

from __future__ import annotations

import asyncio
from pathlib import Path

from herdwatch.engine import ReplayClock, Watcher
from herdwatch.engine.snapshot import Snapshot
from herdwatch.rules import load_rules
from herdwatch.sources.replay import ReplaySource
from herdwatch.tui import Feed, PausableClock

from .conftest import ROOT

POOL = ROOT / "fixtures" / "incidents" / "pool_exhaustion_burst_1s"


def _essence(s: Snapshot) -> tuple[object, ...]:
    findings = [
        (f.id, f.state, f.signature, f.subject, f.finding.onset, f.finding.end, f.finding.severity,
         f.finding.evidence, f.finding.recommendations)
        for f in s.findings
    ]  # fmt: skip
    views = [(v.name, v.subject, v.value, v.baseline, v.score, v.t.tobytes()) for v in s.signals]
    return s.at, findings, views, s.sources


def _daemon(directory: Path, interval: float) -> dict[float, Snapshot]:
    """Every Snapshot of a Watcher ticked every `interval` simulated seconds, by time."""
    source = ReplaySource(directory)
    span = source.span
    assert span is not None
    out: dict[float, Snapshot] = {}
    watcher = Watcher([source], rules=load_rules())
    asyncio.run(watcher.run(ReplayClock(*span), interval=interval,
                            on_snapshot=lambda s: out.__setitem__(s.at, s)))  # fmt: skip
    return out


async def test_top_replays_the_snapshots_the_daemon_computes() -> None:
    source = ReplaySource(POOL)
    span = source.span
    assert span is not None
    shown: list[Snapshot] = []
    # --speed 600 at a 0.5 s refresh: one tick every 300 simulated seconds.
    feed = Feed(Watcher([source], rules=load_rules()), clock=PausableClock(*span, 600.0),
                interval=0.5, on_snapshot=shown.append)  # fmt: skip
    assert feed.step == 300.0
    await asyncio.wait_for(feed.run(), 60)
    assert feed.ended and shown[-1].at == span[1]
    daemon = await asyncio.to_thread(_daemon, POOL, 20.0)
    common = [s for s in shown if s.at in daemon]
    assert len(common) >= 4
    for s in common:
        assert _essence(s) == _essence(daemon[s.at])
    assert any(f.signature == "pool_exhaustion" for s in common for f in s.findings)
