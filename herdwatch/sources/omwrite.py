"""Write raw series as OpenMetrics text that the replay source and promtool both read.

One `# TYPE` per family; samples with timestamps in seconds (millisecond decimals at most);
a histogram's (or summary's) buckets, `_count` and `_sum` together at each timestamp, as
promtool wants; the final `# EOF`. Gaps stay gaps: nothing is interpolated.
"""

from __future__ import annotations

import gzip
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from herdwatch.model import Series

__all__ = [
    "WriteStats",
    "format_labels",
    "format_time",
    "format_value",
    "write_maybe_gzipped",
    "write_openmetrics",
]

_FIRST = {"histogram": "_bucket", "summary": ""}
_INNER = {"histogram": "le", "summary": "quantile"}


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What was written: the file, and how many families, series and samples it holds."""

    path: Path
    families: int
    series: int
    samples: int


def format_value(x: float) -> str:
    """A sample value as OpenMetrics writes it (`NaN`, `+Inf`, integers without `.0`)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def format_time(t: float) -> str:
    """A timestamp in seconds with at most millisecond decimals, as promtool reads it."""
    return f"{t:.3f}".rstrip("0").rstrip(".")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_labels(labels: Iterable[tuple[str, str]]) -> str:
    """`{k="v",...}` with OpenMetrics escapes, or nothing for no labels."""
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def _le_key(s: Series, inner: str) -> float:
    try:
        return float(s.label(inner, "+Inf"))
    except ValueError:
        return math.inf


def _write_family(out: TextIO, family: str, mtype: str, series: Sequence[Series]) -> int:
    out.write(f"# TYPE {family} {mtype}\n")
    written = 0
    if mtype not in _FIRST:
        for s in sorted(series, key=lambda s: (s.name, s.labels)):
            prefix = s.name + format_labels(s.labels) + " "
            out.writelines(
                f"{prefix}{format_value(v)} {format_time(t)}\n"
                for t, v in zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
            )
            written += len(s.timestamps)
        return written
    inner = _INNER[mtype]
    groups: dict[tuple[tuple[str, str], ...], list[Series]] = defaultdict(list)
    for s in series:
        groups[tuple(kv for kv in s.labels if kv[0] != inner)].append(s)
    for _, members in sorted(groups.items()):
        parts = sorted(
            (s for s in members if s.name == family + _FIRST[mtype]),
            key=lambda s: _le_key(s, inner),
        )
        parts += [s for s in members if s.name == family + "_count"]
        parts += [s for s in members if s.name == family + "_sum"]
        values = [dict(zip(s.timestamps.tolist(), s.values.tolist(), strict=True)) for s in parts]
        prefixes = [s.name + format_labels(s.labels) + " " for s in parts]
        stamps = np.unique(np.concatenate([s.timestamps for s in parts])).tolist()
        for t in stamps:
            ts = format_time(t)
            for prefix, vals in zip(prefixes, values, strict=True):
                v = vals.get(t)
                if v is not None:
                    out.write(f"{prefix}{format_value(v)} {ts}\n")
                    written += 1
    return written


def write_maybe_gzipped(path: Path, data: bytes) -> None:
    """Write `data` to `path`, gzip-compressed when the name ends in `.gz`; with mtime 0, the
    same data always gives the same bytes (a re-recorded fixture stays byte-identical)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)


def write_openmetrics(series: Iterable[Series], path: Path) -> WriteStats:
    """Write `series` to `path` (gzip when the name ends in `.gz`), grouped by family."""
    by_family: dict[tuple[str, str], list[Series]] = defaultdict(list)
    for s in series:
        if len(s.timestamps):
            by_family[(s.family or s.name, s.type)].append(s)
    buf = io.StringIO()
    samples = 0
    for (family, mtype), members in sorted(by_family.items()):
        samples += _write_family(buf, family, mtype, members)
    buf.write("# EOF\n")
    write_maybe_gzipped(path, buf.getvalue().encode())
    n_series = sum(len(m) for m in by_family.values())
    return WriteStats(path, len(by_family), n_series, samples)
