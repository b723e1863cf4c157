"""Rule files: schema-validated with file:line errors, documented, overridable by config."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from herdwatch.detect import DETECTORS
from herdwatch.errors import ConfigError, RuleError
from herdwatch.rules import builtin_rules_dir, load_rules, parse_duration

SIGNATURES = {
    "cache_stampede",
    "pool_exhaustion",
    "ctx_switch_burst",
    "lock_timeout_cluster",
    "retry_storm",
    "cron_herd",
}


def test_builtin_rules_cover_every_signature_and_document_every_parameter() -> None:
    rules = {r.id: r for r in load_rules()}
    assert set(rules) >= SIGNATURES
    for r in rules.values():
        fields = {f.name for f in dataclasses.fields(DETECTORS[r.detector].params)}
        assert set(r.parameters) == fields
        assert all(len(p.doc) > 10 for p in r.parameters.values())


def _copy_rules(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(builtin_rules_dir(), d)
    return d


def test_invalid_rule_file_names_file_and_line(tmp_path: Path) -> None:
    d = _copy_rules(tmp_path)
    f = d / "cache_stampede.yaml"
    text = f.read_text().replace("  z_enter:\n    default: 6.0", "  z_enter:\n    default: six")
    f.write_text(text)
    line = text.splitlines().index("    default: six") + 1
    with pytest.raises(RuleError) as e:
        load_rules(rules_dir=d)
    assert str(e.value).startswith(f"{f}:")
    assert "z_enter" in str(e.value)
    assert e.value.line is not None and abs(e.value.line - line) <= 1


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        (("detector: cache_stampede", "detector: no_such_detector"), "detector"),
        (("severity: critical", "severity: apocalyptic"), "severity"),
        (("id: cache_stampede", "id: cache_stampede\nunknown_key: 1"), "unknown_key"),
        (
            (
                "  min_duration:\n",
                "  not_a_param:\n    default: 1\n    doc: hello there\n  min_duration:\n",
            ),
            "not_a_param",
        ),
        (("description: >", "description: [broken"), "YAML"),
    ],
)
def test_rule_file_errors_are_one_line(tmp_path: Path, patch: tuple[str, str], needle: str) -> None:
    d = _copy_rules(tmp_path)
    f = d / "cache_stampede.yaml"
    text = f.read_text()
    assert patch[0] in text
    f.write_text(text.replace(patch[0], patch[1], 1))
    with pytest.raises(RuleError) as e:
        load_rules(rules_dir=d)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and str(f) in msg


def test_overrides_change_parameters_and_name_bad_keys() -> None:
    (r,) = [
        r
        for r in load_rules({"cache_stampede": {"z_enter": 4, "baseline": "10m"}})
        if r.id == "cache_stampede"
    ]
    assert r.params.z_enter == 4.0 and r.params.baseline == 600.0
    off = [r for r in load_rules({"retry_storm": {"enabled": False}}) if r.id == "retry_storm"]
    assert off[0].enabled is False
    with pytest.raises(ConfigError, match=r"rules\.cache_stampede\.z_entr"):
        load_rules({"cache_stampede": {"z_entr": 4}})
    with pytest.raises(ConfigError, match=r"rules\.no_such_rule"):
        load_rules({"no_such_rule": {}})
    with pytest.raises(ConfigError, match=r"rules\.pool_exhaustion\.fill_fraction.*<= 1"):
        load_rules({"pool_exhaustion": {"fill_fraction": 3}})
    with pytest.raises(ConfigError, match=r"rules\.cron_herd\.min_occurrences.*whole number"):
        load_rules({"cron_herd": {"min_occurrences": 2.5}})


def test_parse_duration() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2h") == 7200
    assert parse_duration(15) == 15.0
    with pytest.raises(ValueError):
        parse_duration("soon")
