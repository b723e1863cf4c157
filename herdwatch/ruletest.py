"""`herdwatch rules test`: run the rules against recorded incidents and check expected.json.

Like `promtool test rules`: one line per expectation, pass or fail, with what was found instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herdwatch.config import Config, load_config
from herdwatch.config._zones import log_zone
from herdwatch.engine import scan
from herdwatch.errors import ReplayFormatError
from herdwatch.rules import Rule, load_rules
from herdwatch.sources.replay import load_replay

__all__ = ["CaseResult", "load_expected", "run_fixture", "run_fixtures"]


@dataclass(frozen=True, slots=True)
class CaseResult:
    fixture: str
    signature: str
    expectation: str  # "fires" or "silent"
    passed: bool
    detail: str


def load_expected(path: Path) -> dict[str, Any]:
    """Read and check an expected.json; ReplayFormatError naming the file when malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReplayFormatError(f"invalid JSON: {e.msg}", file=str(path), line=e.lineno) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("must", []), list)
        or not isinstance(data.get("must_not", []), list)
    ):
        raise ReplayFormatError("expected.json needs lists 'must' and 'must_not'", file=str(path))
    for m in data.get("must", []):
        if not isinstance(m, dict) or "signature" not in m or "onset" not in m:
            raise ReplayFormatError("each 'must' entry needs signature and onset", file=str(path))
    return data


def _fixture_config(d: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The fixture's own herdwatch.yaml, validated like any config; the user's config files and
    HERDWATCH_* variables do not leak into a rule test."""
    cfg = _fixture_cfg(d)
    return dict(cfg.signals), {k: dict(v) for k, v in cfg.rules.items()}


def _fixture_cfg(d: Path) -> Config:
    return load_config(None, replay_dir=d, discover=False, environ={})


def run_fixture(d: Path, rules: Sequence[Rule] | None = None) -> list[CaseResult]:
    """Scan one replay directory and check each expectation in its expected.json."""
    expected = load_expected(d / "expected.json")
    signals, rule_overrides = _fixture_config(d)
    active = list(rules) if rules is not None else load_rules(rule_overrides)
    zone = log_zone(_fixture_cfg(d).sources.log_timezone)
    result = scan(load_replay(d, default_tz=zone), signal_overrides=signals, rules=active)
    found = result.findings
    out: list[CaseResult] = []
    for m in expected.get("must", []):
        sig, onset = m["signature"], float(m["onset"])
        tol = float(m.get("tolerance", expected.get("resolution", 1)))
        same = [f for f in found if f.signature == sig]
        near = [f for f in same if abs(f.onset - onset) <= tol + 1e-6]
        if near:
            out.append(
                CaseResult(
                    d.name,
                    sig,
                    "fires",
                    True,
                    f"onset {near[0].onset:.3f} (expected {onset:.3f} ±{tol:g}s)",
                )
            )
        elif same:
            got = ", ".join(f"{f.onset:.3f}" for f in same)
            out.append(
                CaseResult(
                    d.name, sig, "fires", False, f"onset(s) {got}, expected {onset:.3f} ±{tol:g}s"
                )
            )
        else:
            out.append(CaseResult(d.name, sig, "fires", False, "not found"))
    for sig in expected.get("must_not", []):
        same = [f for f in found if f.signature == sig]
        detail = "" if not same else "found at " + ", ".join(f"{f.onset:.3f}" for f in same)
        out.append(CaseResult(d.name, sig, "silent", not same, detail or "not found"))
    return out


def run_fixtures(root: Path, rules: Sequence[Rule] | None = None) -> list[CaseResult]:
    """Every directory under `root` that holds an expected.json."""
    dirs = sorted(p.parent for p in root.glob("*/expected.json"))
    if not dirs:
        raise ReplayFormatError("no fixture directories with expected.json", file=str(root))
    results: list[CaseResult] = []
    for d in dirs:
        results += run_fixture(d, rules)
    return results
