"""The durable outbox: every notification is written here (SQLite, WAL) before a notifier sees it.

One row per (idempotency key, notifier), inserted once (`INSERT OR IGNORE`): the same herd seen
again after a restart adds nothing. A row is `queued` until its notifier accepts it (`sent`);
each failure waits with decorrelated jitter, `wait = min(cap, uniform(base, 3 * previous))`,
and a row still undelivered `dead_after` seconds after it was queued is `dead` (kept, listed
by `herdwatch outbox list`, counted in /metrics). `superseded` marks a queued row that a newer
one for the same group and notifier makes pointless (an Alertmanager keep-alive behind a newer
one). Delivery is at-least-once: a daemon killed after the notifier accepted a message but
before the row says so sends it again on restart, with the same key.

Silences live in the same file, and so does the alert book's state. Each call is one short
local transaction (synchronous, WAL, `synchronous=NORMAL`: well under a millisecond), so the
daemon calls it from the event loop directly.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herdwatch.alert._book import Matcher, Notification, Silence, parse_matcher

__all__ = ["STATES", "Outbox", "OutboxRow"]

#: a row's life: queued -> sent, or queued -> dead (too old), or queued -> superseded
STATES = ("queued", "sent", "dead", "superseded")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT NOT NULL, notifier TEXT NOT NULL, kind TEXT NOT NULL, grp TEXT NOT NULL,
    payload TEXT NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL, backoff REAL NOT NULL DEFAULT 0, state TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '', delivered REAL, seq INTEGER NOT NULL,
    PRIMARY KEY (key, notifier));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts REAL NOT NULL, ends REAL NOT NULL,
    comment TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification for one notifier, as stored."""

    key: str
    notifier: str
    kind: str
    group: str
    notification: Notification
    created: float
    attempts: int
    next_attempt: float
    backoff: float
    state: str
    last_error: str
    delivered: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "notifier": self.notifier,
            "kind": self.kind,
            "state": self.state,
            "title": self.notification.title,
            "created": round(self.created, 3),
            "attempts": self.attempts,
            "next_attempt": round(self.next_attempt, 3),
            "last_error": self.last_error,
            "delivered": None if self.delivered is None else round(self.delivered, 3),
        }


_COLUMNS = "key, notifier, kind, grp, payload, created, attempts, next_attempt, backoff, state, "
_COLUMNS += "last_error, delivered"


def _row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(r[0], r[1], r[2], r[3], Notification.from_json(json.loads(r[4])), *r[5:])


