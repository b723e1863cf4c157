"""Rule files: schema-validated with file:line errors, documented, overridable by config."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from herdwatch.detect import DETECTORS
from herdwatch.errors import ConfigError, RuleError
from herdwatch.rules import builtin_rules_dir, check_rules, load_rules, parse_duration

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
        # Detectors decide a finding's severity from its evidence: a rule file cannot set it.
        (("id: cache_stampede", "id: cache_stampede\nseverity: critical"), "severity"),
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


def test_check_rules_loads_every_builtin_rule() -> None:
    checked = check_rules()
    assert [r.id for r in checked] == [r.id for r in load_rules()]
    assert {r.id for r in checked} >= SIGNATURES


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("id: x\nid: y\n", 2, "id: duplicate key"),
        ("id: x\nparameters:\n  a: {default: 1, doc: hello}\n  a: {default: 2, doc: hello}\n",
         4, "parameters.a: duplicate key"),
        ("id: x\ndescription: [a,\n", 3, "invalid YAML"),
        ("id: x\ndescription: !!binary ZZZ\n", 2, "invalid YAML"),
        ("- a\n", 1, "must be a mapping"),
    ],
)  # fmt: skip
def test_check_rules_names_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    d = _copy_rules(tmp_path)
    f = d / "zz_broken.yaml"
    f.write_text(text)
    with pytest.raises(RuleError) as e:
        check_rules(d)
    assert (e.value.file, e.value.line) == (str(f), line)
    assert str(e.value).startswith(f"{f}:{line}: ") and words in str(e.value)


def test_duplicate_rule_id_names_the_second_file_and_its_id_line(tmp_path: Path) -> None:
    d = _copy_rules(tmp_path)
    text = (d / "cron_herd.yaml").read_text()
    (d / "zz_copy.yaml").write_text(text)
    line = text.splitlines().index("id: cron_herd") + 1
    with pytest.raises(RuleError, match=rf"zz_copy.yaml:{line}: id: duplicate rule id 'cron_herd'"):
        check_rules(d)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("id: x\ndetector: cache_stampede\nparameters: {}\n", "'description' is a required"),
        (
            "id: x\ndetector: cache_stampede\ndescription: a rule file\nparameters: 3\n",
            "parameters",
        ),
        ("id: x\ndetector: nope\ndescription: a rule file\nparameters: {}\n", "detector"),
    ],
)
def test_without_the_schema_first_a_broken_file_is_still_explained(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(RuleError) as info:
        load_rules(rules_dir=tmp_path, strict=False)
    assert words in str(info.value) and str(tmp_path / "x.yaml") in str(info.value)


def test_a_scan_loads_the_shipped_rules_without_jsonschema() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from herdwatch.rules import load_rules; "
         "load_rules(); print('jsonschema' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "False"


# --- non-finite parameters (issue 9): NaN passes every bound and compares false in a detector
# (`z_enter: .nan` hid a critical finding); +-Inf passes a one-sided bound

NON_FINITE = [(".nan", "nan"), (".NaN", "nan"), (".inf", "inf"), ("-.inf", "-inf"),
              ("1.0e+999", "inf")]  # fmt: skip
STAMPEDE = Path(__file__).resolve().parent.parent / "fixtures/incidents/stampede_catalog_1s"


def _cli(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The entry point on `argv`: its one stderr line, asserting exit 2 and nothing on stdout."""
    from tests.fuzz.test_entry_point import run

    monkeypatch.setenv("XDG_CONFIG_HOME", str(cwd / "xdg"))
    code, out, err = run(argv, cwd)
    assert (code, out) == (2, ""), err
    assert err.endswith("\n") and "\n" not in err[:-1], err
    return err[:-1]


@pytest.mark.parametrize(("yaml_value", "shown"), NON_FINITE)
def test_a_non_finite_parameter_in_a_replays_config_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_value: str, shown: str
) -> None:
    replay = tmp_path / "replay"
    replay.mkdir()
    shutil.copy(STAMPEDE / "metrics.om.gz", replay)
    (replay / "herdwatch.yaml").write_text(
        f"rules:\n  cache_stampede:\n    z_enter: {yaml_value}\n"
    )
    line = _cli(["scan", "--replay", str(replay)], tmp_path, monkeypatch)
    assert line == (
        f"herdwatch: {replay / 'herdwatch.yaml'}:3: rules.cache_stampede.z_enter: "
        f"must be a finite number, not {shown}"
    )


@pytest.mark.parametrize(("yaml_value", "shown"), NON_FINITE)
def test_a_non_finite_parameter_in_a_variable_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_value: str, shown: str
) -> None:
    monkeypatch.setenv("HERDWATCH_RULES_CACHE_STAMPEDE", f"{{z_enter: {yaml_value}}}")
    line = _cli(["scan", "--replay", str(STAMPEDE)], tmp_path, monkeypatch)
    assert line == (
        "herdwatch: $HERDWATCH_RULES_CACHE_STAMPEDE: rules.cache_stampede.z_enter: "
        f"must be a finite number, not {shown}"
    )


@pytest.mark.parametrize(("yaml_value", "shown"), NON_FINITE)
def test_a_non_finite_default_in_a_rule_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_value: str, shown: str
) -> None:
    rules = _copy_rules(tmp_path)
    path = rules / "cache_stampede.yaml"
    text = path.read_text()
    assert "  z_enter:\n    default: 6.0\n" in text
    path.write_text(
        text.replace("  z_enter:\n    default: 6.0\n", f"  z_enter:\n    default: {yaml_value}\n")
    )
    line = _cli(["rules", "check", str(rules)], tmp_path, monkeypatch)
    assert line.startswith(f"herdwatch: {path}:")
    assert line.endswith(f": parameters.z_enter: must be a finite number, not {shown}")
