"""The replay source: a directory of recorded OpenMetrics and log files -> RawData.

Reads `DIR/*.om`, `DIR/*.om.gz` (merged in name order: a series split across files must keep
its timestamps increasing) and `DIR/*.log`, `DIR/*.log.gz` (see `herdwatch.sources.logs`).
`DIR/herdwatch.yaml` is the config loader's, not read here.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, tzinfo
from pathlib import Path

import numpy as np

from herdwatch.config import ENV_PREFIX, REPLAY_MEMORY_BUDGET, format_size, parse_size
from herdwatch.errors import ConfigError, ReplayFormatError
from herdwatch.model import LogEvent, RawData, Series, SourceStatus
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.openmetrics import TRUNCATED_GZIP, OpenMetricsReader

__all__ = [
    "LOG_PATTERNS",
    "METRIC_PATTERNS",
    "ReplaySource",
    "check_memory",
    "load_replay",
    "replay_files",
    "replay_memory",
    "replay_size",
]

METRIC_PATTERNS = ("*.om", "*.om.gz")
LOG_PATTERNS = ("*.log", "*.log.gz")


def replay_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """(metric files, log files) of a replay directory, each sorted by name. A name that
    matches but leads to no file (a symbolic link that loops or dangles) is a
    ReplayFormatError naming it; a matching directory is left out."""

    def files(patterns: tuple[str, ...]) -> list[Path]:
        out = set()
        for pat in patterns:
            for p in directory.glob(pat):
                try:
                    st = p.stat()
                except OSError as exc:
                    raise ReplayFormatError(_why(exc), file=str(p)) from None
                if stat.S_ISREG(st.st_mode):
                    out.add(p)
        return sorted(out)

    return files(METRIC_PATTERNS), files(LOG_PATTERNS)


def _why(exc: OSError, missing: str | None = None) -> str:
    """What a failed stat() of a path the user named says: `missing` when it does not exist."""
    if exc.errno == errno.ELOOP:
        return "a symbolic link that loops"
    if missing is not None and exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return missing
    return exc.strerror or "cannot be read"


def replay_size(directory: Path) -> int:
    """Bytes of the replay's files (for a progress bar); ReplayFormatError as replay_files."""
    metrics, logs = replay_files(directory)
    return sum(p.stat().st_size for p in (*metrics, *logs))


#: memory a replay takes while it is parsed: the interpreter's and numpy's fixed part, then per
#: sample. Measured peaks (RSS) of `herdwatch scan --replay`: 24 h at 1 s of 100 series (8.64 M
#: samples, 544 MB of text) 622 MB; 7 days at 15 s of 500 series (20.2 M samples, 1.79 GB of
#: text, benchmarks/fleet_week.py) 973 MB: about 360 MB + 31 bytes a sample. The estimate
#: doubles the per-sample part. The samples are counted from the file's first MiB (lines not
#: comments, per byte); where that shows none (a file of one huge line), 2.5 per byte of text
#: (the most measured, 6 h at 1 s: 135 MB of text, 438 MB). Logs keep only the matching
#: lines' events.
_FIXED = 400 * 1024 * 1024
_PER_SAMPLE = 64
_HEAD = 1 << 20
_METRIC_FACTOR = 2.5
_LOG_FACTOR = 2
#: what OpenMetrics text compresses to at most, in practice (the fixtures: 10-17 times): the size
#: taken for a .gz file large enough that its 32-bit trailer may have wrapped
_GZIP_RATIO = 25


def _content_size(path: Path) -> int:
    """The bytes `path` holds once decompressed: a `.gz` file's trailer stores that size modulo
    4 GiB (ISIZE, RFC 1952); where that may have wrapped (a compressed size past 4 GiB / 25) or
    cannot be read, 25 times the compressed size (text's usual ratio) is taken instead. A `.gz`
    file that is no gzip, or whose trailer cannot be true (truncated: its last bytes are the
    middle of the stream), is a ReplayFormatError naming it, not an estimate."""
    size = path.stat().st_size
    if not path.name.endswith(".gz"):
        return size
    typical = size * _GZIP_RATIO
    isize = 0
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
            if size >= _GZIP_MIN:
                fh.seek(-4, 2)
                (isize,) = struct.unpack("<I", fh.read(4))
    except (OSError, struct.error):
        return typical
    _check_gzip(path, head, size, isize)
    if typical >= 1 << 32:
        return max(int(isize), typical)
    return max(int(isize), size)


