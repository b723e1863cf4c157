"""End to end: the real `herdwatch top` in a tmux pane on the replayed stampede.

The finding appears, enter shows its recommendations, q (and Ctrl-C) leave the terminal as
they found it, and an 80x24 pane shows no wrapped row (capture-pane -J joins wrapped rows).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import ROOT, STAMPEDE

# `make test` installs tmux (Makefile APT_PACKAGES): a missing tmux fails here, never skips
assert shutil.which("tmux"), "tmux is not installed: run make test (it installs it)"


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True,
                          timeout=10).stdout  # fmt: skip


class Pane:
    def __init__(self, name: str, out: Path) -> None:
        self.name, self.out = name, out

    def capture(self, *flags: str) -> list[str]:
        return _tmux("capture-pane", "-p", *flags, "-t", self.name).split("\n")[:-1]

    def keys(self, *keys: str) -> None:
        _tmux("send-keys", "-t", self.name, *keys)

    def wait(self, ok: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} within {timeout:g}s; the pane shows:\n" +
                            "\n".join(self.capture()))  # fmt: skip
            time.sleep(0.2)

    def shows(self, text: str) -> bool:
        return any(text in line for line in self.capture())

    def flag(self, name: str) -> str:
        return _tmux("display-message", "-p", "-t", self.name, f"#{{{name}}}").strip()


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    """An 80x24 tmux pane running top on the stampede; the shell around it records the exit
    code and the terminal modes before and after."""
    name = f"hwtop-{uuid.uuid4().hex[:8]}"
    top = [sys.executable, "-m", "herdwatch", "top", "--replay", str(STAMPEDE),
           "--speed", "300", "--interval", "0.5"]  # fmt: skip
    script = (
        f"cd {shlex.quote(str(ROOT))}; stty -g > {tmp_path}/before; {shlex.join(top)}; "
        f"echo $? > {tmp_path}/exit; stty -g > {tmp_path}/after.tmp; "
        # renamed once written: the test reads it as soon as it exists
        f"mv {tmp_path}/after.tmp {tmp_path}/after; sleep 60"
    )
    env = {**os.environ, "TERM": "xterm-256color"}
    subprocess.run(["tmux", "-f", "/dev/null", "new-session", "-d", "-s", name, "-x", "80",
                    "-y", "24", script], check=True, env=env, timeout=10)  # fmt: skip
    try:
        yield Pane(name, tmp_path)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, timeout=10)


def _exited(pane: Pane) -> bool:
    return (pane.out / "after").exists()


def test_top_shows_the_stampede_its_fix_and_restores_the_terminal(pane: Pane) -> None:
    pane.wait(lambda: pane.shows("cache_stampede"), "the finding on screen")
    assert pane.flag("alternate_on") == "1"
    plain, joined = pane.capture(), pane.capture("-J")
    assert len(plain) == 24 and len(joined) == 24, "a row wrapped"
    assert max(len(line) for line in joined) <= 80
    assert any(line.startswith("▶ CRIT cache_stampede") for line in plain)
    pane.keys("Enter")
    pane.wait(lambda: pane.shows("Recommendations"), "the detail view")
    pane.wait(lambda: pane.shows("$ herdwatch mitigate client"), "the mitigate command")
    assert len(pane.capture("-J")) == 24
    pane.keys("Escape")
    pane.wait(lambda: pane.shows("findings:"), "the main screen again")
    pane.keys("q")
    pane.wait(lambda: _exited(pane), "exit after q", timeout=15)
    assert (pane.out / "exit").read_text().strip() == "0"
    assert (pane.out / "before").read_text() == (pane.out / "after").read_text()
    assert pane.flag("alternate_on") == "0" and pane.flag("cursor_flag") == "1"


def test_ctrl_c_restores_the_terminal_too(pane: Pane) -> None:
    pane.wait(lambda: pane.shows("herdwatch top"), "the screen")
    pane.keys("C-c")
    pane.wait(lambda: _exited(pane), "exit after Ctrl-C", timeout=15)
    assert (pane.out / "exit").read_text().strip() == "130"
    assert (pane.out / "before").read_text() == (pane.out / "after").read_text()
    assert pane.flag("alternate_on") == "0" and pane.flag("cursor_flag") == "1"
    assert any("herdwatch: interrupted" in line for line in pane.capture())
