"""What the operator chose on the screen, and how each key changes it (pure, no I/O).

`ViewState` is plain data; `on_key(state, key, ids)` returns the next one. The loop (ui.py)
acts on the fields it owns (quit, paused, interval); the views (views.py) read the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = ["INTERVALS", "MODES", "ViewState", "on_key"]

#: the refresh intervals `+` and `-` step through, in seconds
INTERVALS = (0.5, 1.0, 2.0, 3.0, 5.0)
#: main: signals and findings; detail: the selected finding; help: the keys
MODES = ("main", "detail", "help")


@dataclass(frozen=True, slots=True)
class ViewState:
    """The screen's state. `selected` is a finding id (kept across ticks, as the Watcher keeps
    ids), `filter` a case-insensitive substring of a signal's name or subject, `editing` true
    while it is typed, `scroll` the first line shown of the detail view."""

    mode: str = "main"
    selected: str | None = None
    subjects: bool = False
    filter: str = ""
    editing: bool = False
    scroll: int = 0
    paused: bool = False
    interval: float = 1.0
    quit: bool = False

    def index(self, ids: Sequence[str]) -> int:
        """Where the selection is among `ids` (the findings as listed), 0 when it is gone."""
        return ids.index(self.selected) if self.selected in ids else 0


def _step_interval(current: float, up: bool) -> float:
    if up:
        return next((i for i in INTERVALS if i > current), INTERVALS[-1])
    return next((i for i in reversed(INTERVALS) if i < current), INTERVALS[0])


def _edit_filter(state: ViewState, key: str) -> ViewState:
    if key == "enter":
        return replace(state, editing=False)
    if key == "esc":
        return replace(state, editing=False, filter="")
    if key == "backspace":
        return replace(state, filter=state.filter[:-1])
    if len(key) == 1 and key.isprintable():
        return replace(state, filter=state.filter + key)
    return state


def _move(state: ViewState, ids: Sequence[str], delta: int) -> ViewState:
    if state.mode == "detail":
        return replace(state, scroll=max(0, state.scroll + delta))
    if not ids:
        return state
    i = min(max(state.index(ids) + delta, 0), len(ids) - 1)
    return replace(state, selected=ids[i])


def on_key(state: ViewState, key: str, ids: Sequence[str]) -> ViewState:
    """The state after `key` (a character, or up/down/pgup/pgdn/home/end/enter/esc/backspace);
    `ids` are the finding ids in the order the findings panel lists them."""
    if state.editing:
        return _edit_filter(state, key)
    if state.selected not in ids and ids:
        state = replace(state, selected=ids[0])
    if key in ("q", "Q"):
        return replace(state, quit=True)
    if key == "p":
        return replace(state, paused=not state.paused)
    if key in ("+", "="):
        return replace(state, interval=_step_interval(state.interval, up=True))
    if key in ("-", "_"):
        return replace(state, interval=_step_interval(state.interval, up=False))
    if key == "?":
        return replace(state, mode="main" if state.mode == "help" else "help")
    if key == "esc":
        return replace(state, mode="main", scroll=0)
    if state.mode == "help":
        return state
    moves = {"up": -1, "down": 1, "pgup": -10, "pgdn": 10, "home": -10_000, "end": 10_000}
    if key in moves:
        return _move(state, ids, moves[key])
    if key == "enter" and state.mode == "main" and ids:
        return replace(state, mode="detail", scroll=0)
    if key == "s":
        return replace(state, subjects=not state.subjects)
    if key == "/" and state.mode == "main":
        return replace(state, editing=True, filter="")
    return state
