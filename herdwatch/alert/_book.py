"""The alert book: a pure state machine fed by Snapshots that says which notifications to send.

    pending   an active finding seen, not yet held for its rule's `for:` (alerts.for)
    firing    held long enough: its group is notified once (then again every `renotify`)
    resolved  its finding ended, was withdrawn, or left the Snapshot (or the replay ended)

One alert per dedup key, signature + subject: a finding that the Watcher follows under one id,
or a new finding of the same herd on the same subject while the alert fires, pages once.
Alerts whose onsets lie within `group_window` of a group's onset join that group and share its
notifications (a fleet-wide finding and its per-shard twin are one mail). A group resolves, and
says so once, when all its members have resolved. Silences hold back a group whose members all
match one; when the silence ends while it still fires, it is sent then.

No I/O and no clock: `update(snapshot)` uses the Snapshot's time, so a replay behaves exactly as
the live daemon. Each Notification carries an idempotency key built from the group's first
finding id (itself a hash of signature, subject and onset), so a restart that sees the same herd
again produces the same key, and the outbox delivers it once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from herdwatch.config import split_matcher
from herdwatch.engine.snapshot import SignalView, Snapshot, TrackedFinding

__all__ = [
    "KINDS",
    "AlertBook",
    "AlertPolicy",
    "Matcher",
    "Notification",
    "Silence",
    "alert_key",
    "alert_labels",
    "parse_matcher",
    "plain",
]

#: what a notification says: a group started firing, is still firing (re-notify), is over, or
#: a keep-alive for receivers that forget an alert they stop hearing about (Alertmanager)
KINDS = ("firing", "renotify", "resolved", "heartbeat")
#: seconds of signal history drawn around the onset in a notification's chart
CHART_BEFORE = 180.0
CHART_AFTER = 180.0
CHART_POINTS = 160


def plain(value: Any) -> Any:
    """`value` as strict JSON data: NaN and infinities become None, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return plain(value.item())
    return value


def alert_key(signature: str, subject: Iterable[tuple[str, str]]) -> str:
    """The dedup key: `cache_stampede{instance=redis-3:9121}` (`cache_stampede{}` fleet-wide)."""
    return signature + "{" + ",".join(f"{k}={v}" for k, v in subject) + "}"


def alert_labels(alert: Mapping[str, Any]) -> dict[str, str]:
    """The labels silences match and Alertmanager groups by: alertname (= signature), severity
    and the subject's labels."""
    return {
        "alertname": alert["signature"],
        "severity": alert["severity"],
        **{str(k): str(v) for k, v in alert["subject"].items()},
    }


@dataclass(frozen=True, slots=True)
class Matcher:
    """`name op value` with op `=`, `!=`, `=~`, `!~` (regular expressions match the whole
    value, as in Alertmanager). `signature` is another name for `alertname`."""

    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    """`alertname=cache_stampede`, `instance=~redis-.*`, ...; ValueError when malformed."""
    name, op, value = split_matcher(text)
    return Matcher("alertname" if name == "signature" else name, op, value)


@dataclass(frozen=True, slots=True)
class Silence:
    """Holds back notifications of alerts matching every matcher, from `starts` to `ends`."""

    id: str
    matchers: tuple[Matcher, ...]
    starts: float
    ends: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """`hold`: each signature's `for:` in seconds; `heartbeat`: seconds between keep-alives of
    a firing group (None: none)."""

    hold: Mapping[str, float] = field(default_factory=dict)
    renotify: float = 4 * 3600.0
    group_window: float = 30.0
    heartbeat: float | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about one group. `key` is the idempotency key (the same herd, kind and
    sequence number always give the same key); `alerts` are JSON-ready: each finding's fields,
    its id, state, labels and a `timeline` of its signals around the onset."""

    key: str
    kind: str
    group: str
    at: float
    alerts: tuple[dict[str, Any], ...]

    @property
    def title(self) -> str:
        """`[FIRING] cache_stampede instance=redis-3:9121` (+N more), as Alertmanager's mails."""
        head = "[RESOLVED]" if self.kind == "resolved" else "[FIRING]"
        first = self.alerts[0]
        subject = " ".join(f"{k}={v}" for k, v in first["subject"].items()) or "fleet-wide"
        more = f" (+{len(self.alerts) - 1} more)" if len(self.alerts) > 1 else ""
        return f"{head} {first['signature']} {subject}{more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "group": self.group,
            "at": self.at,
            "alerts": list(self.alerts),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Notification:
        return cls(d["key"], d["kind"], d["group"], float(d["at"]), tuple(d["alerts"]))


