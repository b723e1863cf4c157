"""Rule files: one YAML file per signature, validated against a schema, built into typed params.

A rule file names its detector (see `herdwatch.detect.DETECTORS`) and documents every parameter
with a default; config `rules:` entries override `enabled` and any parameter by name. A duration
parameter (`unit: s`) takes the one duration grammar of herdwatch (`300`, `5m`, `1h30m`, see
`herdwatch.config.parse_duration`).

A rule file sets no severity: each finding's severity (`warning` or `critical`) is decided by
its detector from the evidence, e.g. how far the signals went past the rule's thresholds.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herdwatch.config import Config, load_config, parse_duration
from herdwatch.config._yaml import LineOf, load_with_lines
from herdwatch.detect import DETECTORS
from herdwatch.errors import ConfigError, RuleError

__all__ = [
    "ParamSpec",
    "Rule",
    "builtin_rules_dir",
    "check_config",
    "check_rules",
    "check_signals",
    "load_rules",
    "parse_duration",
]

RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "detector", "description", "parameters"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "detector": {"type": "string", "enum": sorted(DETECTORS)},
        "enabled": {"type": "boolean"},
        "description": {"type": "string", "minLength": 10},
        "signals": {"type": "array", "items": {"type": "string"}},
        "onset": {"type": "string"},
        "must_not_fire_on": {"type": "array", "items": {"type": "string"}},
        "parameters": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["default", "doc"],
                "additionalProperties": False,
                "properties": {
                    "default": {"type": ["number", "integer", "string", "array", "boolean"]},
                    "doc": {"type": "string", "minLength": 5},
                    "unit": {"type": "string"},
                    "minimum": {"type": "number"},
                    "maximum": {"type": "number"},
                },
            },
        },
    },
}


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    default: Any
    doc: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A loaded rule: its detector and the typed parameter object it will be run with."""

    id: str
    detector: str
    description: str
    file: str
    enabled: bool
    params: Any
    parameters: dict[str, ParamSpec]
    signals: tuple[str, ...] = ()

    def param_values(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)


def builtin_rules_dir() -> Path:
    """The shipped rules: inside the installed package, else the repository's `rules/`."""
    # The package's directory, as importlib.resources.files("herdwatch") names it for a package
    # on disk (the only kind the rules can be read from): that import, with tempfile, shutil
    # and zipfile, costs every scan ~10 ms.
    packaged = Path(__file__).parent / "_builtin_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "rules"


#: whole-number parameters above this are typos (and no longer exact as floats)
_MAX_INT = 2**53


