"""The host source reads the real /proc/stat in node_exporter's names and units."""

from __future__ import annotations

import asyncio
import os
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from herdwatch.errors import SourceError
from herdwatch.model import RawData
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.host import CPU_MODES, HostSource, parse_proc_stat
from tests.support.servers import start_node_exporter

TICKS = float(os.sysconf("SC_CLK_TCK"))


def _by_name(raw: RawData, name: str) -> list[np.ndarray]:
    return [s.values for s in raw.series if s.name == name]


def test_parse_maps_every_column_to_its_mode_in_seconds() -> None:
    text = Path("/proc/stat").read_text()
    sample = parse_proc_stat(text, TICKS)
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0] != "cpu":
            cpu = parts[0][3:]
            for mode, raw in zip(CPU_MODES, parts[1:], strict=False):
                key = ("node_cpu_seconds_total", (("cpu", cpu), ("mode", mode)))
                assert sample[key] == ("node_cpu_seconds", "counter", int(raw) / TICKS)
        elif parts and parts[0] == "ctxt":
            assert sample[("node_context_switches_total", ())][2] == float(parts[1])
        elif parts and parts[0] == "procs_blocked":
            assert sample[("node_procs_blocked", ())] == (
                "node_procs_blocked",
                "gauge",
                float(parts[1]),
            )
    # the aggregate `cpu` line is not a cpu
    assert not any(dict(labels).get("cpu") == "" for _, labels in sample)


async def test_samples_the_real_host_for_the_duration() -> None:
    raw = await HostSource(interval=0.25).collect(CollectWindow(duration=1.0))
    (ctx,) = [s for s in raw.series if s.name == "node_context_switches_total"]
    assert ctx.type == "counter" and ctx.family == "node_context_switches"
    assert 4 <= len(ctx.timestamps) <= 5 and np.all(np.diff(ctx.timestamps) > 0)
    assert np.all(np.diff(ctx.values) >= 0) and ctx.values[-1] > ctx.values[0]
    cpus = [s for s in raw.series if s.name == "node_cpu_seconds_total"]
    assert {s.label("mode") for s in cpus} == set(CPU_MODES)
    assert len({s.label("cpu") for s in cpus}) == os.cpu_count()
    # each cpu's time over all modes advances with the wall clock (USER_HZ -> seconds)
    wall = ctx.timestamps[-1] - ctx.timestamps[0]
    for cpu in {s.label("cpu") for s in cpus}:
        spent = sum(s.values[-1] - s.values[0] for s in cpus if s.label("cpu") == cpu)
        assert abs(spent - wall) <= 0.25 * wall, (cpu, spent, wall)
    running = _by_name(raw, "node_procs_running")[0]
    assert np.all(running >= 1)  # this process is running while it reads
    assert raw.sources[0].ok and raw.sources[0].name == "host"


def test_names_and_labels_match_node_exporter() -> None:
    raw = asyncio.run(HostSource().collect(CollectWindow()))
    ours = {(s.name, s.labels) for s in raw.series}
    with start_node_exporter() as exporter:
        text = urllib.request.urlopen(exporter.url, timeout=5).read().decode()
    theirs: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"(node_(?:cpu_seconds_total|context_switches_total|forks_total|procs_\w+))"
                     r"(?:\{(.*)\})? (\S+)$", line)  # fmt: skip
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
            theirs.add((m.group(1), labels))
            values[m.group(1)] = float(m.group(3))
    assert ours == theirs
    # read before the exporter: never ahead of it
    (ctx,) = _by_name(raw, "node_context_switches_total")
    assert ctx[0] <= values["node_context_switches_total"]


async def test_unreadable_stat_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^source host: cannot read .*missing"):
        await HostSource(path=tmp_path / "missing").collect(CollectWindow())
    empty = tmp_path / "stat"
    empty.write_text("nothing here\n")
    with pytest.raises(SourceError, match="no cpu or ctxt lines"):
        await HostSource(path=empty).collect(CollectWindow())
