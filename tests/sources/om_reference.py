"""A straightforward, line-by-line OpenMetrics reader: the definition the vectorized parser in
herdwatch.sources.openmetrics is checked against. Slow and simple on purpose; shares no code
with the parser. Returns {(name, labels): (family, type, [ts...], [value...])} in first-seen
order, or raises RefError(line)."""

from __future__ import annotations

import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LNAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(
    r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[iI][nN][fF]([iI][nN][iI][tT][yY])?"
    r"|[nN][aA][nN])"
)
TYPES = {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset",
         "unknown"}  # fmt: skip
SUFFIXES = {
    "counter": ["_total", "_created"],
    "histogram": ["_bucket", "_count", "_sum", "_created"],
    "gaugehistogram": ["_bucket", "_gcount", "_gsum"],
    "summary": ["_count", "_sum", "_created"],
    "info": ["_info"],
}
ALL_SUFFIXES = ["_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info"]
WS = " \t"
TAIL = re.compile(r"[ \t]+(?P<value>[^ \t]+)?(?:[ \t]+(?P<ts>[^ \t]+))?(?P<tail>.*)", re.S)


class RefError(Exception):
    def __init__(self, line: int, why: str) -> None:
        super().__init__(f"line {line}: {why}")
        self.line = line


def number(tok: str) -> float:
    if not FLOAT.fullmatch(tok):
        raise ValueError(tok)
    return float(tok)


def parse_labels(text: str) -> tuple[dict[str, str], str]:
    """text starts with '{'; returns labels and the rest after '}'."""
    labels: dict[str, str] = {}
    i = 1
    while i < len(text) and text[i] in WS:
        i += 1
    if text[i : i + 1] == "}":
        return labels, text[i + 1 :]
    while True:
        m = LNAME.match(text, i)
        if not m:
            raise ValueError("label name")
        name = m.group()
        i = m.end()
        while i < len(text) and text[i] in WS:
            i += 1
        if text[i : i + 1] != "=":
            raise ValueError("=")
        i += 1
        while i < len(text) and text[i] in WS:
            i += 1
        if text[i : i + 1] != '"':
            raise ValueError('"')
        i += 1
        value = []
        while True:
            if i >= len(text):
                raise ValueError("unterminated")
            c = text[i]
            if c == '"':
                i += 1
                break
            if c == "\\":
                if i + 1 >= len(text):
                    raise ValueError("unterminated")
                nxt = text[i + 1]
                value.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
                i += 2
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise ValueError("duplicate")
        labels[name] = "".join(value)
        while i < len(text) and text[i] in WS:
            i += 1
        if text[i : i + 1] == "}":
            return labels, text[i + 1 :]
        if text[i : i + 1] != ",":
            raise ValueError(",")
        i += 1
        while i < len(text) and text[i] in WS:
            i += 1
        if text[i : i + 1] == "}":
            return labels, text[i + 1 :]


def family_of(name: str, types: dict[str, str]) -> tuple[str, str, str]:
    if name in types:
        t = types[name]
        if t in ("histogram", "gaugehistogram"):
            raise ValueError("bare histogram sample")
        return name, t, ""
    for suffix in ALL_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            base = name[: -len(suffix)]
            if suffix not in SUFFIXES.get(types[base], []):
                raise ValueError("suffix does not fit the type")
            return base, types[base], suffix
    return name, "unknown", ""


def read(
    files: list[bytes],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, str, list[float], list[float]]]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, str, list[float], list[float]]]
    out = {}
    family_types: dict[str, str] = {}
    for raw in files:
        text = raw.decode("utf-8", errors="surrogateescape")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        types: dict[str, str] = {}
        seen: set[str] = set()
        eof = False
        for no, line in enumerate(lines, 1):
            if eof:
                raise RefError(no, "after EOF")
            try:
                if line.startswith("#"):
                    if line == "# EOF":
                        eof = True
                        continue
                    if line.startswith("# EOF"):
                        raise ValueError("bad EOF")
                    if not (line.startswith(("# ", "#\t")) or line == "#"):
                        raise ValueError("comment")
                    parts = [
                        p.decode("utf-8", "surrogateescape")
                        for p in line.encode("utf-8", "surrogateescape")[2:].split(None, 2)
                    ]
                    if parts and parts[0] in ("TYPE", "HELP", "UNIT"):
                        if len(parts) < 2 or not NAME.fullmatch(parts[1]):
                            raise ValueError("metadata name")
                        if parts[0] == "TYPE":
                            if len(parts) < 3:
                                raise ValueError("type")
                            t = parts[2].encode("utf-8", "surrogateescape").strip().decode()
                            t = "unknown" if t == "untyped" else t
                            if t not in TYPES or types.get(parts[1], t) != t:
                                raise ValueError("type")
                            if parts[1] not in types and any(
                                parts[1] + x in seen for x in ["", *ALL_SUFFIXES]
                            ):
                                raise ValueError("TYPE after samples")
                            types[parts[1]] = t
                    continue
                m = NAME.match(line)
                if not m:
                    raise ValueError("name")
                name = m.group()
                rest = line[m.end() :]
                labels: dict[str, str] = {}
                if rest.startswith("{"):
                    labels, rest = parse_labels(rest)
                m = TAIL.fullmatch(rest)
                if m is None or m["value"] is None:
                    raise ValueError("space after key, then a value")
                value = number(m["value"])
                if m["ts"] is None or m["ts"].startswith("#"):
                    raise ValueError("no timestamp")
                ts = number(m["ts"])
                if not re.fullmatch(r"[ \t]*|[ \t]+#[ \t].*", m["tail"], re.S):
                    raise ValueError("after timestamp")
                for v in labels.values():
                    v.encode("utf-8")
                seen.add(name)
                family, t, suffix = family_of(name, types)
                if suffix == "_bucket" and "le" not in labels:
                    raise ValueError("le")
                if t == "summary" and suffix == "" and "quantile" not in labels:
                    raise ValueError("quantile")
                if family_types.setdefault(family, t) != t:
                    raise ValueError("family type conflict")
                if not (abs(ts) <= 1e11):
                    raise ValueError("timestamp")
                if suffix == "_created":
                    continue
                strict = t in ("counter", "histogram", "gaugehistogram") or (
                    t == "summary" and suffix in ("_count", "_sum")
                )
                if strict and not math.isfinite(value):
                    raise ValueError("non-finite")
                key = (name, tuple(sorted((k, v) for k, v in labels.items() if v != "")))
                if key not in out:
                    out[key] = (family, t, [], [])
                series = out[key]
                if series[2] and ts <= series[2][-1]:
                    raise ValueError("order")
                series[2].append(ts)
                series[3].append(value)
            except (ValueError, UnicodeEncodeError) as e:
                raise RefError(no, str(e)) from None
        if not eof:
            raise RefError(max(len(lines), 1), "no EOF")
    return out
