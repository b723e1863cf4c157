"""Test helpers: backfill replay directories into a real Prometheus with promtool."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from herdwatch.sources.replay import replay_files
from tests.support.servers import Server, start_prometheus

REPO = Path(__file__).resolve().parents[2]
INCIDENTS = REPO / "fixtures" / "incidents"


def fixture_dirs() -> list[Path]:
    """Every incident fixture that has recorded metrics."""
    return sorted(d for d in INCIDENTS.iterdir() if d.is_dir() and replay_files(d)[0])


def backfill(replay_dir: Path, tsdb: Path) -> None:
    """promtool create-blocks-from openmetrics for every metrics file of `replay_dir`."""
    for om in replay_files(replay_dir)[0]:
        with tempfile.TemporaryDirectory(prefix="herdwatch-om-") as tmp:
            path = om
            if om.name.endswith(".gz"):
                path = Path(tmp) / om.name.removesuffix(".gz")
                with gzip.open(om, "rb") as src, path.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            res = subprocess.run(
                ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(path), str(tsdb)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert res.returncode == 0, f"promtool on {om}: {res.stderr[-2000:]}"


@contextlib.contextmanager
def backfilled_prometheus(dirs: Sequence[Path]) -> Iterator[Server]:
    """A real Prometheus serving the metrics of `dirs` (their time ranges must not overlap)."""
    tsdb = Path(tempfile.mkdtemp(prefix="herdwatch-tsdb-"))
    try:
        # promtool is single-threaded: two at a time, each into its own dir, then the blocks
        # (self-contained ULID dirs) move into the one TSDB.
        parts = [tsdb / f"part-{i}" for i in range(len(dirs))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(backfill, dirs, parts))
        for part in parts:
            if part.exists():
                for block in part.iterdir():
                    block.rename(tsdb / block.name)
                shutil.rmtree(part)
        with start_prometheus(tsdb_dir=tsdb) as prom:
            yield prom
    finally:
        shutil.rmtree(tsdb, ignore_errors=True)


def disjoint_groups(
    windows: dict[str, tuple[float, float]], margin: float = 600.0
) -> list[list[str]]:
    """Names grouped so that no two windows in a group come within `margin` seconds of each
    other (first fit by start time)."""
    groups: list[list[str]] = []
    spans: list[list[tuple[float, float]]] = []
    for name, (lo, hi) in sorted(windows.items(), key=lambda kv: kv[1]):
        for group, used in zip(groups, spans, strict=True):
            if all(hi + margin < a or lo > b + margin for a, b in used):
                group.append(name)
                used.append((lo, hi))
                break
        else:
            groups.append([name])
            spans.append([(lo, hi)])
    return groups