#: a gzip file's header and trailer take at least this many bytes (RFC 1952)
_GZIP_MIN = 18
#: deflate writes at least one byte per 1032 it holds (zlib's documented maximum ratio)
_DEFLATE_MAX_RATIO = 1032


def _check_gzip(path: Path, head: bytes, size: int, isize: int) -> None:
    """ReplayFormatError naming `path` when its first bytes (`head`), its size or its trailer's
    ISIZE show that it is no whole gzip file."""
    if not b"\x1f\x8b\x08".startswith(head):
        raise ReplayFormatError(
            "not a gzip file (the name ends in .gz, the content does not start as gzip does)",
            file=str(path),
        )
    if size < _GZIP_MIN:
        raise ReplayFormatError(
            f"truncated gzip file ({size} bytes; a gzip file has at least {_GZIP_MIN})",
            file=str(path),
        )
    if isize > _DEFLATE_MAX_RATIO * size:
        raise ReplayFormatError(
            f"truncated or corrupt gzip file: its last 4 bytes give a content of "
            f"{format_size(isize)}, more than {format_size(size)} of gzip can hold",
            file=str(path),
        )


def _metric_memory(path: Path) -> float:
    """The memory parsing one OpenMetrics file is estimated to take beyond the fixed part:
    its samples (counted on its first MiB, scaled to its size) at `_PER_SAMPLE` bytes."""
    size = _content_size(path)
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(_HEAD)
    except (OSError, EOFError, zlib.error):
        head = b""
    cut = head.rfind(b"\n") + 1
    lines = head[:cut].split(b"\n")[:-1]
    samples = sum(1 for line in lines if not line.startswith(b"#"))
    if samples < 100:  # one huge line, or almost nothing to go by
        return _METRIC_FACTOR * size
    return _PER_SAMPLE * samples * size / cut


def replay_memory(directory: Path) -> int:
    """Bytes of memory reading the replay in `directory` is estimated to take, from its files'
    sizes and their first MiB (nothing else is read); ReplayFormatError as replay_files."""
    metrics, logs = replay_files(directory)
    text = sum(_metric_memory(p) for p in metrics)
    return int(_FIXED + text + _LOG_FACTOR * sum(_content_size(p) for p in logs))


def check_memory(directory: Path, budget: int) -> None:
    """ReplayFormatError, before anything is read, when the replay would take more memory than
    `budget` bytes: one line naming the directory, the estimate, the budget and its key."""
    need = replay_memory(directory)
    if need > budget:
        raise ReplayFormatError(
            f"reading this replay would take about {format_size(need)} of memory, over the "
            f"budget of {format_size(budget)}; raise sources.replay_memory (e.g. "
            f"HERDWATCH_SOURCES_REPLAY_MEMORY={_suggest(need)}) or replay fewer files",
            file=str(directory),
        )


def default_budget() -> int:
    """The budget when the caller passes none: HERDWATCH_SOURCES_REPLAY_MEMORY (the variable of
    `sources.replay_memory`, read here too so that every command honours it), else 2 GiB."""
    raw = os.environ.get(f"{ENV_PREFIX}SOURCES_REPLAY_MEMORY")
    if raw is None:
        return REPLAY_MEMORY_BUDGET
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise ConfigError(str(exc), file=f"{ENV_PREFIX}SOURCES_REPLAY_MEMORY") from None


def _suggest(need: int) -> str:
    return f"{-(-need // (1 << 30))}GiB"


