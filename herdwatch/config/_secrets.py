"""The one redaction function of herdwatch, and the registry of secrets it also hides.

`redact(text)` is applied to everything that can reach a person or a file: error lines, log
records, source names (and so JSON, reports and captures), notifications. It hides

* the password of a URL's userinfo, `scheme://user:PASSWORD@host`, up to the *last* `@` of
  the URL (a raw `@`, `:` or `/` inside a password is still the password: a parser that splits
  at the first `@` would print the rest);
* the value of a secret-named parameter: `password=`, `passwd=`, `pwd=`, `token=`,
  `access_token=`, `secret=`, `api_key=`, `signature=` ... as a DSN keyword (`password='a b'`)
  or a URL query parameter (`?access_token=...&`), also written `"password": "..."`;
* credentials of an HTTP header: `Authorization: Bearer ...`, `Basic ...`, `X-Api-Key: ...`;
* every secret herdwatch itself resolved (`register_secret`, called by `resolve_secret`), as
  it is, percent-encoded or escaped, wherever it appears (a driver echoing it back).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote

__all__ = ["MASK", "redact", "register_secret"]

MASK = "***"
# Shorter registered secrets are not searched for: masking every "ab" would garble every
# message, and such a password is no secret anyway.
_MIN_SECRET = 4

_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_WORD = r"[A-Za-z_\-]*(?:password|passwd|pwd|pass|token|secret|api[_\-]?key|signature|sig)"
# `password=...` in a query string ends at `&`, `;` or `#`, and where the URL does in a message:
# at a space, a quote or a closing bracket ("(http://h/?token=abc); see" keeps "); see"). In a
# libpq keyword DSN it ends only at a space.
_QUERY_PARAM = re.compile(rf"(?P<head>[?&;](?i:{_SECRET_WORD})=)(?P<pw>[^&;#\s\"'`<>()\[\]{{}}]*)")
_KEYWORD = re.compile(
    rf"(?P<head>(?<![A-Za-z0-9_\-?&;])(?i:{_SECRET_WORD})\s*=\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|\S+)"
)
_QUOTED_KEY = re.compile(
    rf"(?P<head>([\"'])(?i:{_SECRET_WORD})\2\s*[:=]\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s,}]+)"
)
_HEADER = re.compile(
    r"(?P<head>(?i:\b(?:proxy-)?authorization|\bx-api-key|\bcookie)[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<pw>[^\"'\r\n]*)"
)
_SCHEME_CREDENTIALS = re.compile(
    r"(?P<head>\b(?:Bearer|Basic|Token)\s+)(?P<pw>[A-Za-z0-9._~+/=\-]+)"
)

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make `redact` hide `value` (and its percent-encoded and escaped forms) from now on."""
    if not value or len(value) < _MIN_SECRET:
        return
    forms = {value, quote(value, safe=""), quote(value, safe="@:/"), repr(value)[1:-1]}
    forms.add(value.encode("unicode_escape").decode("ascii"))
    with _lock:
        _secrets.update(f for f in forms if len(f) >= _MIN_SECRET)


def _userinfo(text: str) -> str:
    """Every `scheme://user:pw@` in `text` with pw masked, to the last `@` before the URL ends
    (a raw password may hold `@`, `:`, `/` and even `://`, so when in doubt more is masked: a
    URL glued to this one without a space loses its host from view, never a password)."""
    out: list[str] = []
    pos = 0
    for m in _SCHEME.finditer(text):
        start = m.end()
        if start < pos:
            continue
        end = start
        # ASCII whitespace ends a URL; a no-break space or other Unicode may be in a password
        while end < len(text) and text[end] not in " \t\n\r\f\v":
            end += 1
        run = text[start:end]
        at = run.rfind("@")
        colon = run.find(":", 0, at) if at >= 0 else -1
        if colon < 0:
            continue
        out.append(text[pos : start + colon + 1])
        out.append(MASK)
        pos = start + at
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """`text` with every password, token and registered secret replaced by `***` (see the
    module docstring). Safe on any message; idempotent."""
    if not isinstance(text, str):
        text = str(text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _userinfo(text)
    text = _QUERY_PARAM.sub(rf"\g<head>{MASK}", text)
    text = _QUOTED_KEY.sub(_quoted, text)
    text = _KEYWORD.sub(_keyword, text)
    text = _HEADER.sub(rf"\g<head>{MASK}", text)
    return _SCHEME_CREDENTIALS.sub(rf"\g<head>{MASK}", text)


def _keyword(m: re.Match[str]) -> str:
    return m.group("head") + MASK


def _quoted(m: re.Match[str]) -> str:
    # `"password": "..."` keeps its quotes, so redacted JSON is still JSON.
    pw = m.group("pw")
    quote_char = pw[0] if pw[:1] in ("'", '"') else ""
    return m.group("head") + quote_char + MASK + quote_char
