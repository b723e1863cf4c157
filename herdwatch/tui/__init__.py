"""`herdwatch top`: the operator's live screen, split as pg_activity splits its own.

data.py   the Feed: a Watcher driven on a clock (wall or replay); the only reader of sources
views.py  pure functions of a Snapshot and the ViewState -> the screen's lines
state.py  the ViewState and what each key does to it (pure)
ui.py     the loop: terminal modes, keys, resizes, frames
"""

from herdwatch.tui.data import Feed, PausableClock
from herdwatch.tui.state import ViewState, on_key
from herdwatch.tui.ui import Top, run_in_terminal
from herdwatch.tui.views import ReplayInfo, render_text, screen

__all__ = [
    "Feed",
    "PausableClock",
    "ReplayInfo",
    "Top",
    "ViewState",
    "on_key",
    "render_text",
    "run_in_terminal",
    "screen",
]
