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


# --- the replay's memory budget

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures/incidents/real_cache_stampede"


def test_a_replay_over_a_tiny_budget_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERDWATCH_SOURCES_REPLAY_MEMORY", "1MiB")
    code, out, err = run(["scan", "--replay", str(FIXTURE)], tmp_path)
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert str(FIXTURE) in line and "over the budget of 1 MiB" in line
    assert "sources.replay_memory" in line and "HERDWATCH_SOURCES_REPLAY_MEMORY=" in line


def test_the_estimate_reads_the_gzip_trailer_not_the_content(tmp_path: Path) -> None:
    """A gzip bomb: 20 KiB on disk, 100 MiB inside; refused by its trailer's size."""
    from herdwatch.errors import ReplayFormatError
    from herdwatch.sources.replay import load_replay, replay_memory

    (tmp_path / "m.om.gz").write_bytes(gzip.compress(b"# " + b"a" * (100 << 20) + b"\n"))
    assert (tmp_path / "m.om.gz").stat().st_size < 200_000
    assert replay_memory(tmp_path) >= 2.5 * (100 << 20)
    with pytest.raises(
        ReplayFormatError, match=r"about 450 MiB of memory, over the budget of 300 MiB"
    ):
        load_replay(tmp_path, memory_budget=300 << 20)


def test_the_estimate_is_near_what_a_large_replay_takes(tmp_path: Path) -> None:
    """24 h at 1 s of 100 series (544 MB of text) peaked at 622 MB: the estimate must let it
    through the default budget, and must not be below what it took."""
    from herdwatch.config import REPLAY_MEMORY_BUDGET
    from herdwatch.sources import replay

    text = 544 * 1000 * 1000
    need = int(replay._FIXED + replay._METRIC_FACTOR * text)
    assert 622 * 1000 * 1000 < need < REPLAY_MEMORY_BUDGET


def test_the_fixtures_fit_the_default_budget() -> None:
    from herdwatch.config import REPLAY_MEMORY_BUDGET
    from herdwatch.sources.replay import replay_memory

    assert replay_memory(FIXTURE) < REPLAY_MEMORY_BUDGET / 5


@pytest.mark.parametrize(
    ("value", "want"), [("512MiB", 512 << 20), ("2G", 2 << 30), ("1.5GB", 1_500_000_000)]
)
def test_sources_replay_memory_is_a_size(tmp_path: Path, value: str, want: int) -> None:
    from herdwatch.config import load_config

    (tmp_path / "herdwatch.yaml").write_text(f"sources:\n  replay_memory: {value}\n")
    cfg = load_config(tmp_path / "herdwatch.yaml", environ={}, discover=False)
    assert cfg.sources.replay_memory == want


def test_a_bad_budget_names_its_key(tmp_path: Path) -> None:
    from herdwatch.config import load_config
    from herdwatch.errors import ConfigError

    (tmp_path / "herdwatch.yaml").write_text("sources:\n  replay_memory: lots\n")
    with pytest.raises(ConfigError, match=r"herdwatch\.yaml:2.*expected a size"):
        load_config(tmp_path / "herdwatch.yaml", environ={}, discover=False)
