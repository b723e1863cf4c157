"""Bounded input (issue 9): log and OpenMetrics lines over their MAX_LINE_BYTES and a replay's
memory budget."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest

from herdwatch.model import RawData
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.logs import MAX_LINE_BYTES
from herdwatch.sources.logtail import LogTailSource
from herdwatch.sources.openmetrics import MAX_LINE_BYTES as OM_MAX
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


def _om_with_line(length: int, *, comment: bool = False) -> bytes:
    """OpenMetrics text whose line 3 is `length` bytes long (newline excluded), then a good
    line and `# EOF`."""
    head = b"# HELP a_total " if comment else b'a_total{x="'
    tail = b"" if comment else b'"} 2 1764000001'
    line = head + b"y" * (length - len(head) - len(tail)) + tail
    assert len(line) == length
    return b"# TYPE a counter\na_total 1 1764000000\n" + line + b"\na_total 3 1764000002\n# EOF\n"


@pytest.mark.parametrize("name", ["m.om", "m.om.gz"])
@pytest.mark.parametrize(
    ("length", "comment"),
    [(OM_MAX + 1, False), (3 << 20, False), (3 << 20, True), (20 << 20, False)],
)
def test_an_openmetrics_line_over_the_limit_is_one_error_naming_file_and_line(
    tmp_path: Path, name: str, length: int, comment: bool
) -> None:
    """Even when it ends in a newline within the read block (was: parsed, 20 MiB and all)."""
    data = _om_with_line(length, comment=comment)
    (tmp_path / name).write_bytes(gzip.compress(data, 1) if name.endswith(".gz") else data)
    code, out, err = run(["scan", "--replay", str(tmp_path)], tmp_path)
    assert (code, out) == (2, ""), err
    assert err == f"herdwatch: {tmp_path / name}:3: line longer than {OM_MAX} bytes " \
        "(is this OpenMetrics text?)\n"  # fmt: skip


def test_an_openmetrics_line_of_exactly_the_limit_is_read() -> None:
    from herdwatch.sources.openmetrics import parse_openmetrics

    series = parse_openmetrics(_om_with_line(OM_MAX))
    assert sorted(len(s.values) for s in series) == [1, 2]  # the long line's series, the other


@pytest.mark.parametrize("block", [1 << 16, 1 << 20, 3 << 20])
def test_a_long_line_across_read_blocks_names_its_line(block: int) -> None:
    """However the text is cut into blocks, the long line is the one named, and what is held
    of it never grows past the limit plus one block."""
    from herdwatch.errors import ReplayFormatError
    from herdwatch.sources.openmetrics import OpenMetricsReader

    data = _om_with_line(5 << 20)
    with pytest.raises(ReplayFormatError, match=r"^x\.om:3: line longer than"):
        OpenMetricsReader().read_bytes(data, file="x.om", block_size=block)


def test_only_the_per_line_parser_sees_lines_near_the_limit() -> None:
    """The limit is checked where the per-line parser takes a line: the vectorized path only
    takes lines far shorter, so it needs no check (and keeps its speed)."""
    from herdwatch.sources import openmetrics as om

    assert om._MAX_KEY + 2 * om._MAX_NUM + 2 < OM_MAX


@pytest.mark.parametrize("name", ["app.log", "app.log.gz"])
def test_a_log_line_one_byte_over_the_limit_is_refused_even_with_its_newline(
    tmp_path: Path, name: str
) -> None:
    data = GOOD + b"x" * (MAX_LINE_BYTES + 1) + b"\n" + GOOD
    (tmp_path / name).write_bytes(gzip.compress(data, 1) if name.endswith(".gz") else data)
    code, _, err = run(["scan", "--replay", str(tmp_path)], tmp_path)
    assert code == 2
    assert err == f"herdwatch: {tmp_path / name}:2: log line longer than {MAX_LINE_BYTES} bytes\n"


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
        ReplayFormatError, match=r"about 650 MiB of memory, over the budget of 300 MiB"
    ):
        load_replay(tmp_path, memory_budget=300 << 20)


STAMPEDE_GZ = FIXTURE.parent / "stampede_catalog_1s" / "metrics.om.gz"


def _scan_error(directory: Path) -> str:
    code, out, err = run(["scan", "--replay", str(directory)], directory)
    assert (code, out) == (2, ""), err
    assert err.endswith("\n") and "\n" not in err[:-1], err
    return err[:-1]


@pytest.mark.parametrize("name", ["metrics.om.gz", "app.log.gz"])
def test_a_truncated_gz_is_said_to_be_truncated_not_over_the_memory_budget(
    tmp_path: Path, name: str
) -> None:
    """Its last 4 bytes are the middle of the stream: the trailer's size (here 2.18 GiB for
    5000 bytes) is more than deflate can hold, so it is no estimate (was: "would take about
    5.65 GiB ... raise sources.replay_memory")."""
    (tmp_path / name).write_bytes(STAMPEDE_GZ.read_bytes()[:5000])
    err = _scan_error(tmp_path)
    assert err.startswith(f"herdwatch: {tmp_path / name}: truncated or corrupt gzip file: "), err
    assert "memory" not in err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"abcdefg", "not a gzip file"),
        (b"", "truncated gzip file (0 bytes"),
        (b"\x1f\x8b\x08\x00", "truncated gzip file (4 bytes"),
        (b"PK\x03\x04" + b"\x00" * 40, "not a gzip file"),
    ],
    ids=["7 bytes of text", "empty", "gzip header only", "zip"],
)
def test_a_gz_that_is_no_gzip_is_named(tmp_path: Path, content: bytes, words: str) -> None:
    (tmp_path / "m.om.gz").write_bytes(content)
    assert _scan_error(tmp_path).startswith(f"herdwatch: {tmp_path / 'm.om.gz'}: {words}")


