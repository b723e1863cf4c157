"""The registry of derivations, and what the engine asks of it before deriving anything.

`DERIVATIONS` lists, in the order `derive` runs them, one small function per logical signal
(or group of signals computed together), each with the logical inputs it reads and the signal
and group names it provides. From it:

* `derivations_for(names)`: the derivations `derive(..., only=names)` runs;
* `inputs_of(name)`: the logical inputs a signal is derived from;
* `families_for(name, overrides)`: the selectors, as text, those inputs are looked up under
  ("no miss_ratio signal (looked for redis_keyspace_hits_total, ...)");
* `selectors_for(name, overrides)`: the same as Selectors plus the companion families the
  derivation also reads, so a caller can hand `derive` just the series a signal needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from herdwatch.signals import _derivations as d
from herdwatch.signals._lookup import Derived, Lookup, selector_table
from herdwatch.signals._lookup import parse_cached as parse_selector
from herdwatch.sources.families import COMPANION_FAMILIES, DEFAULT_FAMILIES, Selector

__all__ = [
    "DERIVATIONS",
    "PASSTHROUGH",
    "SIGNAL_NAMES",
    "Derivation",
    "derivations_for",
    "families_for",
    "inputs_of",
    "provides",
    "selectors_for",
]


@dataclass(frozen=True, slots=True)
class Derivation:
    """One entry of the registry.

    `inputs` are logical inputs (keys of `DEFAULT_FAMILIES`, or `error_logs` for log events),
    `signals` the names it may put in `SignalSet.signals`, `groups` those it may put in
    `SignalSet.groups`; `run` reads only its inputs (and their companion families).
    """

    name: str
    inputs: tuple[str, ...]
    signals: tuple[str, ...]
    groups: tuple[str, ...]
    run: Callable[[Lookup], Derived]

    @property
    def names(self) -> frozenset[str]:
        """Every name `derive(only=...)` accepts for this derivation."""
        return frozenset(self.inputs) | frozenset(self.signals) | frozenset(self.groups)


def _entry(
    run: Callable[[Lookup], Derived],
    inputs: tuple[str, ...],
    signals: tuple[str, ...],
    groups: tuple[str, ...] = (),
) -> Derivation:
    return Derivation(run.__name__, inputs, signals, groups, run)


DERIVATIONS: tuple[Derivation, ...] = (
    _entry(d.error_logs, ("error_logs",), ("error_logs",)),
    _entry(
        d.cache,
        ("cache_hits", "cache_misses"),
        ("cache_hits", "cache_misses", "cache_requests", "miss_ratio"),
    ),
    _entry(d.requests, ("requests",), ("requests",)),
    _entry(d.context_switches, ("context_switches",), ("context_switches",)),
    _entry(d.db_latency_p99, ("db_latency",), ("db_latency_p99", "db_latency_p50")),
    _entry(d.upstream_latency_p99, ("upstream_latency",), ("upstream_latency_p99",)),
    _entry(d.db_connections, ("db_connections",), ("db_connections",), ("db_connections",)),
    _entry(
        d.db_connections_max,
        ("db_connections_max",),
        ("db_connections_max",),
        ("db_connections_max",),
    ),
    _entry(d.cpu, ("cpu_seconds",), ("cpu_system_share", "cpu_busy")),
    _entry(
        d.upstream_requests,
        ("upstream_requests",),
        ("upstream_requests",),
        ("upstream_requests",),
    ),
)

#: names that are no derivation's: carried into every SignalSet as read (a rule may need them)
PASSTHROUGH = frozenset({"key_expiry"})

_BY_NAME: dict[str, Derivation] = {n: entry for entry in DERIVATIONS for n in entry.names}

#: every name `derive(only=...)` and the functions below accept
SIGNAL_NAMES = frozenset(_BY_NAME) | PASSTHROUGH


def provides(name: str) -> Derivation | None:
    """The derivation that provides or reads signal `name`; None for a passthrough name
    (`key_expiry`). ValueError for a name no derivation knows."""
    if name in PASSTHROUGH:
        return None
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown signal {name!r} (known: {', '.join(sorted(SIGNAL_NAMES))})"
        ) from None


def derivations_for(names: Iterable[str] | None) -> tuple[Derivation, ...]:
    """The derivations, in registry order, that yield every signal in `names` (all of them for
    None; a lone string is one name). ValueError naming the first unknown name."""
    if names is None:
        return DERIVATIONS
    if isinstance(names, str):
        names = (names,)
    wanted = {provides(n) for n in names}
    return tuple(entry for entry in DERIVATIONS if entry in wanted)


def inputs_of(name: str) -> tuple[str, ...]:
    """The logical inputs signal `name` is derived from: `inputs_of("miss_ratio")` is
    `("cache_hits", "cache_misses")`; () for `key_expiry`."""
    entry = provides(name)
    return () if entry is None else entry.inputs


def families_for(name: str, overrides: Mapping[str, str] | None = None) -> list[str]:
    """The selectors, as text, that signal `name`'s inputs are looked up under, in lookup order:
    each input's defaults, or the one selector `overrides` (config `signals:`) names instead.

    `families_for("miss_ratio")` is `["redis_keyspace_hits_total",
    'herdcache_requests_total{result="hit"}', "redis_keyspace_misses_total",
    'herdcache_requests_total{result="miss"}']`. Log-derived signals (`error_logs`) and
    `key_expiry` are looked up under no family: []. ConfigError for an unknown override key.
    """
    table = selector_table(overrides)
    return [str(sel) for i in inputs_of(name) for sel in table.get(i, ())]


def selectors_for(name: str, overrides: Mapping[str, str] | None = None) -> list[Selector]:
    """Every selector whose series `derive` may read for signal `name`: those of `families_for`
    plus the companion families the derivation reads beside them (`db_connections_max` reads
    `pg_settings_superuser_reserved_connections` with the default max family). Series matching
    none of these do not change the signal, so a caller may partition raw data by them
    (error_logs reads log events, binned over the window of all the data passed: [] here)."""
    table = selector_table(overrides)
    out: list[Selector] = []
    for i in inputs_of(name):
        out += table.get(i, ())
        defaults = [parse_selector(f) for f in DEFAULT_FAMILIES.get(i, ())]
        if any(sel in defaults for sel in table.get(i, ())):
            out += [parse_selector(f) for f in COMPANION_FAMILIES.get(i, ())]
    return list(dict.fromkeys(out))
