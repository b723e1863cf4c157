"""Host source: `/proc/stat` sampled at an interval, in node_exporter's names.

* `node_context_switches_total` (counter, `ctxt`), `node_forks_total` (counter, `processes`);
* `node_cpu_seconds_total{cpu,mode}` (counter; USER_HZ ticks / `SC_CLK_TCK` -> seconds; modes
  user, nice, system, idle, iowait, irq, softirq, steal as node_exporter names them; guest time
  is already inside user and nice, so it is not repeated);
* `node_procs_running`, `node_procs_blocked` (gauges).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from herdwatch.errors import SourceError
from herdwatch.model import RawData, Series, SourceStatus
from herdwatch.sources.base import CollectWindow

__all__ = ["CPU_MODES", "HostSource", "parse_proc_stat"]

#: /proc/stat cpuN columns in order, as node_exporter names the modes
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

_COUNTERS = {"ctxt": "node_context_switches", "processes": "node_forks"}
_GAUGES = {"procs_running": "node_procs_running", "procs_blocked": "node_procs_blocked"}

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, str, float]]


def parse_proc_stat(text: str, ticks_per_second: float) -> Sample:
    """(series name, labels) -> (family, type, value) for one read of /proc/stat."""
    out: Sample = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        if key.startswith("cpu") and key != "cpu":
            cpu = key[3:]
            for mode, raw in zip(CPU_MODES, parts[1:], strict=False):
                labels = (("cpu", cpu), ("mode", mode))
                out[("node_cpu_seconds_total", labels)] = (
                    "node_cpu_seconds",
                    "counter",
                    int(raw) / ticks_per_second,
                )
        elif key in _COUNTERS and len(parts) > 1:
            fam = _COUNTERS[key]
            out[(fam + "_total", ())] = (fam, "counter", float(parts[1]))
        elif key in _GAUGES and len(parts) > 1:
            fam = _GAUGES[key]
            out[(fam, ())] = (fam, "gauge", float(parts[1]))
    return out


@dataclass(slots=True)
class _Track:
    family: str
    type: str
    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)


class HostSource:
    """Reads `/proc/stat` every `interval` seconds for `window.duration` (once when it is 0)."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        path: Path = Path("/proc/stat"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = "host"
        self._interval = max(float(interval), 0.01)
        self._path = path
        self._clock = clock
        self._ticks = float(os.sysconf("SC_CLK_TCK"))

    def _read(self) -> Sample:
        try:
            text = self._path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise SourceError(self.name, f"cannot read {self._path}: {exc.strerror}") from None
        sample = parse_proc_stat(text, self._ticks)
        if not sample:
            raise SourceError(self.name, f"{self._path} holds no cpu or ctxt lines")
        return sample

    async def collect(self, window: CollectWindow) -> RawData:
        """Sample for `window.duration` seconds; `since`/`until` do not apply (no history)."""
        tracks: dict[tuple[str, tuple[tuple[str, str], ...]], _Track] = {}
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + max(float(window.duration), 0.0)
        n = 0
        last_t = -math.inf
        while True:
            t = round(self._clock(), 3)
            t = max(t, round(last_t + 0.001, 3))
            last_t = t
            for key, (fam, typ, value) in self._read().items():
                tr = tracks.get(key)
                if tr is None:
                    tr = tracks[key] = _Track(fam, typ)
                tr.t.append(t)
                tr.v.append(value)
            n += 1
            now = loop.time()
            nxt = start + (math.floor((now - start) / self._interval) + 1) * self._interval
            if nxt > end + 1e-9:
                break
            await asyncio.sleep(nxt - now)
        series = [
            Series(
                name,
                labels,
                np.asarray(tr.t, dtype=np.float64),
                np.asarray(tr.v, dtype=np.float64),
                family=tr.family,
                type=tr.type,
            )
            for (name, labels), tr in tracks.items()
        ]
        detail = f"{n} samples of {self._path} every {self._interval:g} s"
        return RawData(series=series, sources=[SourceStatus(self.name, True, detail)])
