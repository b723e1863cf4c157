"""The views are pure functions of a Snapshot: rendered into a fixed-size recording console
and compared as text (golden files under golden/; HERDWATCH_UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import pytest
from rich.cells import cell_len

from herdwatch.engine.snapshot import Snapshot
from herdwatch.tui import ReplayInfo, ViewState, render_text, screen
from herdwatch.tui.views import score_style, signal_rows

from .conftest import AT

GOLDEN = Path(__file__).parent / "golden"
SIZES = [(80, 24), (100, 30), (132, 43), (60, 16), (200, 60)]
STATES = [
    ViewState(),
    ViewState(subjects=True),
    ViewState(mode="detail"),
    ViewState(mode="detail", scroll=5),
    ViewState(mode="help"),
    ViewState(filter="miss", editing=True),
    ViewState(paused=True, interval=5.0),
]


def text(snap: Snapshot | None, state: ViewState, width: int = 80, height: int = 24,
         replay: ReplayInfo | None = None) -> str:  # fmt: skip
    return render_text(screen(snap, state, replay, width, height), width, height)


def check_golden(name: str, got: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("HERDWATCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8")


def test_main_screen_80x24(snap: Snapshot) -> None:
    check_golden("main_80x24", text(snap, ViewState()))


def test_detail_screen_80x24_replaying(snap: Snapshot) -> None:
    replay = ReplayInfo("stampede_catalog_1s", AT - 900, AT + 300, 120.0)
    check_golden("detail_80x24", text(snap, ViewState(mode="detail"), replay=replay))


def test_per_subject_rows_100x30(snap: Snapshot) -> None:
    check_golden("subjects_100x30", text(snap, ViewState(subjects=True), 100, 30))


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("state", STATES, ids=lambda s: f"{s.mode}-{s.subjects}-{s.filter}")
def test_every_screen_fills_the_terminal_and_no_row_wraps(
    snap: Snapshot, stampede_snapshot: Snapshot, state: ViewState, width: int, height: int
) -> None:
    for s in (snap, stampede_snapshot, None):
        lines = text(s, state, width, height).split("\n")
        assert len(lines) == height
        assert max(cell_len(line) for line in lines) <= width


def test_the_stampede_as_the_daemon_sees_it(stampede_snapshot: Snapshot) -> None:
    main = text(stampede_snapshot, ViewState(), 100, 30)
    assert "cache_stampede" in main and "CRIT" in main and "active" in main
    assert "cache-1:9121" in main  # the shard that herded
    detail = text(stampede_snapshot, ViewState(mode="detail"), 100, 60)
    assert "Recommendations" in detail
    assert "$ herdwatch mitigate client --redis URL --set ttl_jitter=" in detail
    assert "lease" in detail.lower() and "Timeline" in detail


def test_detail_scrolls_and_says_how_much_is_left(snap: Snapshot) -> None:
    first = text(snap, ViewState(mode="detail"), 80, 12)
    assert "more lines" in first
    scrolled = text(snap, ViewState(mode="detail", scroll=100), 80, 12)
    assert "more lines" not in scrolled and "onset 16:21:07" in scrolled


def test_filter_names_signals_and_subjects(snap: Snapshot) -> None:
    rows, _ = signal_rows(snap, ViewState(filter="MISS"))
    assert [r.label for r in rows] == ["miss ratio"]
    rows, _ = signal_rows(snap, ViewState(filter="cache-2", subjects=True))
    assert [r.label for r in rows] == ["└cache-2:9121"]
    assert "no signal matches" in text(snap, ViewState(filter="nothing-like-this"))


def test_missing_signals_are_named_not_hidden(snap: Snapshot) -> None:
    _, missing = signal_rows(snap, ViewState())
    assert missing == ["lock waits", "ctx switch", "system cpu", "error logs", "upstream req"]


def test_colors_follow_the_deviation_score(snap: Snapshot) -> None:
    assert [score_style(s) for s in (0.5, -2.9, 4.0, -5.9, 6.0, -80.0, math.nan)] == [
        "green", "green", "yellow", "yellow", "bold red", "bold red", "dim",
    ]  # fmt: skip
    colored = render_text(screen(snap, ViewState(), None, 80, 24), 80, 24, color=True)
    miss_row = next(line for line in colored.split("\n") if "miss ratio" in line)
    assert "\x1b[1;31m" in miss_row  # +68.9: bold red
    requests_row = next(line for line in colored.split("\n") if "requests" in line)
    assert "\x1b[32m" in requests_row and "\x1b[1;31m" not in requests_row


def test_unhealthy_sources_show_their_error_and_retry(snap: Snapshot) -> None:
    header = text(snap, ViewState()).split("\n")[1]
    assert "● prometheus" in header
    assert "✗ redis (connection refused, retry in 4s)" in header


def test_selection_follows_the_finding_id(snap: Snapshot) -> None:
    chosen = text(snap, ViewState(selected="cron_herd-00000001"))
    marked = [line for line in chosen.split("\n") if line.startswith("▶")]
    assert len(marked) == 1 and "cron_herd" in marked[0]


def test_views_read_no_source() -> None:
    # The data/view split: views and state import neither sources nor the Watcher.
    for name in ("views.py", "state.py"):
        tree = ast.parse((Path(__file__).parents[2] / "herdwatch" / "tui" / name).read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not {
            m for m in imported if m.startswith(("herdwatch.sources", "herdwatch.engine.watch"))
        }
