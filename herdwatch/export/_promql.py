"""PromQL text helpers: durations, selectors with their fallbacks, an elementwise max.

Everything here returns PromQL as a string; nothing evaluates it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herdwatch.signals import DEFAULT_FAMILIES, families_for, parse_selector

__all__ = [
    "ERROR_CODES",
    "by",
    "dur",
    "first_present",
    "input_selectors",
    "pmax",
    "rate_sum",
    "with_matcher",
]

#: the call outcomes herdwatch.signals counts as failures (is_error_code), as one regex
ERROR_CODES = "5..|429|0||error|err|timeout|failure|failed|refused|exception|unavailable|5xx"


def dur(seconds: float) -> str:
    """A PromQL duration: whole seconds as `300s`, anything finer in milliseconds."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def by(labels: Sequence[str]) -> str:
    """`by (a, b) ` or '' for a fleet-wide aggregation."""
    return f"by ({', '.join(labels)}) " if labels else ""


def input_selectors(logical: str, overrides: Mapping[str, str] | None) -> list[str]:
    """The selectors logical input `logical` (a key of DEFAULT_FAMILIES) is looked up under,
    first present wins: its defaults, or the one selector the config's `signals:` names.

    The overrides are checked as a scan checks them (ConfigError naming an unknown key or a
    malformed selector)."""
    overrides = dict(overrides or {})
    families_for("miss_ratio", overrides)  # validates every key, whichever signal is asked
    if logical in overrides:
        return [str(parse_selector(overrides[logical]))]
    return [str(parse_selector(f)) for f in DEFAULT_FAMILIES[logical]]


def with_matcher(selector: str, matcher: str, suffix: str = "") -> str:
    """`fam{a="b"}` + `c!="d"` -> `fam<suffix>{a="b",c!="d"}`."""
    sel = parse_selector(selector)
    inner = [f'{k}{op}"{v}"' for k, op, v in sel.matchers]
    if matcher:
        inner.append(matcher)
    return f"{sel.family}{suffix}{{{','.join(inner)}}}" if inner else f"{sel.family}{suffix}"


def first_present(exprs: Sequence[str]) -> str:
    """`a or b or ...`: per label set, the first alternative that has data (as a scan's lookup
    takes the first family present)."""
    return " or ".join(exprs) if len(exprs) > 1 else exprs[0]


def rate_sum(
    selectors: Sequence[str], window: str, labels: Sequence[str], matcher: str = ""
) -> str:
    """`sum by (labels) (rate(sel[window]))` over the alternatives, first present wins."""
    return first_present(
        [f"sum {by(labels)}(rate({with_matcher(s, matcher)}[{window}]))" for s in selectors]
    )


def pmax(a: str, b: str) -> str:
    """Elementwise max of two vectors with the same label sets: `(a > b) or b`."""
    return f"({a} > {b}) or ({b})"
