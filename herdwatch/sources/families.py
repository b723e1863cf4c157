"""The metric families herdwatch reads by default, and `family{label="v"}` selectors.

Below `herdwatch.signals` so that sources (the Prometheus source queries these families) may use
it; `herdwatch.signals` derives its logical signals from the same table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from herdwatch.errors import ConfigError
from herdwatch.model import Series

__all__ = ["COMPANION_FAMILIES", "DEFAULT_FAMILIES", "Selector", "family_matches", "parse_selector"]

#: logical signal -> default metric families, first present wins (the reference client's own
#: metrics serve when the exporters' are absent).
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "cache_hits": ("redis_keyspace_hits_total", 'herdcache_requests_total{result="hit"}'),
    "cache_misses": ("redis_keyspace_misses_total", 'herdcache_requests_total{result="miss"}'),
    "db_latency": ("db_query_duration_seconds", "herdcache_load_duration_seconds"),
    "requests": ("http_requests_total",),
    "db_connections": ("pg_stat_activity_count",),
    "db_connections_max": ("pg_settings_max_connections",),
    "context_switches": ("node_context_switches_total",),
    "cpu_seconds": ("node_cpu_seconds_total",),
    "upstream_requests": ("http_client_requests_total",),
    "upstream_latency": ("http_client_request_duration_seconds",),
}

#: families a signal's derivation reads besides its own (max_connections less the reserved)
COMPANION_FAMILIES: dict[str, tuple[str, ...]] = {
    "db_connections_max": ("pg_settings_superuser_reserved_connections",),
}

_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric family plus label matchers, e.g. `herdcache_requests_total{result="hit"}`."""

    family: str
    matchers: tuple[tuple[str, str, str], ...] = ()

    def matches(self, s: Series) -> bool:
        if not family_matches(self.family, s):
            return False
        for key, op, want in self.matchers:
            have = s.label(key)
            if (op == "=" and have != want) or (op == "!=" and have == want):
                return False
            if op == "=~" and not re.fullmatch(want, have):
                return False
        return True

    def __str__(self) -> str:
        if not self.matchers:
            return self.family
        inner = ",".join(f'{k}{op}"{v}"' for k, op, v in self.matchers)
        return f"{self.family}{{{inner}}}"


def parse_selector(text: str) -> Selector:
    """`family` or `family{label="v",other=~"re"}` -> Selector; ConfigError when malformed."""
    m = _SELECTOR.match(text)
    if not m:
        raise ConfigError(f"not a metric family or selector: {text!r}")
    family, inner = m.group(1), m.group(2)
    matchers: list[tuple[str, str, str]] = []
    if inner:
        pos = 0
        while pos < len(inner.strip()):
            mm = _MATCHER.match(inner, pos)
            if not mm:
                raise ConfigError(f"bad label matcher in {text!r}")
            matchers.append((mm.group(1), mm.group(2), mm.group(3)))
            pos = mm.end()
    return Selector(family, tuple(matchers))


def family_matches(family: str, s: Series) -> bool:
    fam = s.family or s.name
    if family in (fam, s.name):
        return True
    # OpenMetrics names a counter family without `_total`; users name it either way.
    return (family.endswith("_total") and family[: -len("_total")] == fam) or (
        s.name == family + "_total"
    )
