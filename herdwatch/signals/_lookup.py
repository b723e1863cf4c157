"""What a derivation reads (`Lookup`) and returns (`Derived`), and where each input is looked up."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from herdwatch.errors import ConfigError
from herdwatch.model import LogEvent, RawData, Series, Signal
from herdwatch.sources.families import DEFAULT_FAMILIES, Selector, family_matches, parse_selector

#: every logical name a config `signals:` map may point elsewhere
LOGICAL_SIGNALS = frozenset(DEFAULT_FAMILIES) | {"error_logs"}


def selector_table(overrides: Mapping[str, str] | None) -> dict[str, list[Selector]]:
    """Logical input -> the selectors it is looked up under, first present wins: the defaults
    of `DEFAULT_FAMILIES`, or the one selector a config `signals:` entry names instead.

    Unknown logical names raise ConfigError naming the key; `error_logs` is accepted but has no
    selector (it comes from log lines).
    """
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in LOGICAL_SIGNALS:
            raise ConfigError(
                f"unknown signal (known: {', '.join(sorted(LOGICAL_SIGNALS))})",
                key=f"signals.{key}",
            )
    table = {name: [parse_cached(f) for f in fams] for name, fams in DEFAULT_FAMILIES.items()}
    for name, text in overrides.items():
        if name != "error_logs":
            table[name] = [parse_cached(text)]
    return table


#: parse_selector, each text parsed once per process (a Selector is immutable; a malformed
#: text raises every time, as exceptions are not cached)
parse_cached = functools.lru_cache(maxsize=1024)(parse_selector)


@dataclass(frozen=True, slots=True)
class Lookup:
    """Everything a derivation may read: the raw data, the selector table, the error events in
    time order, the data's window and the quantile latency signals are taken at."""

    raw: RawData
    selectors: Mapping[str, Sequence[Selector]]
    events: Sequence[LogEvent]
    window: tuple[float, float] | None
    quantile: float
    _by_name: dict[tuple[str, str], list[tuple[int, Series]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def pick(self, name: str) -> tuple[list[Series], str]:
        """The series of the first selector of logical input `name` that matches any, and that
        selector as text; ([], "") when none does."""
        for sel in self.selectors[name]:
            found = self._matching(sel)
            if found:
                return found, str(sel)
        return [], ""

    def _matching(self, sel: Selector) -> list[Series]:
        """The raw series `sel` matches, in raw order."""
        if sel.matchers:
            return [s for s in self.raw.series if sel.matches(s)]
        # Without label matchers a selector reads only a series' name and family: decided
        # once per (name, family) seen, not once per series (hundreds of series, a dozen names)
        if not self._by_name:
            for i, s in enumerate(self.raw.series):
                self._by_name.setdefault((s.name, s.family), []).append((i, s))
        hits = [
            members
            for members in self._by_name.values()
            if family_matches(sel.family, members[0][1])
        ]
        if len(hits) == 1:
            return [s for _, s in hits[0]]
        return [s for _, s in sorted((m for members in hits for m in members), key=_first)]


def _first(item: tuple[int, Series]) -> int:
    return item[0]


@dataclass(slots=True)
class Derived:
    """What one derivation adds to a SignalSet: whole-system signals and per-group views."""

    signals: dict[str, Signal] = field(default_factory=dict)
    groups: dict[str, dict[str, Signal]] = field(default_factory=dict)
