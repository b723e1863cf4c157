"""Bounded input (issue 9): log lines over MAX_LINE_BYTES and a replay's memory budget."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest

from herdwatch.model import RawData
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.logs import MAX_LINE_BYTES
from herdwatch.sources.logtail import LogTailSource
from tests.fuzz.test_entry_point import run

GOOD = b'{"ts": 1764000000, "msg": "ECONNREFUSED"}\n'


@pytest.mark.parametrize("name", ["app.log", "app.log.gz"])
def test_a_replay_log_line_over_the_limit_is_one_error_naming_file_and_line(
    tmp_path: Path, name: str
) -> None:
    data = GOOD + GOOD + b"x" * (MAX_LINE_BYTES * 3) + b"\n" + GOOD
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    code, _, err = run(["scan", "--replay", str(tmp_path)], tmp_path)
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()]
    assert f"{tmp_path / name}:3: log line longer than {MAX_LINE_BYTES} bytes" in err


def test_a_line_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    from herdwatch.sources.replay import load_replay

    (tmp_path / "a.log").write_bytes(GOOD + b"y" * MAX_LINE_BYTES + b"\n" + GOOD)
    raw = load_replay(tmp_path)
    assert len(raw.events) == 2 and raw.log_lines == 3


def test_a_tailed_file_skips_over_long_lines_and_counts_them(tmp_path: Path) -> None:
    log = tmp_path / "live.log"
    log.write_bytes(GOOD)
    src = LogTailSource([str(log)], poll_interval=0.02)

    async def scan() -> RawData:
        task = asyncio.create_task(src.collect(CollectWindow(since=0, duration=0.6)))
        await asyncio.sleep(0.15)
        with log.open("ab") as fh:  # a long line written in pieces, then a good one
            fh.write(b"z" * (MAX_LINE_BYTES + 10))
            fh.flush()
            await asyncio.sleep(0.1)
            fh.write(b"z" * MAX_LINE_BYTES + b"\n" + GOOD)
        return await task

    raw = asyncio.run(scan())
    assert [e.where for e in raw.events] == [f"{log}:1", f"{log}:3"]
    (status,) = raw.sources
    assert status.ok and f"skipped 1 line(s) longer than {MAX_LINE_BYTES} bytes" in status.detail


def test_a_tailed_gz_skips_over_long_lines(tmp_path: Path) -> None:
    gz = tmp_path / "old.log.gz"
    gz.write_bytes(gzip.compress(b"q" * (MAX_LINE_BYTES + 1) + b"\n" + GOOD))
    raw = asyncio.run(LogTailSource([str(gz)]).collect(CollectWindow(since=0)))
    assert [e.where for e in raw.events] == [f"{gz}:2"]
    assert "skipped 1 line(s)" in raw.sources[0].detail
