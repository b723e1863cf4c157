"""Rule files: one YAML file per signature, validated against a schema, built into typed params.

A rule file names its detector (see `herdwatch.detect.DETECTORS`) and documents every parameter
with a default; config `rules:` entries override `enabled` and any parameter by name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from herdwatch.detect import DETECTORS
from herdwatch.errors import ConfigError, RuleError

__all__ = ["ParamSpec", "Rule", "builtin_rules_dir", "load_rules", "parse_duration"]

RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "detector", "description", "parameters"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "detector": {"type": "string", "enum": sorted(DETECTORS)},
        "enabled": {"type": "boolean"},
        "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
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

#: libyaml's safe loader when PyYAML was built with it (ten times faster), else the pure one
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """`300`, `300s`, `5m`, `1.5h`, `500ms` -> seconds. ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use 300, 300s, 5m, 2h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


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
    severity: str = "warning"
    signals: tuple[str, ...] = ()

    def param_values(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)


def builtin_rules_dir() -> Path:
    """The shipped rules: inside the installed package, else the repository's `rules/`."""
    packaged = resources.files("herdwatch") / "_builtin_rules"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "rules"


def _line_of(node: yaml.Node | None, path: Sequence[Any]) -> int | None:
    """1-based line of the YAML node at `path` (keys and indexes), or of its nearest parent."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                return line
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


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
        out: float = value
    elif spec is not None and spec.unit == "s":
        out = parse_duration(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, not {value!r}")
        out = float(value)
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
    line_of: Any,
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


def _load_file(path: Path) -> Rule:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=_LOADER)
        doc = yaml.load(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise RuleError(f"invalid YAML: {e.problem}", file=where, line=line) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RuleError(f"cannot read rule file: {e}", file=where) from None

    def line_of(p: Sequence[Any]) -> int | None:
        return _line_of(node, p)

    if not isinstance(doc, dict):
        raise RuleError("a rule file must be a mapping", file=where, line=1)
    validator = jsonschema.Draft202012Validator(RULE_SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise RuleError(f"{key}: {err.message}", file=where, line=line_of(list(err.absolute_path)))
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
    return Rule(
        doc["id"],
        doc["detector"],
        " ".join(doc["description"].split()),
        where,
        bool(doc.get("enabled", True)),
        params,
        specs,
        doc.get("severity", "warning"),
        tuple(doc.get("signals", ())),
    )


def load_rules(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    rules_dir: Path | None = None,
) -> list[Rule]:
    """Load every `*.yaml` rule, then apply config overrides (`{rule_id: {param: value}}`).

    An invalid rule file raises RuleError with file:line; an override naming an unknown rule or
    parameter raises ConfigError naming the key.
    """
    directory = rules_dir or builtin_rules_dir()
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise RuleError("no rule files (*.yaml) found", file=str(directory))
    rules: dict[str, Rule] = {}
    for f in files:
        r = _load_file(f)
        if r.id in rules:
            raise RuleError(f"duplicate rule id {r.id!r} (also in {rules[r.id].file})", file=str(f))
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