class Outbox:
    """The outbox at `path` (created with its directory when missing). `clock` gives wall time
    (delivery is real even when the data is replayed); `rng` draws the jitter."""

    def __init__(
        self,
        path: Path | str,
        *,
        dead_after: float = 3600.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dead_after = dead_after
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.clock = clock
        self.rng = rng or random.Random()
        self._db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # notifications

    def enqueue(
        self, n: Notification, notifiers: Iterable[str], *, coalesce: Iterable[str] = ()
    ) -> int:
        """Store `n` once for each notifier (a key already stored is left alone); for the
        notifiers in `coalesce`, older queued rows of the same group become `superseded`.
        Returns how many rows were added."""
        now = self.clock()
        payload = json.dumps(n.to_json(), allow_nan=False)
        merged = set(coalesce)
        added = 0
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox").fetchone()[0]
            for name in notifiers:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (key, notifier, kind, grp, payload, created, "
                    "next_attempt, state, seq) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                    (n.key, name, n.kind, n.group, payload, now, now, seq),
                )
                if cur.rowcount and name in merged:
                    self._db.execute(
                        "UPDATE outbox SET state = 'superseded' WHERE notifier = ? AND grp = ? "
                        "AND state = 'queued' AND seq < ?",
                        (name, n.group, seq),
                    )
                added += cur.rowcount
        return added

    def due(self, limit: int = 100, *, notifier: str | None = None) -> list[OutboxRow]:
        """Queued rows whose next attempt is due (for one notifier, or all), oldest first; a row
        waits while an older one of its group for its notifier is queued (a resolve never
        overtakes its firing)."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox AS o WHERE state = 'queued' AND next_attempt <= ? "
            "AND (? IS NULL OR notifier = ?) AND NOT EXISTS (SELECT 1 FROM outbox AS p "
            "WHERE p.notifier = o.notifier AND p.grp = o.grp AND p.state = 'queued' "
            "AND p.seq < o.seq) ORDER BY seq LIMIT ?",
            (self.clock(), notifier, notifier, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def next_due(self, *, notifier: str | None = None) -> float | None:
        """When the earliest queued row (of one notifier, or any) is due; None: none queued."""
        row = self._db.execute(
            "SELECT MIN(next_attempt) FROM outbox WHERE state = 'queued' "
            "AND (? IS NULL OR notifier = ?)",
            (notifier, notifier),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def supersede(self, row: OutboxRow, why: str) -> None:
        """Take a queued row out of delivery without sending it (another sender has it)."""
        self._db.execute(
            "UPDATE outbox SET state = 'superseded', last_error = ? "
            "WHERE key = ? AND notifier = ? AND state = 'queued'",
            (why, row.key, row.notifier),
        )

    def delivered(self, row: OutboxRow) -> None:
        self._db.execute(
            "UPDATE outbox SET state = 'sent', delivered = ?, attempts = attempts + 1 "
            "WHERE key = ? AND notifier = ? AND state = 'queued'",
            (self.clock(), row.key, row.notifier),
        )

    def failed(self, row: OutboxRow, error: str, *, retry: bool = True) -> str:
        """Record a failed attempt; the row's new state (`queued` with a later attempt, or
        `dead` when it is older than `dead_after` or the notifier refused it for good)."""
        now = self.clock()
        wait = min(
            self.backoff_cap,
            self.rng.uniform(self.backoff_base, max(self.backoff_base, 3 * row.backoff)),
        )
        state = "queued" if retry and now + wait - row.created < self.dead_after else "dead"
        self._db.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, next_attempt = ?, "
            "backoff = ?, last_error = ? WHERE key = ? AND notifier = ? AND state = 'queued'",
            (state, now + wait, wait, error[:500], row.key, row.notifier),
        )
        return state

    def rows(self, states: Iterable[str] = STATES, limit: int = 1000) -> list[OutboxRow]:
        """Rows in the given states, newest first."""
        wanted = list(states)
        marks = ",".join("?" * len(wanted))
        found = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE state IN ({marks}) ORDER BY seq DESC LIMIT ?",
            (*wanted, limit),
        ).fetchall()
        return [_row(r) for r in found]

    def counts(self) -> dict[tuple[str, str], int]:
        """(notifier, state) -> rows."""
        found = self._db.execute(
            "SELECT notifier, state, COUNT(*) FROM outbox GROUP BY notifier, state"
        ).fetchall()
        return {(n, s): c for n, s, c in found}

    def depth(self) -> int:
        """Queued rows (waiting for a notifier)."""
        return int(
            self._db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'queued'").fetchone()[0]
        )

    def oldest_age(self) -> float:
        """Seconds since the oldest queued row was stored (0 when none is queued)."""
        row = self._db.execute("SELECT MIN(created) FROM outbox WHERE state = 'queued'").fetchone()
        return 0.0 if row[0] is None else max(0.0, self.clock() - float(row[0]))

    def prune(self, older_than: float) -> int:
        """Delete sent and superseded rows delivered or stored before `older_than`."""
        cur = self._db.execute(
            "DELETE FROM outbox WHERE state IN ('sent', 'superseded') AND created < ?",
            (older_than,),
        )
        return cur.rowcount

    # silences

    def add_silence(
        self,
        matchers: Sequence[Matcher | str],
        *,
        duration: float,
        comment: str = "",
        created_by: str = "",
    ) -> Silence:
        """A new silence from now for `duration` seconds."""
        parsed = tuple(m if isinstance(m, Matcher) else parse_matcher(m) for m in matchers)
        if not parsed:
            raise ValueError("a silence needs at least one matcher")
        now = self.clock()
        s = Silence(uuid.uuid4().hex[:12], parsed, now, now + duration, comment, created_by)
        self._db.execute(
            "INSERT INTO silences (id, matchers, starts, ends, comment, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                s.id,
                json.dumps([[m.name, m.op, m.value] for m in parsed]),
                s.starts,
                s.ends,
                comment,
                created_by,
            ),
        )
        return s

    def silences(self, *, include_expired: bool = False) -> list[Silence]:
        """Silences that are active (or all of them), newest first."""
        found = self._db.execute(
            "SELECT id, matchers, starts, ends, comment, created_by FROM silences "
            "WHERE ? OR ends > ? ORDER BY starts DESC",
            (include_expired, self.clock()),
        ).fetchall()
        return [
            Silence(i, tuple(Matcher(*m) for m in json.loads(ms)), a, b, c, by)
            for i, ms, a, b, c, by in found
        ]

    def expire_silence(self, silence_id: str) -> bool:
        """End the silence whose id starts with `silence_id` now; False when none matches."""
        cur = self._db.execute(
            "UPDATE silences SET ends = ? WHERE id LIKE ? AND ends > ?",
            (self.clock(), silence_id + "%", self.clock()),
        )
        return cur.rowcount > 0

    # the alert book's state

    def save_state(self, name: str, value: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO state (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value)),
        )

    def load_state(self, name: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
