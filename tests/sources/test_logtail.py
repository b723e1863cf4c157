"""The log source reads recorded files with the replay parser and tails live files through
rotation and truncation (real files in tmp; progress observed through /proc/self/fdinfo)."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herdwatch.errors import SourceError
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.logs import read_log
from herdwatch.sources.logtail import LogTailSource

TOO_MANY = "FATAL:  sorry, too many clients already"


def _pg_line(ts: float, text: str, pid: int = 4242) -> str:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{stamp} UTC [{pid}] app@orders {text}\n"


def _append(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)


def _read_pos(path: Path) -> int | None:
    """How far this process has read the file `path` names now (None when it is not open)."""
    target = os.path.realpath(path)
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != target:
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("pos:"):
                return int(line.split()[1])
    return None


async def _until_read(path: Path, size: int | None = None) -> None:
    """Wait until the tailer has read `path` up to `size` (default: its current size)."""
    want = (await asyncio.to_thread(path.stat)).st_size if size is None else size
    deadline = time.monotonic() + 5
    while await asyncio.to_thread(_read_pos, path) != want:
        assert time.monotonic() < deadline, f"the tailer never read {path} to {want}"
        await asyncio.sleep(0.01)


async def test_recorded_window_uses_the_replay_parser(tmp_path: Path) -> None:
    t0 = 1_764_000_000.0
    log = tmp_path / "postgresql.log"
    lines = []
    for i in range(60):
        text = TOO_MANY if i % 7 == 0 else "LOG:  checkpoint starting: time"
        lines.append(_pg_line(t0 + i, text))
    lines.insert(10, "\tcontinuation of a statement with ERROR:  deadlock detected\n")
    log.write_text("".join(lines))
    old = tmp_path / "postgresql.log.1.gz"
    with gzip.open(old, "wt") as fh:
        fh.write(_pg_line(t0 - 30, "ERROR:  canceling statement due to lock timeout"))
    src = LogTailSource([str(tmp_path / "postgresql.log*")])

    raw = await src.collect(CollectWindow())
    want = read_log(log)[0] + read_log(old)[0]
    assert raw.events == sorted(want, key=lambda e: e.timestamp)
    assert {e.kind for e in raw.events} == {"too_many_clients", "deadlock", "lock_timeout"}
    assert raw.log_lines == len(lines) + 1
    assert raw.sources[0].name == f"logs:{tmp_path}/postgresql.log*" and raw.sources[0].ok

    cut = await src.collect(CollectWindow(since=t0 + 10, until=t0 + 30))
    assert cut.events == [e for e in raw.events if t0 + 10 <= e.timestamp <= t0 + 30]
    assert cut.events and len(cut.events) < len(raw.events)
    # `since` given to the constructor applies when the window has none
    late = await LogTailSource([str(log)], since=t0 + 40).collect(CollectWindow())
    assert late.events == [e for e in read_log(log)[0] if e.timestamp >= t0 + 40]


async def test_tail_follows_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    now = time.time()
    log.write_text(_pg_line(now - 60, TOO_MANY) + _pg_line(now - 59, "LOG:  ok"))
    src = LogTailSource([str(tmp_path / "app.log*")], poll_interval=0.02)
    task = asyncio.create_task(src.collect(CollectWindow(duration=3.0)))

    await _until_read(log)  # opened at its end: the old error is not part of a live window
    _append(log, _pg_line(time.time(), "ERROR:  deadlock detected"))  # A
    await _until_read(log)
    log.rename(tmp_path / "app.log.1")
    # the writer has not reopened yet: its next line lands in the renamed file
    _append(tmp_path / "app.log.1", _pg_line(time.time(), TOO_MANY))  # B
    await _until_read(tmp_path / "app.log.1")
    log.write_text(_pg_line(time.time(), "LOG:  new file") + _pg_line(time.time(), TOO_MANY))  # C
    await _until_read(log)
    # copytruncate: the file shrinks below what was read, then gets a shorter line, no newline
    with log.open("w") as fh:
        fh.write(_pg_line(time.time(), "ERROR:  canceling statement due to lock timeout")[:-1])
    await _until_read(log)
    raw = await task

    kinds = [e.kind for e in raw.events]
    assert kinds == ["deadlock", "too_many_clients", "too_many_clients", "lock_timeout"]
    assert raw.events[0].where == f"{log}:3"
    assert raw.events[2].where == f"{log}:2"  # the new file, from its first line
    assert raw.events[3].where == f"{log}:1"  # read again from the start after truncation
    assert all(e.timestamp >= now - 1 for e in raw.events)
    assert raw.sources[0].detail.endswith("followed 1 rotation(s), 1 truncation(s)")


async def test_tail_with_since_reads_history_then_follows(tmp_path: Path) -> None:
    log = tmp_path / "db.log"
    now = time.time()
    log.write_text(_pg_line(now - 120, TOO_MANY) + _pg_line(now - 5, TOO_MANY))
    src = LogTailSource([str(log)], poll_interval=0.02)
    task = asyncio.create_task(src.collect(CollectWindow(since=now - 60, duration=2.0)))
    await _until_read(log)
    _append(log, _pg_line(time.time(), "ERROR:  deadlock detected"))
    await _until_read(log)
    raw = await task
    assert [e.where for e in raw.events] == [f"{log}:2", f"{log}:3"]


async def test_a_file_that_appears_while_tailing_is_read(tmp_path: Path) -> None:
    first = tmp_path / "a.log"
    first.write_text("")
    src = LogTailSource([str(tmp_path / "*.log")], poll_interval=0.02)
    task = asyncio.create_task(src.collect(CollectWindow(duration=1.5)))
    await _until_read(first)
    later = tmp_path / "b.log"
    later.write_text(_pg_line(time.time(), TOO_MANY))
    await _until_read(later)
    raw = await task
    assert [e.where for e in raw.events] == [f"{later}:1"]


async def test_no_matching_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^source logs:.*nothing-\*\.log: no file matches$"):
        await LogTailSource([str(tmp_path / "nothing-*.log")]).collect(CollectWindow())
