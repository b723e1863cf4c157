"""`derive`: raw series in exporter names -> a SignalSet, by walking the registry."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from herdwatch.model import RawData
from herdwatch.signals._lookup import Lookup, selector_table
from herdwatch.signals._set import SignalSet
from herdwatch.signals.registry import derivations_for


def derive(
    raw: RawData,
    overrides: Mapping[str, str] | None = None,
    *,
    quantile: float = 0.99,
    only: Collection[str] | None = None,
) -> SignalSet:
    """Derive every logical signal that the raw data supports, or with `only` just the named
    ones (output names such as `miss_ratio`, or input names such as `cache_hits`; see
    `registry.SIGNAL_NAMES`) and whatever else their derivations yield with them.

    `overrides` maps a logical signal to another metric family or selector (config `signals:`).
    Unknown logical names raise ConfigError naming the key; an unknown name in `only` is
    ValueError. Events, the window and key expiry samples are always carried over.
    """
    table = selector_table(overrides)
    out = SignalSet(
        events=sorted(raw.events, key=lambda e: e.timestamp),
        window=raw.window(),
        key_expiry=list(raw.key_expiry),
    )
    lookup = Lookup(raw, table, out.events, out.window, quantile)
    for entry in derivations_for(only):
        got = entry.run(lookup)
        out.signals.update(got.signals)
        out.groups.update(got.groups)
    return out
