"""Time zones from config values (`sources.log_timezone`) and log lines' abbreviations."""

from __future__ import annotations

import re
from datetime import tzinfo

__all__ = ["TZ_ABBREVIATIONS", "log_zone", "zone"]

#: hours east of UTC of the zone abbreviations log lines carry (ambiguous ones as most logs
#: mean them: IST India, CST US Central)
TZ_ABBREVIATIONS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "Z": 0, "UT": 0, "WET": 0, "WEST": 1, "BST": 1, "IST": 5.5,
    "CET": 1, "CEST": 2, "MET": 1, "MEST": 2, "EET": 2, "EEST": 3, "MSK": 3,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    "AKST": -9, "AKDT": -8, "HST": -10, "AST": -4, "ADT": -3, "NST": -3.5, "NDT": -2.5,
    "JST": 9, "KST": 9, "HKT": 8, "SGT": 8, "AWST": 8, "ACST": 9.5, "ACDT": 10.5,
    "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13, "PKT": 5, "WIB": 7, "SAST": 2,
}  # fmt: skip


def zone(text: str) -> tzinfo:
    """A zone from a config value: `UTC`, `UTC+5:30`, `+05:30`, `-0500`, an abbreviation of
    `TZ_ABBREVIATIONS`, or an IANA name (`America/New_York`). ValueError otherwise."""
    from datetime import timedelta, timezone
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    t = text.strip()
    body = t[3:] if t.upper().startswith(("UTC", "GMT")) and len(t) > 3 else t
    m = re.fullmatch(r"([+-])(\d{1,2})(?::?(\d{2}))?", body)
    if m is not None:
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        return timezone(timedelta(minutes=minutes if m.group(1) == "+" else -minutes))
    if t.upper() in TZ_ABBREVIATIONS:
        return timezone(timedelta(hours=TZ_ABBREVIATIONS[t.upper()]))
    try:
        return ZoneInfo(t)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {text!r}") from None


def log_zone(text: str | None) -> tzinfo:
    """`sources.log_timezone` as a zone (UTC when unset); the value was checked at load."""
    from datetime import UTC

    return zone(text) if text else UTC