@dataclass(slots=True)
class _Alert:
    key: str
    finding_id: str
    state: str
    since: float
    onset: float
    group: str
    data: dict[str, Any]
    resolved_at: float | None = None


@dataclass(slots=True)
class _Group:
    id: str
    onset: float
    members: list[str]
    notified: bool = False
    last_sent: float = -math.inf
    last_beat: float = -math.inf
    renotified: int = 0
    beats: int = 0
    resolved: bool = False


def _timeline(tf: TrackedFinding, views: Sequence[SignalView]) -> list[dict[str, Any]]:
    """The finding's signals around its onset (its subject's views, else the fleet's),
    thinned to CHART_POINTS samples each."""
    f = tf.finding
    wanted = set(f.signals)
    own = [v for v in views if v.subject == f.subject and v.name in wanted]
    names = {v.name for v in own}
    fleet = [v for v in views if v.subject == () and v.name in wanted and v.name not in names]
    out = []
    for v in own + fleet:
        keep = (v.t >= f.onset - CHART_BEFORE) & (v.t <= f.onset + CHART_AFTER)
        t, y = v.t[keep], v.v[keep]
        if len(t) > CHART_POINTS:
            idx = np.linspace(0, len(t) - 1, CHART_POINTS).round().astype(int)
            t, y = t[idx], y[idx]
        if len(t):
            out.append(
                {
                    "name": v.name,
                    "t": [round(float(x), 3) for x in t],
                    "v": [plain(float(x)) for x in y],
                }
            )
    return out


def _alert_data(tf: TrackedFinding, views: Sequence[SignalView]) -> dict[str, Any]:
    d = plain(tf.finding.to_json())
    d["id"] = tf.id
    d["signals"] = list(tf.finding.signals)
    d["timeline"] = _timeline(tf, views)
    return dict(d)


def _never(labels: Mapping[str, str]) -> bool:
    return False


