"""load_replay: a replay directory -> RawData, windows, progress and bad directories."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest

from herdwatch.errors import ReplayFormatError
from herdwatch.sources.replay import load_replay

T0 = 1764000000


def make_dir(tmp_path: Path) -> Path:
    d = tmp_path / "incident"
    d.mkdir()
    lines = ["# TYPE redis_keyspace_misses counter"]
    lines += [f"redis_keyspace_misses_total {i * 10} {T0 + i}" for i in range(10)]
    lines.append("# EOF")
    (d / "metrics.om").write_text("\n".join(lines) + "\n")
    gauge = "# TYPE pg_settings_max_connections gauge\n"
    gauge += "".join(f"pg_settings_max_connections 100 {T0 + i}.5\n" for i in range(10))
    (d / "pg.om.gz").write_bytes(gzip.compress((gauge + "# EOF\n").encode()))
    (d / "postgresql.log").write_text(
        "2025-11-24 16:00:03.250 UTC [1] app@db FATAL:  sorry, too many clients already\n"
        "2025-11-24 16:00:04.000 UTC [1] app@db LOG:  ok\n"
        "2025-11-24 16:00:08.000 UTC [2] app@db ERROR:  deadlock detected\n"
    )
    (d / "herdwatch.yaml").write_text("signals: {}\n")
    return d


def test_loads_metrics_and_logs(tmp_path: Path) -> None:
    d = make_dir(tmp_path)
    seen: list[tuple[int, int]] = []
    raw = load_replay(d, progress=lambda done, total: seen.append((done, total)))
    names = sorted(s.name for s in raw.series)
    assert names == ["pg_settings_max_connections", "redis_keyspace_misses_total"]
    misses = next(s for s in raw.series if s.name == "redis_keyspace_misses_total")
    assert misses.family == "redis_keyspace_misses" and len(misses.values) == 10
    assert [(e.timestamp, e.kind) for e in raw.events] == [
        (T0 + 3.25, "too_many_clients"), (T0 + 8.0, "deadlock")
    ]  # fmt: skip
    assert raw.events[0].where == f"{d / 'postgresql.log'}:1"
    assert raw.log_lines == 3
    assert [(s.name, s.ok) for s in raw.sources] == [(f"replay:{d}", True)]
    total = sum(p.stat().st_size for p in d.iterdir() if p.suffix in (".om", ".gz", ".log"))
    assert seen and seen[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))


def test_since_until_cut_series_and_events(tmp_path: Path) -> None:
    raw = load_replay(make_dir(tmp_path), since=T0 + 3, until=T0 + 5)
    misses = next(s for s in raw.series if s.name == "redis_keyspace_misses_total")
    assert misses.timestamps.tolist() == [T0 + 3, T0 + 4, T0 + 5]
    gauge = next(s for s in raw.series if s.name == "pg_settings_max_connections")
    assert gauge.timestamps.tolist() == [T0 + 3.5, T0 + 4.5]
    assert [e.kind for e in raw.events] == ["too_many_clients"]


def test_bad_directories_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ReplayFormatError, match=f"^{tmp_path / 'nope'}: no such replay directory$"):
        load_replay(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "herdwatch.yaml").write_text("{}\n")
    with pytest.raises(ReplayFormatError) as exc:
        load_replay(empty)
    assert (
        str(exc.value)
        == f"{empty}: no *.om, *.om.gz, *.log or *.log.gz files in the replay directory"
    )
    f = tmp_path / "file.om"
    f.write_text("# EOF\n")
    with pytest.raises(ReplayFormatError, match="not a directory"):
        load_replay(f)


def test_malformed_metrics_name_file_and_line(tmp_path: Path) -> None:
    d = make_dir(tmp_path)
    (d / "metrics.om").write_text(f"a 1 {T0}\na 2\n# EOF\n")
    with pytest.raises(ReplayFormatError) as exc:
        load_replay(d)
    assert str(exc.value) == (
        f"{d / 'metrics.om'}:2: sample without a timestamp (replay needs one on every sample)"
    )


def test_logs_only_directory(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text('{"ts": 1764000000, "msg": "ECONNREFUSED"}\n')
    raw = load_replay(tmp_path)
    assert raw.series == [] and [e.kind for e in raw.events] == ["connection_refused"]


def test_symlink_loop_and_dangling_link_are_one_error(tmp_path: Path) -> None:
    """A name that matches *.om but leads nowhere is bad input naming it, not an OSError
    (issue 9)."""
    from herdwatch.sources.replay import replay_size

    (tmp_path / "x.om").symlink_to(tmp_path / "x.om")
    with pytest.raises(ReplayFormatError, match=r"x\.om: a symbolic link that loops"):
        load_replay(tmp_path)
    with pytest.raises(ReplayFormatError, match="loops"):
        replay_size(tmp_path)
    (tmp_path / "x.om").unlink()
    (tmp_path / "y.log").symlink_to(tmp_path / "gone")
    with pytest.raises(ReplayFormatError, match=r"y\.log: No such file"):
        load_replay(tmp_path)


def test_a_replay_directory_that_is_a_symlink_loop_says_so(tmp_path: Path) -> None:
    """Not "no such replay directory" (Path.exists() is False for a loop), from the CLI too."""
    from tests.fuzz.test_entry_point import run

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(ReplayFormatError, match=r"/a: a symbolic link that loops$"):
        load_replay(tmp_path / "a")
    code, out, err = run(["scan", "--replay", str(tmp_path / "a")], tmp_path)
    assert (code, out, err) == (2, "", f"herdwatch: {tmp_path / 'a'}: a symbolic link that loops\n")
    with pytest.raises(ReplayFormatError, match=r"/nowhere: no such replay directory$"):
        load_replay(tmp_path / "nowhere")


def test_histogram_without_inf_bucket_is_refused_by_name(tmp_path: Path) -> None:
    """Its quantiles cannot be computed: the finding silently disappeared (issue 9)."""
    (tmp_path / "m.om").write_text(
        "# TYPE db_query_duration_seconds histogram\n"
        'db_query_duration_seconds_bucket{le="0.1"} 1 1764000000\n'
        "db_query_duration_seconds_count 1 1764000000\n# EOF\n"
    )
    with pytest.raises(
        ReplayFormatError, match=r'm\.om:2: histogram db_query_duration_seconds has no le="\+Inf"'
    ):
        load_replay(tmp_path)


def test_an_endless_line_is_refused_with_its_line(tmp_path: Path) -> None:
    from herdwatch.sources.openmetrics import MAX_LINE_BYTES

    (tmp_path / "m.om").write_bytes(b"# TYPE a gauge\na 1 1\n" + b"x" * (MAX_LINE_BYTES * 20))
    with pytest.raises(ReplayFormatError, match=r"m\.om:3: line longer than"):
        load_replay(tmp_path)


def test_log_times_without_a_zone_are_read_in_sources_log_timezone(tmp_path: Path) -> None:
    """`sources.log_timezone` (a replay's own herdwatch.yaml, a --config or the variable) says
    where a log line without a zone was written; a bad zone is the config's error."""
    from click.testing import CliRunner

    from herdwatch.cli import cli
    from herdwatch.config import load_config
    from herdwatch.config._zones import log_zone
    from herdwatch.ruletest import _fixture_cfg

    (tmp_path / "app.log").write_text(
        "2026-01-01 10:00:00.000 ERROR lock timeout on orders\n"
        "2026-01-01 10:00:01.000 ERROR canceling statement due to lock timeout\n"
    )
    utc = load_replay(tmp_path).events[0].timestamp
    assert utc == 1767261601.0  # 2026-01-01T10:00:01Z, the line a lock timeout is read from
    (tmp_path / "herdwatch.yaml").write_text("sources:\n  log_timezone: UTC+5:30\n")
    zone = log_zone(_fixture_cfg(tmp_path).sources.log_timezone)
    assert load_replay(tmp_path, default_tz=zone).events[0].timestamp == utc - 5.5 * 3600
    env = {"HERDWATCH_SOURCES_LOG_TIMEZONE": "America/New_York"}
    assert load_config(None, environ=env).sources.log_timezone == "America/New_York"
    (tmp_path / "herdwatch.yaml").write_text("sources:\n  log_timezone: Mars/Base\n")
    res = CliRunner().invoke(cli, ["scan", "--replay", str(tmp_path)], env={})
    assert res.exit_code == 2
    assert "herdwatch.yaml:2: sources.log_timezone: unknown time zone 'Mars/Base'" in res.output
