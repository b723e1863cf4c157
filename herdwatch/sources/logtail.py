"""Log source: error events from log files matched by globs, read for a recorded window and
tailed live, with the same line parser as replay (`herdwatch.sources.logs.LogLineParser`).

What is read, for a `CollectWindow(since, until, duration)` (`since` defaults to the one given to
the constructor):

* with `since` set, or with `duration == 0`, the existing content of every matching file
  (`*.gz` too), keeping events with since <= t <= until;
* with `duration > 0`, the lines written during the next `duration` seconds (from the current end
  of each file when `since` is None, so a live scan is not flooded with old errors). Tailing
  follows rotation (the path now names another inode: the old file is drained, the new one read
  from its start; a renamed file is followed by inode, never read twice), truncation (the size
  went below what was read: read again from the start, as after `copytruncate`) and files that
  start matching the globs later.

A glob that matches no file when collect() starts is a `SourceError`. File I/O runs in a worker
thread (`asyncio.to_thread`), so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import glob
import gzip
import math
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import BinaryIO

from herdwatch.errors import SourceError
from herdwatch.model import LogEvent, RawData, SourceStatus
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.logs import MAX_LINE_BYTES, LogLineParser, numbered_lines

__all__ = ["LogTailSource"]

_CHUNK = 1 << 20


def _year_month(ts: float) -> tuple[int, int]:
    d = datetime.fromtimestamp(ts, UTC)
    return d.year, d.month


@dataclass(slots=True)
class _Tail:
    """One open file being followed: what was read of it and the parser's stream state."""

    path: str
    fh: BinaryIO
    ident: tuple[int, int]
    parser: LogLineParser
    offset: int = 0
    lineno: int = 0
    buf: bytes = b""
    long: bool = False  # inside a line over MAX_LINE_BYTES: drop bytes up to its newline


@dataclass(slots=True)
class _State:
    since: float
    until: float
    events: list[LogEvent] = field(default_factory=list)
    tails: dict[str, _Tail] = field(default_factory=dict)  # by path
    seen: set[tuple[int, int]] = field(default_factory=set)  # (st_dev, st_ino) ever read
    lines: int = 0
    files: set[str] = field(default_factory=set)
    rotations: int = 0
    truncations: int = 0
    long_lines: int = 0  # lines over MAX_LINE_BYTES, skipped


