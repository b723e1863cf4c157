"""The alert book, pure: lifecycle, dedup, for:, grouping, re-notify, silences, restore."""

from __future__ import annotations

from herdwatch.alert import AlertBook, AlertPolicy, parse_matcher
from tests.alert.support import finding, snap, tracked


def kinds(notes: list) -> list[tuple[str, str]]:
    return [(n.kind, n.key) for n in notes]


def test_fires_once_while_active_and_resolves_once() -> None:
    book = AlertBook()
    f = tracked(finding())
    first = book.update(snap(1001, f))
    assert kinds(first) == [("firing", "cache_stampede-1000/firing")]
    assert first[0].title == "[FIRING] cache_stampede instance=redis-1:9121"
    assert first[0].alerts[0]["timeline"], "the chart's samples ride along"
    for t in range(1002, 1010):
        assert book.update(snap(t, f)) == []
    done = book.update(snap(1011, tracked(finding(), "resolved")))
    assert kinds(done) == [("resolved", "cache_stampede-1000/resolved")]
    assert done[0].title.startswith("[RESOLVED] cache_stampede")
    assert book.update(snap(1012, tracked(finding(), "resolved"))) == []
    assert not book.open


def test_a_new_finding_of_the_same_key_while_firing_is_the_same_alert() -> None:
    book = AlertBook()
    assert len(book.update(snap(1001, tracked(finding())))) == 1
    other = tracked(finding(onset=1005.0), fid="cache_stampede-other")
    assert book.update(snap(1006, tracked(finding(), "resolved"), other)) == []
    assert book.firing == ["cache_stampede{instance=redis-1:9121}"]


def test_for_holds_the_alert_pending() -> None:
    book = AlertBook(AlertPolicy(hold={"cache_stampede": 5.0}))
    f = tracked(finding())
    assert book.update(snap(1001, f)) == []
    assert book.states() == {"pending": 1, "firing": 0}
    assert book.update(snap(1005, f)) == []
    assert kinds(book.update(snap(1006, f)))[0][0] == "firing"


def test_a_pending_alert_that_ends_never_pages() -> None:
    book = AlertBook(AlertPolicy(hold={"cache_stampede": 60.0}))
    assert book.update(snap(1001, tracked(finding()))) == []
    assert book.update(snap(1003, tracked(finding(), "withdrawn"))) == []
    assert book.update(snap(1100)) == []
    assert not book.open


def test_findings_sharing_an_onset_are_one_notification() -> None:
    book = AlertBook(AlertPolicy(group_window=5.0))
    shard = tracked(finding())
    fleet = tracked(finding(onset=1002.0, subject=()), fid="fleet")
    notes = book.update(snap(1003, shard, fleet))
    assert len(notes) == 1 and len(notes[0].alerts) == 2
    assert notes[0].title.endswith("(+1 more)")
    # one member over: the group still fires; both over: one resolve
    assert book.update(snap(1004, tracked(finding(), "resolved"), fleet)) == []
    fleet_done = tracked(finding(onset=1002.0, subject=()), "resolved", fid="fleet")
    assert [n.kind for n in book.update(snap(1005, fleet_done))] == ["resolved"]


def test_renotify_and_heartbeat_keys_are_numbered() -> None:
    book = AlertBook(AlertPolicy(renotify=100.0, heartbeat=30.0))
    f = tracked(finding())
    book.update(snap(1001, f))
    got = [n.key for t in range(1002, 1102) for n in book.update(snap(t, f))]
    assert got == [
        "cache_stampede-1000/heartbeat/1",
        "cache_stampede-1000/heartbeat/2",
        "cache_stampede-1000/heartbeat/3",
        "cache_stampede-1000/renotify/1",
    ]


def test_silence_holds_back_until_it_ends() -> None:
    book = AlertBook()
    m = parse_matcher("instance=~redis-.*")
    f = tracked(finding())
    assert book.update(snap(1001, f), silenced=m.matches) == []
    assert book.states()["firing"] == 1
    assert [n.kind for n in book.update(snap(1002, f))] == ["firing"]


def test_a_silenced_herd_that_ends_says_nothing() -> None:
    book = AlertBook()
    book.update(snap(1001, tracked(finding())), silenced=lambda labels: True)
    assert book.update(snap(1002, tracked(finding(), "resolved"))) == []


def test_final_resolves_everything() -> None:
    book = AlertBook()
    book.update(snap(1001, tracked(finding())))
    assert [n.kind for n in book.update(snap(1002, tracked(finding())), final=True)] == ["resolved"]


def test_restored_state_does_not_page_again() -> None:
    book = AlertBook()
    f = tracked(finding())
    book.update(snap(1001, f))
    again = AlertBook()
    again.restore(book.to_json())
    assert again.update(snap(1002, f)) == []
    assert [n.kind for n in again.update(snap(1003, tracked(finding(), "resolved")))] == [
        "resolved"
    ]


def test_matchers() -> None:
    labels = {"alertname": "cache_stampede", "instance": "redis-3:9121", "severity": "critical"}
    assert parse_matcher("signature=cache_stampede").matches(labels)
    assert parse_matcher("instance!=redis-4:9121").matches(labels)
    assert not parse_matcher("instance!~'redis-.*'").matches(labels)
    assert parse_matcher("severity=~crit.*").matches(labels)