@pytest.mark.parametrize("name", ["metrics.om.gz", "app.log.gz"])
def test_a_truncated_gz_whose_last_bytes_look_like_a_size_is_truncated_when_read(
    tmp_path: Path, name: str
) -> None:
    """Cut where the last 4 bytes happen to be a size deflate could hold: the estimate lets it
    through, and reading it says truncated (was: "cannot read: Compressed file ended before
    the end-of-stream marker was reached")."""
    data = STAMPEDE_GZ.read_bytes()[:30_000] + (1 << 20).to_bytes(4, "little")
    (tmp_path / name).write_bytes(data)
    assert _scan_error(tmp_path) == (
        f"herdwatch: {tmp_path / name}: truncated gzip file (it ends before its compressed "
        "stream does)"
    )


@pytest.mark.parametrize(
    ("samples", "text", "peak"),
    [(8_640_000, 544_000_000, 622_000_000), (20_160_000, 1_788_000_000, 973_000_000)],
    ids=["24 h at 1 s of 100 series", "7 days at 15 s of 500 series"],
)
def test_the_estimate_is_near_what_a_large_replay_takes(
    tmp_path: Path, samples: int, text: int, peak: int
) -> None:
    """Measured peaks (benchmarks/scan_large.py, benchmarks/fleet_week.py): for text with the
    same bytes per sample, the estimate must not be below what it took, and must let it
    through the default budget (the week was refused at 4.4 GiB by an estimate per byte)."""
    from herdwatch.config import REPLAY_MEMORY_BUDGET
    from herdwatch.sources import replay

    tail = b" 1234567 1764000000\n"
    key = b'redis_keyspace_hits_total{instance="10.0.0.1:9100"}'
    line = key.ljust(round(text / samples) - len(tail), b"_") + tail
    om = b"# TYPE redis_keyspace_hits counter\n" + line * 20_000 + b"# EOF\n"
    (tmp_path / "m.om").write_bytes(om)
    per_byte = (replay.replay_memory(tmp_path) - replay._FIXED) / len(om)
    need = replay._FIXED + per_byte * text
    assert peak < need < REPLAY_MEMORY_BUDGET, (need, peak)


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
