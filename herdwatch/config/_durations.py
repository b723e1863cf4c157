"""The one duration grammar of herdwatch: config keys, rule parameters and `--since`/`--duration`.

A duration is a number of seconds (`300`, `1.5`, also as a YAML int or float), or one or more
`<number><unit>` parts, largest unit first, each unit at most once: `500ms`, `1.5h`, `1h30m`,
`2d`, `1w`. Units: `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`, `w`.
"""

from __future__ import annotations

import math
import re

__all__ = ["MAX_DURATION", "parse_duration"]

#: Nothing herdwatch waits for or looks back over is longer; a bigger value is a typo.
MAX_DURATION = 100 * 365.25 * 86400.0

_UNIT_SECONDS = {
    "w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6,
    "µs": 1e-6,
}  # fmt: skip
# Longest alternatives first, so that `ms` is not read as `m` followed by junk.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|s|m|h|d|w)")
_BARE = re.compile(r"\d+(?:\.\d+)?")
_HINT = "use seconds or e.g. 500ms, 30s, 5m, 1h30m, 2d"


def parse_duration(value: object) -> float:
    """Seconds in `value`: a bare number of seconds (str, int or float) or a duration such as
    `500ms`, `1.5h`, `1h30m`, `1w`. Raises ValueError, naming the value, for anything else:
    booleans, negatives, NaN, infinities, empty text, unknown units, more than 100 years."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration ({_HINT}), got a boolean")
    if isinstance(value, int | float):
        return _checked(value, value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration ({_HINT}), got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError(f"empty duration ({_HINT})")
    if text.startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    if _BARE.fullmatch(text):
        return _checked(float(text), value)
    return _checked(_compound(text, value), value)


def _compound(text: str, original: str) -> float:
    total, pos, last_rank = 0.0, 0, -1
    ranks = list(_UNIT_SECONDS)
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise ValueError(f"not a duration: {original!r} ({_HINT})")
        number, unit = m.groups()
        rank = ranks.index("us" if unit == "µs" else unit)
        if rank <= last_rank:
            raise ValueError(
                f"not a duration: {original!r} (each unit once, largest first, as in 1h30m)"
            )
        last_rank = rank
        total += float(number) * _UNIT_SECONDS[unit]
        pos = m.end()
    return total


def _checked(seconds: float, original: object) -> float:
    if isinstance(original, float) and not math.isfinite(original):
        raise ValueError(f"a duration must be a finite number, got {original!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {original!r}")
    # Compared before float(): float() of a huge int raises OverflowError.
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {original!r} is longer than 100 years")
    return float(seconds)