class AlertBook:
    """Alerts by dedup key and their groups; `update(snapshot)` returns what to send."""

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self._alerts: dict[str, _Alert] = {}
        self._groups: dict[str, _Group] = {}
        # finding ids whose alert has resolved: the same finding seen active again is the same
        # herd flapping at the edge of the data, not a new page
        self._done: dict[str, float] = {}

    @property
    def firing(self) -> list[str]:
        """Dedup keys of the alerts firing now."""
        return [a.key for a in self._alerts.values() if a.state == "firing"]

    @property
    def open(self) -> bool:
        """True while any alert is pending or firing."""
        return any(a.state in ("pending", "firing") for a in self._alerts.values())

    def states(self) -> dict[str, int]:
        """How many alerts are in each state (for /metrics)."""
        out = {"pending": 0, "firing": 0}
        for a in self._alerts.values():
            if a.state in out:
                out[a.state] += 1
        return out

    def update(
        self,
        snap: Snapshot,
        *,
        silenced: Callable[[Mapping[str, str]], bool] = _never,
        final: bool = False,
    ) -> list[Notification]:
        """Feed one Snapshot; the notifications it calls for, in order. With `final` (the
        recording is over, the daemon stops watching) every alert resolves."""
        now = snap.at
        self._observe(snap, now)
        if final:
            for a in list(self._alerts.values()):
                if a.state == "pending":
                    del self._alerts[a.key]
                elif a.state == "firing":
                    self._resolve(a, now)
        self._promote(now)
        return self._notifications(now, silenced)

    def _observe(self, snap: Snapshot, now: float) -> None:
        by_key: dict[str, list[TrackedFinding]] = {}
        for tf in snap.findings:
            by_key.setdefault(alert_key(tf.signature, tf.subject), []).append(tf)
        for key, tfs in by_key.items():
            a = self._alerts.get(key)
            active = [t for t in tfs if t.state == "active" and t.id not in self._done]
            if active:
                tf = max(active, key=lambda t: t.finding.onset)
                if a is None or a.state == "resolved":
                    self._alerts[key] = _Alert(
                        key,
                        tf.id,
                        "pending",
                        now,
                        tf.finding.onset,
                        tf.id,
                        _alert_data(tf, snap.signals),
                    )
                elif a.finding_id == tf.id or a.state == "firing":
                    # the same herd (or a new finding of it while firing): refresh, keep one alert
                    keep_timeline = a.data.get("timeline")
                    a.data = _alert_data(tf, snap.signals)
                    if a.state == "firing" and keep_timeline:
                        a.data["timeline"] = keep_timeline  # the chart shows the onset
                    a.finding_id = tf.id
                continue
            if a is None or a.state == "resolved":
                continue
            mine = [t for t in tfs if t.id == a.finding_id]
            if (mine and mine[0].state in ("resolved", "withdrawn")) or not mine:
                self._end(a, now, mine[0] if mine else None, snap)
        for a in list(self._alerts.values()):
            if a.state != "resolved" and a.key not in by_key:
                self._end(a, now, None, snap)  # no longer in the Snapshot at all

    def _end(self, a: _Alert, now: float, tf: TrackedFinding | None, snap: Snapshot) -> None:
        if a.state == "pending":
            del self._alerts[a.key]  # never held long enough to page
            return
        if tf is not None:
            timeline = a.data.get("timeline")
            a.data = _alert_data(tf, snap.signals)
            a.data["timeline"] = timeline or a.data["timeline"]
        self._resolve(a, now)

    def _resolve(self, a: _Alert, now: float) -> None:
        a.state = "resolved"
        a.resolved_at = now
        a.data["state"] = "resolved"
        a.data["resolved_at"] = now
        self._done[a.finding_id] = now

    def _promote(self, now: float) -> None:
        """Pending alerts held long enough start firing and join (or start) a group."""
        ready = [
            a
            for a in self._alerts.values()
            if a.state == "pending"
            and now - a.since >= self.policy.hold.get(a.key.split("{")[0], 0.0)
        ]
        for a in sorted(ready, key=lambda x: (x.onset, x.key)):
            a.state = "firing"
            a.data["state"] = "firing"
            group = next(
                (
                    g
                    for g in self._groups.values()
                    if not g.resolved and abs(g.onset - a.onset) <= self.policy.group_window
                ),
                None,
            )
            if group is None:
                gid = a.finding_id
                n = 1
                while gid in self._groups:  # the same finding firing again after a resolve
                    n += 1
                    gid = f"{a.finding_id}.{n}"
                group = self._groups[gid] = _Group(gid, a.onset, [])
            group.members.append(a.key)
            a.group = group.id

    def _members(self, g: _Group) -> list[_Alert]:
        return [a for k in g.members if (a := self._alerts.get(k)) is not None and a.group == g.id]

    def _notifications(
        self, now: float, silenced: Callable[[Mapping[str, str]], bool]
    ) -> list[Notification]:
        out: list[Notification] = []
        for g in list(self._groups.values()):
            members = self._members(g)
            quiet = bool(members) and all(silenced(alert_labels(a.data)) for a in members)
            payload = tuple(dict(a.data) for a in members)
            if members and all(a.state == "resolved" for a in members):
                g.resolved = True
                if g.notified:
                    out.append(Notification(f"{g.id}/resolved", "resolved", g.id, now, payload))
                del self._groups[g.id]
                for a in members:
                    self._alerts.pop(a.key, None)
                continue
            if not members:
                del self._groups[g.id]
                continue
            if quiet:
                continue
            if not g.notified:
                g.notified, g.last_sent, g.last_beat = True, now, now
                out.append(Notification(f"{g.id}/firing", "firing", g.id, now, payload))
            elif now - g.last_sent >= self.policy.renotify:
                g.renotified += 1
                g.last_sent = g.last_beat = now
                key = f"{g.id}/renotify/{g.renotified}"
                out.append(Notification(key, "renotify", g.id, now, payload))
            elif self.policy.heartbeat is not None and now - g.last_beat >= self.policy.heartbeat:
                g.beats += 1
                g.last_beat = now
                key = f"{g.id}/heartbeat/{g.beats}"
                out.append(Notification(key, "heartbeat", g.id, now, payload))
        return out

    def to_json(self) -> dict[str, Any]:
        """The book's state, to survive a restart (the outbox stores it)."""
        return {
            "alerts": [asdict(a) for a in self._alerts.values()],
            "groups": [asdict(g) for g in self._groups.values()],
            "done": self._done,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a state written by `to_json` (unknown or broken parts are dropped)."""
        self._alerts = {a["key"]: _Alert(**a) for a in state.get("alerts", [])}
        self._groups = {}
        for g in state.get("groups", []):
            g = dict(g)
            for k in ("last_sent", "last_beat"):
                g[k] = -math.inf if g.get(k) is None else g[k]
            self._groups[g["id"]] = _Group(**g)
        self._done = {str(k): float(v) for k, v in state.get("done", {}).items()}

    def forget(self, before: float) -> None:
        """Drop memory of resolved finding ids older than `before` (bounds the state)."""
        self._done = {k: v for k, v in self._done.items() if v >= before}
