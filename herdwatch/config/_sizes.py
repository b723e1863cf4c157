"""Sizes in bytes for config keys: a whole number of bytes, or a number and a unit (`512MiB`,
`2GiB`, `1.5G`, `800MB`). K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024 (what a budget of
memory means), KB/MB/GB/TB powers of 1000."""

from __future__ import annotations

import math
import re

__all__ = ["format_size", "parse_size"]

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}  # fmt: skip
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_HINT = "use bytes or e.g. 512MiB, 2GiB"


def parse_size(value: object) -> int:
    """Bytes in `value` (a positive int, or text such as `2GiB`); ValueError naming it else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a size ({_HINT}), got {type(value).__name__}")
    if isinstance(value, int | float):
        number, unit = float(value), 1
    else:
        m = _SIZE.fullmatch(value.strip().lower())
        if m is None or m.group(2) not in _UNITS:
            raise ValueError(f"expected a size ({_HINT}), got {value!r}")
        number, unit = float(m.group(1)), _UNITS[m.group(2)]
    size = number * unit
    if not math.isfinite(size) or not 1 <= size < 2**62:
        raise ValueError(f"a size must be from 1 byte to 4 EiB, got {value!r}")
    return int(size)


def format_size(n: float) -> str:
    """`n` bytes for a message: `1.5 GiB`, `800 MiB`, `12 KiB`, `512 B`."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
