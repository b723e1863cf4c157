"""Each key's effect on the ViewState (pure)."""

from __future__ import annotations

from herdwatch.tui import ViewState, on_key
from herdwatch.tui.state import INTERVALS

IDS = ["a", "b", "c"]


def press(*keys: str, state: ViewState | None = None, ids: list[str] = IDS) -> ViewState:
    state = state or ViewState()
    for key in keys:
        state = on_key(state, key, ids)
    return state


def test_arrows_select_and_stop_at_the_ends() -> None:
    assert press("down").selected == "b"
    assert press("down", "down", "down", "down").selected == "c"
    assert press("down", "up", "up").selected == "a"
    assert press("end").selected == "c" and press("end", "home").selected == "a"


def test_the_selection_survives_new_findings_above_it() -> None:
    state = press("down")  # b
    assert on_key(state, "down", ["new", "a", "b", "c"]).selected == "c"


def test_enter_opens_esc_goes_back_and_arrows_scroll_the_detail() -> None:
    state = press("down", "enter")
    assert (state.mode, state.selected) == ("detail", "b")
    state = press("down", "down", state=state)
    assert (state.scroll, state.selected) == (2, "b")
    back = press("esc", state=state)
    assert (back.mode, back.scroll, back.selected) == ("main", 0, "b")
    assert press("enter", ids=[]).mode == "main"  # nothing to open


def test_pause_interval_and_quit() -> None:
    assert press("p").paused and not press("p", "p").paused
    assert press("+").interval == 2.0 and press("-").interval == 0.5
    assert press(*"+" * 9).interval == INTERVALS[-1] == 5.0
    assert press(*"-" * 9).interval == INTERVALS[0] == 0.5
    assert press("q").quit and press("Q").quit


def test_subjects_help_and_filter() -> None:
    assert press("s").subjects and not press("s", "s").subjects
    assert press("?").mode == "help" and press("?", "?").mode == "main"
    assert press("?", "down").selected == "a"  # help swallows the arrows
    typed = press("/", *"miss", "backspace", "s")
    assert (typed.editing, typed.filter) == (True, "miss")
    # Keys are text while a filter is typed: q is a letter, not quit.
    assert press("/", "q").filter == "q" and not press("/", "q").quit
    kept = press("/", *"db", "enter")
    assert (kept.editing, kept.filter) == (False, "db")
    cleared = press("/", *"db", "esc")
    assert (cleared.editing, cleared.filter) == (False, "")
