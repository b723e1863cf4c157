"""A daemon's shard: which findings this daemon notifies when several daemons split a fleet.

Daemons split the fleet by their sources (each watches its own servers) and by `daemon.shard`
(each owns the subjects its `owns` matchers select). A finding whose subject another shard owns
is dropped before the alert book sees it, so this daemon neither pages nor counts it. A
fleet-wide finding (empty subject) belongs to the shards with `fleet: true`, relabelled
`{herdwatch_shard: <name>}` so that two shards' fleet-wide herds stay two alerts downstream
(Alertmanager dedups by labels).
"""

from __future__ import annotations

import dataclasses

from herdwatch.alert import Matcher, parse_matcher
from herdwatch.config import ShardConfig
from herdwatch.engine.snapshot import Snapshot, TrackedFinding
from herdwatch.model import Labels

__all__ = ["SHARD_LABEL", "Shard"]

#: the subject label a shard puts on the fleet-wide findings it owns
SHARD_LABEL = "herdwatch_shard"


class Shard:
    """`claim(snap)`: the Snapshot with only the findings this shard owns, fleet-wide ones
    relabelled; `not_owned` counts the last Snapshot's findings left to other shards."""

    def __init__(self, cfg: ShardConfig) -> None:
        self.cfg = cfg
        self.owns: tuple[Matcher, ...] | None = (
            None if cfg.owns is None else tuple(parse_matcher(m) for m in cfg.owns)
        )
        self.not_owned = 0

    def subject(self, subject: Labels) -> Labels | None:
        """The subject under which this shard notifies a finding on `subject`; None when the
        finding is another shard's."""
        if not subject:
            return ((SHARD_LABEL, self.cfg.name),) if self.cfg.fleet else None
        if self.owns is None:
            return subject
        labels = dict(subject)
        return subject if any(m.matches(labels) for m in self.owns) else None

    def claim(self, snap: Snapshot) -> Snapshot:
        kept: list[TrackedFinding] = []
        for tf in snap.findings:
            subject = self.subject(tf.subject)
            if subject is None:
                continue
            if subject != tf.subject:
                tf = dataclasses.replace(
                    tf, finding=dataclasses.replace(tf.finding, subject=subject)
                )
            kept.append(tf)
        self.not_owned = len(snap.findings) - len(kept)
        if self.not_owned == 0 and all(a is b for a, b in zip(kept, snap.findings, strict=True)):
            return snap
        return dataclasses.replace(snap, findings=tuple(kept))