def _coerce(field: dataclasses.Field[Any], value: Any, spec: ParamSpec | None) -> Any:
    default = field.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("must be a non-empty list")
        if default and isinstance(default[0], str):
            return tuple(str(v) for v in value)
        return tuple(parse_duration(v) for v in value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number")
        if abs(value) > _MAX_INT:
            raise ValueError(f"must be a whole number below 2**53, not {value}")
        out: float = value
    elif spec is not None and spec.unit == "s":
        out = parse_duration(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, not {value!r}")
        try:
            out = float(value)
        except OverflowError:
            out = math.inf
        # NaN passes every `<`/`>` bound below and compares false in a detector: `z_enter:
        # .nan` would silently disable the rule.
        if not math.isfinite(out):
            raise ValueError(f"must be a finite number, not {value!r}")
    if spec is not None:
        if spec.minimum is not None and out < spec.minimum:
            raise ValueError(f"must be >= {spec.minimum}")
        if spec.maximum is not None and out > spec.maximum:
            raise ValueError(f"must be <= {spec.maximum}")
    return out


def _build_params(
    detector: str,
    values: Mapping[str, Any],
    specs: Mapping[str, ParamSpec],
    where: str,
    line_of: LineOf,
) -> Any:
    params_type = DETECTORS[detector].params
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    missing = sorted(set(fields) - set(specs))
    if missing:
        raise RuleError(
            f"parameters.{missing[0]}: not documented (detector {detector} takes "
            f"{', '.join(sorted(fields))})",
            file=where,
            line=line_of(["parameters"]),
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            raise RuleError(
                f"parameters.{name}: detector {detector} has no such parameter "
                f"(it takes {', '.join(sorted(fields))})",
                file=where,
                line=line_of(["parameters", name]),
            )
        try:
            kwargs[name] = _coerce(fields[name], value, specs.get(name))
        except ValueError as e:
            raise RuleError(
                f"parameters.{name}: {e}", file=where, line=line_of(["parameters", name])
            ) from None
    return params_type(**kwargs)


def _schema_errors(doc: dict[str, Any], where: str, line_of: Any) -> None:
    """RuleError naming the first place where `doc` breaks RULE_SCHEMA, if it does."""
    import jsonschema  # ~50 ms: loaded only where a file is checked against the schema

    validator = jsonschema.Draft202012Validator(RULE_SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise RuleError(f"{key}: {err.message}", file=where, line=line_of(list(err.absolute_path)))


def _load_file(path: Path, *, strict: bool = True) -> tuple[Rule, int | None]:
    """The rule in `path` and the line of its `id:`. `strict` checks the whole schema first;
    otherwise (the shipped rules, which the suite checks) the schema is consulted only to
    explain a file that cannot be built."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuleError(f"cannot read rule file: {e}", file=where) from None

    def error(message: str, line: int | None, key: str | None) -> RuleError:
        return RuleError(f"{key}: {message}" if key else message, file=where, line=line)

    doc, line_of = load_with_lines(text, error)
    if not isinstance(doc, dict):
        raise RuleError("a rule file must be a mapping", file=where, line=1)
    if strict:
        _schema_errors(doc, where, line_of)
        return _build_rule(doc, where, line_of)
    try:
        return _build_rule(doc, where, line_of)
    except (RuleError, KeyError, TypeError, AttributeError, ValueError):
        _schema_errors(doc, where, line_of)  # the message strict mode would give, if any
        raise


def _build_rule(doc: dict[str, Any], where: str, line_of: Any) -> tuple[Rule, int | None]:
    specs = {
        name: ParamSpec(
            name,
            spec["default"],
            spec["doc"],
            spec.get("unit", ""),
            spec.get("minimum"),
            spec.get("maximum"),
        )
        for name, spec in doc["parameters"].items()
    }
    params = _build_params(
        doc["detector"], {n: s.default for n, s in specs.items()}, specs, where, line_of
    )
    rule = Rule(
        doc["id"],
        doc["detector"],
        " ".join(doc["description"].split()),
        where,
        bool(doc.get("enabled", True)),
        params,
        specs,
        tuple(doc.get("signals", ())),
    )
    return rule, line_of(["id"])


def load_rules(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    rules_dir: Path | None = None,
    *,
    strict: bool | None = None,
) -> list[Rule]:
    """Load every `*.yaml` rule, then apply config overrides (`{rule_id: {param: value}}`).

    An invalid rule file raises RuleError with file:line; an override naming an unknown rule or
    parameter raises ConfigError naming the key. `strict` (default: for any directory but the
    shipped rules) checks each file against the whole schema before building it.
    """
    directory = rules_dir or builtin_rules_dir()
    if strict is None:
        strict = rules_dir is not None
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise RuleError("no rule files (*.yaml) found", file=str(directory))
    rules: dict[str, Rule] = {}
    for f in files:
        r, id_line = _load_file(f, strict=strict)
        if r.id in rules:
            raise RuleError(
                f"id: duplicate rule id {r.id!r} (also in {rules[r.id].file})",
                file=str(f),
                line=id_line,
            )
        rules[r.id] = r
    for rid, values in (overrides or {}).items():
        if rid not in rules:
            raise ConfigError(
                f"unknown rule (known: {', '.join(sorted(rules))})", key=f"rules.{rid}"
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError("must be a mapping of parameters", key=f"rules.{rid}")
        r = rules[rid]
        enabled = r.enabled
        changes: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(r.params)}
        for name, value in values.items():
            if name == "enabled":
                if not isinstance(value, bool):
                    raise ConfigError("must be true or false", key=f"rules.{rid}.enabled")
                enabled = value
                continue
            if name not in fields:
                raise ConfigError(
                    f"no such parameter (known: enabled, {', '.join(sorted(fields))})",
                    key=f"rules.{rid}.{name}",
                )
            try:
                changes[name] = _coerce(fields[name], value, r.parameters.get(name))
            except ValueError as e:
                raise ConfigError(str(e), key=f"rules.{rid}.{name}") from None
        rules[rid] = dataclasses.replace(
            r, enabled=enabled, params=dataclasses.replace(r.params, **changes)
        )
    return [rules[k] for k in sorted(rules)]


def check_rules(rules_dir: Path | None = None) -> list[Rule]:
    """Load and validate every rule file of `rules_dir` (default: the built-in rules) as a
    scan would: the schema, the detector, every parameter documented and its default in range,
    no duplicate id. Raises RuleError naming file:line."""
    return load_rules(rules_dir=rules_dir, strict=True)


def check_signals(cfg: Config, *, promql: bool = False) -> None:
    """Every `signals:` entry of `cfg` names a known logical signal and a parseable family or
    selector (any PromQL when `promql`); ConfigError with the entry's file:line otherwise."""
    # Here, not in herdwatch.config: the signals sit above config's layer.
    from herdwatch.signals import LOGICAL_SIGNALS, parse_selector

    for name, target in cfg.signals.items():
        key = f"signals.{name}"
        if name not in LOGICAL_SIGNALS:
            raise cfg.error(key, f"unknown signal (known: {', '.join(sorted(LOGICAL_SIGNALS))})")
        if promql:
            continue
        try:
            parse_selector(target)
        except ConfigError as exc:
            raise cfg.error(key, str(exc)) from None


def check_config(
    path: Path | None,
    *,
    promql: bool | None = None,
    rules_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """The Config of `path` (None: the discovered `./herdwatch.yaml` or XDG file; the defaults
    when there is none, with `files == ()`), validated as a scan would before reading anything:
    the schema, every `signals:` entry a known logical signal with a parseable selector (any
    PromQL when `promql`; default: when the config has a Prometheus source), and every `rules:`
    override against the rules. Raises ConfigError naming file:line and the key, or RuleError
    for an invalid rule file."""
    environ = os.environ if environ is None else environ
    cfg = load_config(path, environ=environ, cwd=cwd)
    check_signals(cfg, promql=cfg.sources.prometheus is not None if promql is None else promql)
    try:
        load_rules(cfg.rules, rules_dir=rules_dir)
    except ConfigError as exc:
        raise cfg.relocate(exc) from None
    return cfg