def load_replay(
    path: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    memory_budget: int | None = None,
    default_tz: tzinfo = UTC,
) -> RawData:
    """Every series and log event recorded in `path`, cut to [since, until] (inclusive, unix
    seconds). `progress(done_bytes, total_bytes)` is called as the files are read. A replay
    estimated to need more than `memory_budget` bytes is refused before it is read
    (check_memory): the machine would swap rather than tell. None: `sources.replay_memory` as
    HERDWATCH_SOURCES_REPLAY_MEMORY sets it, else REPLAY_MEMORY_BUDGET. Log times written
    without a zone are read in `default_tz` (`sources.log_timezone`)."""
    directory = Path(path)
    try:
        mode = directory.stat().st_mode
    except OSError as exc:
        # Path.exists() is False for a loop too: "no such directory" would be untrue
        why = _why(exc, missing="no such replay directory")
        raise ReplayFormatError(why, file=str(directory)) from None
    if not stat.S_ISDIR(mode):
        raise ReplayFormatError("not a directory (--replay takes a replay directory)",
                                file=str(directory))  # fmt: skip
    metrics, logs = replay_files(directory)
    if not metrics and not logs:
        raise ReplayFormatError(
            "no *.om, *.om.gz, *.log or *.log.gz files in the replay directory",
            file=str(directory),
        )
    check_memory(directory, default_budget() if memory_budget is None else memory_budget)
    total = sum(p.stat().st_size for p in (*metrics, *logs))
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    reader = OpenMetricsReader()
    for p in metrics:
        reader.read_file(p, on_bytes=advance)
    reader.check_histograms()
    series = [s for s in (_cut(s, since, until) for s in reader.series()) if len(s.timestamps)]

    events: list[LogEvent] = []
    n_lines = skipped = 0
    if logs:
        # Only a replay with logs loads their parsers (its patterns, json, calendar).
        from herdwatch.sources.logs import read_log_detail
    for p in logs:
        try:
            ev, lines, skip = read_log_detail(p, default_tz=default_tz)
        except EOFError:
            raise ReplayFormatError(TRUNCATED_GZIP, file=str(p)) from None
        except (OSError, zlib.error, gzip.BadGzipFile) as e:
            raise ReplayFormatError(f"cannot read log: {e}", file=str(p)) from None
        events += ev
        n_lines += lines
        skipped += skip
        advance(p.stat().st_size)
    events.sort(key=lambda e: e.timestamp)
    events = [
        e for e in events
        if (since is None or e.timestamp >= since) and (until is None or e.timestamp <= until)
    ]  # fmt: skip

    detail = f"{len(series)} series from {len(metrics)} metric file(s), {n_lines} log line(s)"
    if skipped:
        detail += f", {skipped} matching log line(s) skipped for want of a timestamp"
    return RawData(
        series=series,
        events=events,
        sources=[SourceStatus(f"replay:{directory}", True, detail)],
        log_lines=n_lines,
    )


def _cut(s: Series, since: float | None, until: float | None) -> Series:
    if since is None and until is None:
        return s
    lo = 0 if since is None else int(np.searchsorted(s.timestamps, since, side="left"))
    hi = len(s.timestamps) if until is None else int(
        np.searchsorted(s.timestamps, until, side="right")
    )  # fmt: skip
    if lo == 0 and hi == len(s.timestamps):
        return s
    return Series(s.name, s.labels, s.timestamps[lo:hi], s.values[lo:hi], s.family, s.type)


class ReplaySource:
    """A recording served in time order, as a live source would: `collect` returns what was
    recorded in (window.since, window.until] (everything up to `until` on the first call).

    The directory is read once, on first use; `span` is the recording's first and last time.
    """

    def __init__(
        self,
        path: Path,
        *,
        since: float | None = None,
        until: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        memory_budget: int | None = None,
        default_tz: tzinfo = UTC,
    ) -> None:
        self.path = Path(path)
        self.memory_budget = memory_budget
        self.default_tz = default_tz
        self.name = f"replay:{self.path}"
        self._bounds = (since, until)
        self.progress = progress
        self._raw: RawData | None = None

    def load(self) -> RawData:
        """The whole recording (read on the first call)."""
        if self._raw is None:
            since, until = self._bounds
            self._raw = load_replay(
                self.path,
                since=since,
                until=until,
                progress=self.progress,
                memory_budget=self.memory_budget,
                default_tz=self.default_tz,
            )
        return self._raw

    @property
    def span(self) -> tuple[float, float] | None:
        return self.load().window()

    async def collect(self, window: CollectWindow) -> RawData:
        return self.read(window)

    def read(self, window: CollectWindow) -> RawData:
        """What `collect` returns, without an event loop (a one-shot replay scan needs none)."""
        raw = self.load()
        lo = -np.inf if window.since is None else window.since
        hi = np.inf if window.until is None else window.until
        series = []
        for s in raw.series:
            i0 = int(np.searchsorted(s.timestamps, lo, side="right"))
            i1 = int(np.searchsorted(s.timestamps, hi, side="right"))
            if i1 > i0:
                series.append(
                    Series(s.name, s.labels, s.timestamps[i0:i1], s.values[i0:i1], s.family, s.type)
                )
        events = [e for e in raw.events if lo < e.timestamp <= hi]
        lines = raw.log_lines if window.since is None else 0
        return RawData(series, events, list(raw.sources), lines, [])
