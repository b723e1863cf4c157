"""Raw series in exporter names -> the logical signals that docs/detection.md lists.

`derive` walks `registry.DERIVATIONS`, one small function per logical signal (or group of
signals computed together) in `_derivations`; the math follows Prometheus exactly (`_math`).
The engine asks the registry what a rule's signals need (`families_for`, `selectors_for`,
`inputs_of`) and derives just those (`derive(..., only=...)`).
"""

from __future__ import annotations

from herdwatch.signals._derive import derive
from herdwatch.signals._labels import is_error_code
from herdwatch.signals._lookup import LOGICAL_SIGNALS
from herdwatch.signals._math import (
    counter_rate,
    histogram_quantile,
    median_of,
    median_step,
    sum_on_grid,
    union_grid,
)
from herdwatch.signals._set import SignalSet
from herdwatch.signals.registry import (
    DERIVATIONS,
    PASSTHROUGH,
    SIGNAL_NAMES,
    Derivation,
    derivations_for,
    families_for,
    inputs_of,
    provides,
    selectors_for,
)
from herdwatch.sources.families import DEFAULT_FAMILIES, Selector, parse_selector

__all__ = [
    "DEFAULT_FAMILIES",
    "DERIVATIONS",
    "LOGICAL_SIGNALS",
    "PASSTHROUGH",
    "SIGNAL_NAMES",
    "Derivation",
    "Selector",
    "SignalSet",
    "counter_rate",
    "derivations_for",
    "derive",
    "families_for",
    "histogram_quantile",
    "inputs_of",
    "is_error_code",
    "median_of",
    "median_step",
    "parse_selector",
    "provides",
    "selectors_for",
    "sum_on_grid",
    "union_grid",
]