class LogTailSource:
    """Error events (lock timeouts, too many clients, connection refused, deadlocks) from the
    files matched by `globs`; see the module docstring for what a collect() reads."""

    def __init__(
        self,
        globs: Sequence[str],
        *,
        since: float | None = None,
        poll_interval: float = 0.2,
        default_tz: tzinfo = UTC,
    ) -> None:
        self._globs = tuple(globs)
        self._since = since
        self._poll = max(float(poll_interval), 0.01)
        self._tz = default_tz
        self.name = "logs:" + ",".join(self._globs)

    def _match(self) -> list[str]:
        paths: set[str] = set()
        for pattern in self._globs:
            for p in glob.glob(os.path.expanduser(pattern)):
                if os.path.isfile(p):
                    paths.add(p)
        return sorted(paths)

    async def collect(self, window: CollectWindow) -> RawData:
        """Read (and for `window.duration` seconds, tail) the matching files."""
        since = window.since if window.since is not None else self._since
        duration = max(float(window.duration), 0.0)
        st = _State(
            since=-math.inf if since is None else since,
            until=math.inf if window.until is None else window.until,
        )
        paths = await asyncio.to_thread(self._match)
        if not paths:
            raise SourceError(self.name, "no file matches")
        from_start = since is not None or duration == 0
        try:
            await asyncio.to_thread(self._open_all, st, paths, from_start)
            if duration > 0:
                loop = asyncio.get_running_loop()
                end = loop.time() + duration
                while True:
                    now = loop.time()
                    if now >= end:
                        break
                    await asyncio.sleep(min(self._poll, end - now))
                    await asyncio.to_thread(self._poll_once, st)
            await asyncio.to_thread(self._finish, st)
        finally:
            for tail in st.tails.values():
                tail.fh.close()
        st.events.sort(key=lambda e: e.timestamp)
        detail = f"{len(st.files)} file(s), {st.lines} lines"
        if st.rotations or st.truncations:
            detail += f"; followed {st.rotations} rotation(s), {st.truncations} truncation(s)"
        if st.long_lines:
            detail += f"; skipped {st.long_lines} line(s) longer than {MAX_LINE_BYTES} bytes"
        return RawData(
            events=st.events,
            sources=[SourceStatus(self.name, True, detail)],
            log_lines=st.lines,
        )

    # Everything below runs in a worker thread.

    def _fail(self, path: str, exc: BaseException) -> SourceError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return SourceError(self.name, f"cannot read {path}: {reason}")

    def _open_all(self, st: _State, paths: list[str], from_start: bool) -> None:
        for path in paths:
            if path.endswith(".gz"):
                if from_start:
                    self._read_gz(st, path)
                continue
            self._open(st, path, from_start=from_start)

    def _read_gz(self, st: _State, path: str) -> None:
        try:
            info = os.stat(path)
            ident = (info.st_dev, info.st_ino)
            year, month = _year_month(info.st_mtime)
            parser = LogLineParser(year=year, month=month, default_tz=self._tz)

            def long(_: int) -> None:
                st.long_lines += 1

            for i, line in numbered_lines(Path(path), on_long=long):
                self._feed(st, parser, line, f"{path}:{i}")
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise self._fail(path, exc) from None
        st.seen.add(ident)
        st.files.add(path)

    def _open(self, st: _State, path: str, *, from_start: bool) -> _Tail | None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open across polls, closed in collect()
        except FileNotFoundError:
            return None  # gone between glob and open (rotation in progress): next poll
        except OSError as exc:
            raise self._fail(path, exc) from None
        info = os.fstat(fh.fileno())
        ident = (info.st_dev, info.st_ino)
        if ident in st.seen:
            fh.close()  # a file we already follow, now under another name
            return None
        ref = info.st_mtime if from_start else time.time()
        year, month = _year_month(ref)
        tail = _Tail(path, fh, ident, LogLineParser(year=year, month=month, default_tz=self._tz))
        if not from_start:
            # start at the end, but count the lines before it so `where` names the real line
            while tail.offset < info.st_size:
                chunk = fh.read(min(_CHUNK, info.st_size - tail.offset))
                if not chunk:
                    break
                tail.offset += len(chunk)
                tail.lineno += chunk.count(b"\n")
        st.tails[path] = tail
        st.seen.add(ident)
        st.files.add(path)
        self._drain(st, tail)
        return tail

    def _feed(self, st: _State, parser: LogLineParser, line: str, where: str) -> None:
        st.lines += 1
        ev = parser.feed(line, where)
        if ev is not None and st.since <= ev.timestamp <= st.until:
            st.events.append(ev)

    def _drain(self, st: _State, tail: _Tail) -> None:
        """Read what was appended to `tail` since the last read (restarting after truncation)."""
        try:
            size = os.fstat(tail.fh.fileno()).st_size
            if size < tail.offset:
                st.truncations += 1
                tail.offset, tail.buf, tail.lineno, tail.long = 0, b"", 0, False
                tail.parser = LogLineParser(
                    year=tail.parser.year, month=tail.parser.month, default_tz=self._tz
                )
                tail.fh.seek(0)
            while True:
                data = tail.fh.read(_CHUNK)
                if not data:
                    break
                tail.offset += len(data)
                pieces = (tail.buf + data).split(b"\n")
                tail.buf = pieces.pop()
                for raw in pieces:
                    tail.lineno += 1
                    if tail.long or len(raw.rstrip(b"\r")) > MAX_LINE_BYTES:
                        tail.long = False  # its newline came: the next line is read again
                        st.long_lines += 1
                        continue
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    self._feed(st, tail.parser, line, f"{tail.path}:{tail.lineno}")
                if len(tail.buf) > MAX_LINE_BYTES:
                    # no newline yet and already too long: do not hold it, skip to its end
                    tail.buf, tail.long = b"", True
        except OSError as exc:
            raise self._fail(tail.path, exc) from None

    def _flush(self, st: _State, tail: _Tail) -> None:
        """The last line of a file that has no newline yet counts as a line."""
        if tail.long:
            tail.lineno += 1
            st.long_lines += 1
            tail.buf, tail.long = b"", False
        elif tail.buf:
            tail.lineno += 1
            line = tail.buf.decode("utf-8", "replace").rstrip("\r")
            tail.buf = b""
            self._feed(st, tail.parser, line, f"{tail.path}:{tail.lineno}")

    def _poll_once(self, st: _State) -> None:
        for path, tail in list(st.tails.items()):
            self._drain(st, tail)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue  # renamed away, not yet recreated: keep reading the old inode
            if (info.st_dev, info.st_ino) != tail.ident:
                # Rotated: whatever the writer put in the old file before reopening is drained
                # first, then the new file is read from its start.
                self._drain(st, tail)
                self._flush(st, tail)
                tail.fh.close()
                del st.tails[path]
                st.rotations += 1
                self._open(st, path, from_start=True)
        for path in self._match():
            if path not in st.tails and not path.endswith(".gz"):
                self._open(st, path, from_start=True)

    def _finish(self, st: _State) -> None:
        for tail in st.tails.values():
            self._drain(st, tail)
            self._flush(st, tail)
