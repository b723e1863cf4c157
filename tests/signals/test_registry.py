"""The registry of derivations: one owner per name, `derive(only=...)` and the lookup metadata."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdwatch.config import load_config
from herdwatch.errors import ConfigError
from herdwatch.model import RawData, Signal
from herdwatch.signals import (
    DERIVATIONS,
    LOGICAL_SIGNALS,
    PASSTHROUGH,
    SIGNAL_NAMES,
    SignalSet,
    derivations_for,
    derive,
    families_for,
    inputs_of,
    parse_selector,
    provides,
    selectors_for,
)
from herdwatch.sources.replay import load_replay

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "incidents"
# every derivation has data in one of these; checkout names its db histogram in herdwatch.yaml,
# logfirst has error logs and servers with superuser-reserved slots
SAMPLES = ["stampede_checkout_15s", "pool_exhaustion_logfirst_15s", "retry_storm_inventory_15s"]


@functools.cache
def sample(name: str) -> tuple[RawData, dict[str, str]]:
    d = FIXTURES / name
    return load_replay(d), dict(load_config(None, replay_dir=d, discover=False, environ={}).signals)


def assert_same_signal(a: Signal, b: Signal) -> None:
    assert (a.name, a.derived_from) == (b.name, b.derived_from)
    np.testing.assert_array_equal(a.t, b.t)
    np.testing.assert_array_equal(a.v, b.v)  # NaN equals NaN here
    assert a.step == b.step or (np.isnan(a.step) and np.isnan(b.step))


def assert_part_of(part: SignalSet, full: SignalSet) -> None:
    for name, sig in part.signals.items():
        assert_same_signal(sig, full.signals[name])
    for name, groups in part.groups.items():
        assert list(groups) == list(full.groups[name])
        for key, sig in groups.items():
            assert_same_signal(sig, full.groups[name][key])


def test_every_name_belongs_to_one_derivation() -> None:
    seen: dict[str, str] = {}
    for entry in DERIVATIONS:
        for name in entry.names:
            assert name not in seen, f"{name} in {seen.get(name)} and {entry.name}"
            seen[name] = entry.name
    assert set(seen) | PASSTHROUGH == SIGNAL_NAMES
    # every logical input a config may point elsewhere is read by some derivation
    assert {i for e in DERIVATIONS for i in e.inputs} == LOGICAL_SIGNALS


def test_the_samples_exercise_every_derivation() -> None:
    full = [derive(*sample(name)) for name in SAMPLES]
    assert {n for s in full for n in s.signals} == {n for e in DERIVATIONS for n in e.signals}
    assert {n for s in full for n in s.groups} == {n for e in DERIVATIONS for n in e.groups}
    reserved = "pg_settings_superuser_reserved_connections"
    assert all(
        reserved in s.signals["db_connections_max"].derived_from
        or any(reserved in g.derived_from for g in s.groups["db_connections_max"].values())
        for s in full
    )


@pytest.mark.parametrize("name", SAMPLES)
def test_a_derivation_provides_only_what_it_declares(name: str) -> None:
    raw, overrides = sample(name)
    for entry in DERIVATIONS:
        got = derive(raw, overrides, only=[entry.signals[0]])
        assert set(got.signals) <= set(entry.signals)
        assert set(got.groups) <= set(entry.groups)


def test_only_runs_the_derivations_that_yield_the_names() -> None:
    assert [e.name for e in derivations_for(["miss_ratio"])] == ["cache"]
    assert [e.name for e in derivations_for("cache_hits")] == ["cache"]  # a lone string
    assert [e.name for e in derivations_for(["cpu_seconds", "db_latency", "key_expiry"])] == [
        "db_latency_p99",
        "cpu",
    ]
    assert derivations_for(["key_expiry"]) == ()
    assert derivations_for(None) == DERIVATIONS
    raw, overrides = sample("stampede_checkout_15s")
    got = derive(raw, overrides, only=["miss_ratio"])
    assert set(got.signals) == {"cache_hits", "cache_misses", "cache_requests", "miss_ratio"}
    assert not got.groups
    nothing = derive(raw, overrides, only=[])
    assert not nothing.signals and not nothing.groups
    assert nothing.window == raw.window()  # events, window and key expiry always ride along


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(SAMPLES),
    st.sets(st.sampled_from(sorted(SIGNAL_NAMES)), max_size=5),
)
def test_only_gives_exactly_what_a_full_derive_gives(name: str, only: set[str]) -> None:
    raw, overrides = sample(name)
    full = derive(raw, overrides)
    part = derive(raw, overrides, only=only)
    assert_part_of(part, full)
    for n in only:
        if n in full.signals:
            assert n in part.signals
        if n in full.groups:
            assert n in part.groups


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'miss_rate'"):
        derive(RawData(), only=["miss_rate"])
    with pytest.raises(ValueError, match="'nope'"):
        families_for("nope")
    with pytest.raises(ConfigError, match=r"signals\.cache_hitz"):
        families_for("miss_ratio", {"cache_hitz": "x"})


def test_metadata_of_a_signal() -> None:
    assert inputs_of("miss_ratio") == ("cache_hits", "cache_misses")
    assert inputs_of("cpu_busy") == ("cpu_seconds",)
    assert inputs_of("key_expiry") == ()
    entry = provides("db_latency_p99")
    assert entry is not None and entry.inputs == ("db_latency",)
    assert provides("key_expiry") is None
    assert families_for("miss_ratio") == [
        "redis_keyspace_hits_total",
        'herdcache_requests_total{result="hit"}',
        "redis_keyspace_misses_total",
        'herdcache_requests_total{result="miss"}',
    ]
    assert (
        families_for("cache_hits", {"cache_hits": 'myapp_total{r="h"}'})[0] == 'myapp_total{r="h"}'
    )
    assert families_for("db_latency_p99", {"db_latency": "x_seconds"}) == ["x_seconds"]
    assert families_for("error_logs") == [] and families_for("key_expiry") == []


def test_selectors_for_adds_the_companions_of_the_default_family() -> None:
    assert [str(s) for s in selectors_for("db_connections_max")] == [
        "pg_settings_max_connections",
        "pg_settings_superuser_reserved_connections",
    ]
    assert selectors_for("db_connections_max", {"db_connections_max": "myapp_pool_max"}) == [
        parse_selector("myapp_pool_max")
    ]
    assert selectors_for("miss_ratio") == [parse_selector(f) for f in families_for("miss_ratio")]


@pytest.mark.parametrize("name", SAMPLES)
def test_the_series_selectors_for_names_are_all_a_signal_needs(name: str) -> None:
    """Partitioning raw data by `selectors_for` leaves every signal as it was (error_logs
    aside: its bins span the window of all the data, so the events are kept whole here)."""
    raw, overrides = sample(name)
    full = derive(raw, overrides)
    for signal in sorted(SIGNAL_NAMES - {"error_logs"}):
        sels = selectors_for(signal, overrides)
        mine = RawData(series=[s for s in raw.series if any(sel.matches(s) for sel in sels)])
        part = derive(mine, overrides, only=[signal])
        assert set(part.signals) == set(derive(raw, overrides, only=[signal]).signals)
        assert_part_of(part, full)
