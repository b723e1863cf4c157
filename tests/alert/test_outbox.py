"""The outbox: once per key and notifier across restarts, retries, dead letters, silences."""

from __future__ import annotations

import random
from pathlib import Path

from herdwatch.alert import AlertBook, Outbox
from tests.alert.support import finding, snap, tracked


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def note() -> object:
    return AlertBook().update(snap(1001, tracked(finding())))[0]


def test_a_key_is_stored_once_even_after_a_restart(tmp_path: Path) -> None:
    n = note()
    box = Outbox(tmp_path / "o.db")
    assert box.enqueue(n, ["smtp", "webhook"]) == 2  # type: ignore[arg-type]
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.enqueue(n, ["smtp", "webhook"]) == 0  # type: ignore[arg-type]
    assert again.depth() == 2


def test_retries_back_off_then_dead_letter(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", dead_after=30, clock=clock, rng=random.Random(1))
    box.enqueue(note(), ["smtp"])  # type: ignore[arg-type]
    waits = []
    state = "queued"
    while state == "queued":
        (row,) = box.due()
        state = box.failed(row, "connection refused")
        if state == "dead":
            break
        nxt = box.next_due()
        assert nxt is not None
        waits.append(nxt - clock.now)
        clock.now = nxt
    assert state == "dead" and box.depth() == 0
    assert all(w >= 1.0 for w in waits) and len(waits) >= 2
    assert box.rows(["dead"])[0].last_error == "connection refused"


def test_a_refusal_for_good_is_dead_at_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.enqueue(note(), ["webhook"])  # type: ignore[arg-type]
    assert box.failed(box.due()[0], "HTTP 400", retry=False) == "dead"


def test_silences(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", clock=clock)
    s = box.add_silence(["alertname=cache_stampede"], duration=60, comment="deploy")
    assert [x.id for x in box.silences()] == [s.id]
    assert s.matches({"alertname": "cache_stampede"})
    assert box.expire_silence(s.id[:6])
    assert box.silences() == [] and len(box.silences(include_expired=True)) == 1
