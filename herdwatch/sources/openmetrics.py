"""An exact, vectorized parser for OpenMetrics text as `promtool tsdb create-blocks-from
openmetrics` takes it (timestamped samples ending in `# EOF`).

What it accepts:

* `# HELP`, `# TYPE`, `# UNIT` and the final `# EOF`; any other `# ...` comment is ignored
  (Prometheus text format). `# TYPE` may name the family (OpenMetrics: `# TYPE foo counter`,
  samples `foo_total`) or the full counter name (Prometheus text: `# TYPE foo_total counter`).
  `untyped` is read as `unknown`. A family's samples may be interleaved with other families'
  (a capture written scrape by scrape) or grouped (OpenMetrics order). `# TYPE` must precede
  the family's samples; repeating it unchanged is fine.
* Sample lines `name{labels} value timestamp [# exemplar]`. Label values may hold `\\"`, `\\\\`,
  `\\n` (other escapes are kept verbatim, as Prometheus does), commas, braces and spaces.
  Labels with an empty value are dropped (Prometheus semantics). Fields are separated by spaces
  or tabs; OpenMetrics' single space is the fast path. Exemplars are skipped, not validated.
* Values and timestamps are decimal floats (`1764000000.123`), `NaN`, `+Inf`, `-Inf`.

What it returns: one `Series` per (sample name, label set) with `family`/`type` from `# TYPE`.
`_created` samples are dropped (they restate the counter's start, not data). Gauges, unknown and
summary quantiles keep NaN as a gap (and +-Inf as is); counters, histograms and summary
`_count`/`_sum` reject NaN and Inf.

Errors are `ReplayFormatError(file=, line=)` naming the first offending 1-based line: malformed
lines, a missing `# EOF` or anything after it, a sample without a timestamp, a timestamp that is
not after the series' previous one (also across files, read in order), NaN/Inf timestamps,
timestamps above 1e11 (milliseconds written as seconds; promtool would misread them), NaN/Inf
in counters and histograms, a sample name that does not fit its family's type, and a family
whose type differs between files.

Speed: lines are classified with numpy per 16 MB block (the next blocks are scanned in worker
threads while this one is bookkept); each line's series key is hashed in bulk and grouped (the
grouping is verified byte for byte), values and timestamps that are plain integers or decimals
(`123`, `1764000000.123`) are converted with integer arithmetic on 64-bit words (exactly as
float() would), the others with one `astype(float64)` per block.
Only lines outside the canonical form (comments, escapes, exemplars, NaN, odd spacing) go
through the per-line parser, which is also the definition the fast path is tested against.
"""

from __future__ import annotations

import gzip
import heapq
import itertools
import math
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from herdwatch.errors import ReplayFormatError
from herdwatch.model import Labels, Series

__all__ = ["TRUNCATED_GZIP", "OpenMetricsReader", "parse_openmetrics", "read_openmetrics"]

TYPES = frozenset(
    {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"}
)
# Sample-name suffixes each family type allows (besides the bare family name, see _resolve).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": (),
    "stateset": (),
    "unknown": (),
}
_ALL_SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info")
# Types whose bare family name is itself a valid sample name.
_BARE_OK = frozenset({"counter", "gauge", "summary", "info", "stateset", "unknown"})
# A timestamp above this is in the year 5138 as seconds, or 1973 as milliseconds.
MS_TIMESTAMP_LIMIT = 1e11

_NAME_RE = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LNAME_RE = re.compile(rb"[a-zA-Z_][a-zA-Z0-9_]*")
_FLOAT_RE = re.compile(
    rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))"
)
_WS = b" \t"

_CHUNK = 1 << 24
#: what a `.gz` file whose compressed stream stops short (EOFError from gzip) is told
TRUNCATED_GZIP = "truncated gzip file (it ends before its compressed stream does)"
_PAD = 512
_MAX_KEY = 256
_MAX_NUM = 32
_WORKERS = 2
_AHEAD = 2

_H0 = np.uint64(0x9E3779B97F4A7C15)
_H1 = np.uint64(0xBF58476D1CE4E5B9)
_H2 = np.uint64(0x94D049BB133111EB)
_S29 = np.uint64(29)
_S31 = np.uint64(31)


@dataclass(frozen=True, slots=True)
class _Key:
    """A parsed series key: what a `name{labels}` text means."""

    name: str
    labels: Labels


class _LineError(Exception):
    """Raised by the per-line parser; the caller attaches file and line."""


def _parse_float(tok: bytes, what: str) -> float:
    if not _FLOAT_RE.fullmatch(tok):
        raise _LineError(f"invalid {what} {tok.decode('utf-8', 'replace')!r}")
    return float(tok)


def _skip_ws(b: bytes, i: int) -> int:
    n = len(b)
    while i < n and b[i] in _WS:
        i += 1
    return i


def _parse_key(b: bytes, i: int = 0) -> tuple[_Key, int]:
    """Parse `name[{labels}]` at b[i:]; returns the key and the index after it."""
    m = _NAME_RE.match(b, i)
    if not m:
        raise _LineError("expected a metric name")
    name = m.group().decode()
    i = m.end()
    labels: dict[str, str] = {}
    if i < len(b) and b[i] == ord("{"):
        i = _skip_ws(b, i + 1)
        while True:
            if i < len(b) and b[i] == ord("}"):
                i += 1
                break
            lm = _LNAME_RE.match(b, i)
            if not lm:
                raise _LineError("expected a label name or '}'")
            lname = lm.group().decode()
            i = _skip_ws(b, lm.end())
            if i >= len(b) or b[i] != ord("="):
                raise _LineError(f"expected '=' after label {lname}")
            i = _skip_ws(b, i + 1)
            if i >= len(b) or b[i] != ord('"'):
                raise _LineError(f"expected '\"' to open the value of label {lname}")
            i += 1
            out = bytearray()
            while True:
                if i >= len(b) or b[i] == ord("\n"):
                    raise _LineError(f"unterminated value of label {lname}")
                c = b[i]
                if c == ord('"'):
                    i += 1
                    break
                if c == ord("\\"):
                    if i + 1 >= len(b) or b[i + 1] == ord("\n"):
                        raise _LineError(f"unterminated value of label {lname}")
                    e = b[i + 1]
                    if e == ord("n"):
                        out += b"\n"
                    elif e in b'"\\':
                        out.append(e)
                    else:
                        out += b[i : i + 2]
                    i += 2
                    continue
                out.append(c)
                i += 1
            if lname in labels:
                raise _LineError(f"duplicate label {lname}")
            try:
                labels[lname] = out.decode()
            except UnicodeDecodeError:
                raise _LineError(f"label {lname} is not valid UTF-8") from None
            i = _skip_ws(b, i)
            if i < len(b) and b[i] == ord(","):
                i = _skip_ws(b, i + 1)
                continue
            if i < len(b) and b[i] == ord("}"):
                i += 1
                break
            raise _LineError("expected ',' or '}' in the label set")
    items = tuple(sorted((k, v) for k, v in labels.items() if v != ""))
    return _Key(name, items), i


def _parse_sample(b: bytes) -> tuple[_Key, bytes, float, float]:
    """Parse one sample line (no newline). Returns key, key text, value and timestamp."""
    if not b:
        raise _LineError("empty line (OpenMetrics has none)")
    if b.endswith(b"\r"):
        raise _LineError("line ends in CR (a Windows line ending); OpenMetrics lines end in LF")
    key, i = _parse_key(b)
    keytext = b[:i]
    j = _skip_ws(b, i)
    if j == i:
        raise _LineError("expected a space after the metric name or labels")
    k = j
    while k < len(b) and b[k] not in _WS:
        k += 1
    if k == j:
        raise _LineError("sample without a value")
    value = _parse_float(b[j:k], "value")
    j = _skip_ws(b, k)
    if j == len(b) or b[j] == ord("#"):
        raise _LineError("sample without a timestamp (replay needs one on every sample)")
    if j == k:
        raise _LineError("expected a space before the timestamp")
    k = j
    while k < len(b) and b[k] not in _WS:
        k += 1
    ts = _parse_float(b[j:k], "timestamp")
    j = _skip_ws(b, k)
    if j < len(b):
        if j == k or b[j] != ord("#"):
            raise _LineError(
                f"unexpected text after the timestamp: {b[j:].decode('utf-8', 'replace')!r}"
            )
        if j + 1 >= len(b) or b[j + 1] not in _WS:
            raise _LineError("an exemplar must start with '# '")
    return key, keytext, value, ts


def _resolve(name: str, types: dict[str, str]) -> tuple[str, str, str]:
    """(family, type, suffix) of a sample name given the `# TYPE` table; raises on a mismatch."""
    t = types.get(name)
    if t is not None:
        if t in _BARE_OK:
            return name, t, ""
        raise _LineError(f"sample {name} has no {t} suffix (expected one of {_SUFFIXES[t]})")
    for suffix in _ALL_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            t = types.get(base)
            if t is not None:
                if suffix not in _SUFFIXES[t]:
                    raise _LineError(f"sample {name} does not belong in {t} family {base}")
                return base, t, suffix
    return name, "unknown", ""


class _Acc:
    __slots__ = ("family", "first", "labels", "last_line", "name", "strict", "ts", "type", "vals")

    def __init__(self, name: str, labels: Labels, family: str, type_: str, strict: bool) -> None:
        self.name, self.labels, self.family, self.type, self.strict = (
            name,
            labels,
            family,
            type_,
            strict,
        )
        self.ts: list[npt.NDArray[np.float64]] = []
        self.vals: list[npt.NDArray[np.float64]] = []
        self.last_line = ""
        self.first = (0, 0)


def _first_per_group(groups: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    m = np.ones(len(groups), bool)
    m[1:] = groups[1:] != groups[:-1]
    return m


def _last_per_group(groups: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    m = np.ones(len(groups), bool)
    m[:-1] = groups[1:] != groups[:-1]
    return m


class OpenMetricsReader:
    """Reads one or more OpenMetrics files into series; a series continued across files (in the
    order given) must keep its timestamps strictly increasing."""

    def __init__(self) -> None:
        self._accs: list[_Acc] = []
        self._ids: dict[_Key, int] = {}
        self._last_ts: list[float] = []
        self._family_types: dict[str, tuple[str, str]] = {}
        self._files = 0

    # -- public -----------------------------------------------------------------------------

    def read_file(self, path: Path, *, on_bytes: Callable[[int], None] | None = None) -> None:
        """Parse `path` (`.gz` is decompressed); `on_bytes(n)` reports file bytes consumed."""
        with open(path, "rb") as raw:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(fileobj=raw) as gz:
                    self._read_stream(gz, str(path), raw, on_bytes)
            else:
                self._read_stream(raw, str(path), raw, on_bytes)

    def read_bytes(self, data: bytes, *, file: str = "<text>", block_size: int = _CHUNK) -> None:
        """Parse OpenMetrics text held in memory, cut into blocks of `block_size` bytes."""
        blocks = (data[i : i + block_size] for i in range(0, len(data), block_size))
        self._parse_blocks(blocks, file)

    def series(self) -> list[Series]:
        out = []
        for a in sorted(self._accs, key=lambda a: a.first):
            if not a.ts:
                continue
            ts = a.ts[0] if len(a.ts) == 1 else np.concatenate(a.ts)
            vs = a.vals[0] if len(a.vals) == 1 else np.concatenate(a.vals)
            out.append(Series(a.name, a.labels, ts, vs, family=a.family, type=a.type))
        return out

    def check_histograms(self) -> None:
        """ReplayFormatError naming file:line for a histogram without its `+Inf` bucket: no
        quantile can be computed from it, so its findings would silently disappear."""
        with_inf: set[tuple[str, Labels]] = set()
        buckets: dict[tuple[str, Labels], _Acc] = {}
        for a in self._accs:
            if a.type != "histogram" or not a.name.endswith("_bucket") or not a.ts:
                continue
            le = dict(a.labels).get("le")
            rest = tuple(kv for kv in a.labels if kv[0] != "le")
            key = (a.name, rest)
            buckets.setdefault(key, a)
            if le is not None and le in ("+Inf", "Inf", "inf", "+inf"):
                with_inf.add(key)
        for key, a in buckets.items():
            if key not in with_inf:
                file, _, line = a.last_line.rpartition(":")
                raise ReplayFormatError(
                    f'histogram {a.family} has no le="+Inf" bucket for '
                    f"{_show(a).replace(a.name, a.family, 1)} (OpenMetrics requires one; "
                    "without it no quantile can be computed)",
                    file=file or None,
                    line=int(line) if line.isdigit() else None,
                )

    # -- reading ----------------------------------------------------------------------------

    def _read_stream(
        self,
        fh: BinaryIO | gzip.GzipFile,
        file: str,
        raw: BinaryIO,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        def blocks() -> Iterator[bytes]:
            done = 0
            while True:
                block = fh.read(_CHUNK)
                if on_bytes is not None:
                    pos = raw.tell()
                    on_bytes(pos - done)
                    done = pos
                if not block:
                    return
                yield block

        try:
            self._parse_blocks(blocks(), file)
        except EOFError:
            raise ReplayFormatError(TRUNCATED_GZIP, file=file) from None
        except (OSError, zlib.error) as e:
            raise ReplayFormatError(f"cannot read: {e}", file=file) from None

    def _parse_blocks(self, blocks: Iterable[bytes], file: str) -> None:
        self._files += 1
        st = _FileState(file, self._files)
        # The vectorized scans of the next blocks (numpy releases the GIL) overlap the
        # sequential bookkeeping of this one; at most _AHEAD blocks are held in memory.
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            pending: deque[Future[_Block]] = deque()
            try:
                for piece in _whole_lines(blocks):
                    for part in _parts(piece):
                        pending.append(pool.submit(_scan, part))
                        if len(pending) > _AHEAD:
                            self._chunk(st, pending.popleft().result())
            except _LongLine:
                # the long line follows every line handed over: count them by parsing them
                while pending:
                    self._chunk(st, pending.popleft().result())
                raise ReplayFormatError(_LONG_LINE, file=file, line=st.lines + 1) from None
            while pending:
                self._chunk(st, pending.popleft().result())
        if st.eof_line is None:
            last = max(st.lines, 1)
            what = "empty file" if st.lines == 0 else "missing '# EOF' at the end"
            raise ReplayFormatError(f"{what} (is the file truncated?)", file=file, line=last)

    def _chunk(self, st: _FileState, blk: _Block) -> None:
        """Sequential part for one block: comments, key -> series, slow lines, checks.

        Everything whose meaning depends on what came before (a `# TYPE` line, the first
        sight of a series, a line for the per-line parser) is handled in line order."""
        line0 = st.lines
        st.lines += len(blk.ends)
        if st.eof_line is not None:
            raise ReplayFormatError("content after '# EOF'", file=st.file, line=line0 + 1)
        data, starts, ends, fast = blk.data, blk.starts, blk.ends, blk.fast
        errors: list[tuple[int, str]] = []  # (0-based line index in block, message)

        key_sid = np.empty(len(blk.keys), np.intp)
        new_keys = []
        for u, kb in enumerate(blk.keys):
            sid = st.key_ids.get(kb)
            if sid is None:
                new_keys.append(u)
            else:
                key_sid[u] = sid
        # Work in line order: slow lines, and the first line of each key not seen before.
        queue: list[tuple[int, int]] = [(i, -1) for i in blk.slow.tolist()]
        if new_keys:
            first = np.full(len(blk.keys), len(starts), np.intp)
            np.minimum.at(first, blk.inv, fast)
            queue += [(int(first[u]), u) for u in new_keys]
        heapq.heapify(queue)
        to_slow = np.zeros(len(blk.keys), bool)
        slow_idx: list[int] = []
        slow_sid: list[int] = []
        slow_val: list[float] = []
        slow_ts: list[float] = []
        eof_i: int | None = None
        while queue:
            i, u = heapq.heappop(queue)
            if eof_i is not None:
                errors.append((i, "content after '# EOF'"))
                break
            try:
                if u >= 0:
                    kb = blk.keys[u]
                    try:
                        key, end = _parse_key(kb)
                        clean = end == len(kb)
                    except _LineError:
                        clean = False
                    if clean:
                        key_sid[u] = sid = self._series_id(st, key)
                        st.key_ids[kb] = sid
                    else:
                        # Odd spacing or junk: the per-line parser accepts or rejects them.
                        to_slow[u] = True
                        for j in fast[blk.inv == u].tolist():
                            heapq.heappush(queue, (j, -1))
                    continue
                if ends[i] - starts[i] > MAX_LINE_BYTES:
                    # Only here: a fast-path line is at most _MAX_KEY + 2 * _MAX_NUM + 2 bytes.
                    raise _LineError(_LONG_LINE)
                line = bytes(data[starts[i] : ends[i]])
                if line[:1] == b"#":
                    if self._comment(st, line):
                        eof_i = i
                        st.eof_line = line0 + i + 1
                    continue
                key, keytext, value, ts = _parse_sample(line)
                sid = st.key_ids.get(keytext)
                if sid is None:
                    sid = self._series_id(st, key)
                    st.key_ids[keytext] = sid
            except _LineError as e:
                errors.append((i, str(e)))
                break
            slow_idx.append(i)
            slow_sid.append(sid)
            slow_val.append(value)
            slow_ts.append(ts)

        values, stamps = blk.values, blk.stamps
        if new_keys:
            if to_slow.any():
                keep = ~to_slow[blk.inv]
                fast, values, stamps = fast[keep], values[keep], stamps[keep]
                sid_fast = key_sid[blk.inv[keep]]
            else:
                sid_fast = key_sid[blk.inv]
            if errors:
                # Keys after the first error were never resolved: drop their lines.
                seen = fast < min(errors)[0]
                fast, sid_fast, values, stamps = (
                    fast[seen],
                    sid_fast[seen],
                    values[seen],
                    stamps[seen],
                )
        else:
            sid_fast = key_sid[blk.inv]
        if eof_i is not None and len(fast) and fast[-1] > eof_i:
            errors.append((int(fast[np.searchsorted(fast, eof_i)]), "content after '# EOF'"))

        if slow_idx:
            idx = np.concatenate([fast, np.asarray(slow_idx, np.intp)])
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
            sids = np.concatenate([sid_fast, np.asarray(slow_sid, np.intp)])[order]
            vals = np.concatenate([values, np.asarray(slow_val, np.float64)])[order]
            tss = np.concatenate([stamps, np.asarray(slow_ts, np.float64)])[order]
        else:
            idx, sids, vals, tss = fast, sid_fast, values, stamps
        self._check_and_store(st, line0, idx, sids, vals, tss, errors)

    def _comment(self, st: _FileState, line: bytes) -> bool:
        """Handle a `#` line; True when it is `# EOF`."""
        if line == b"# EOF":
            return True
        if line.startswith(b"# EOF"):
            raise _LineError("malformed '# EOF' line")
        if not line.startswith((b"# ", b"#\t")) and line != b"#":
            raise _LineError("a comment must start with '# '")
        parts = line[2:].split(None, 2)
        if not parts or parts[0] not in (b"TYPE", b"HELP", b"UNIT"):
            return False
        if len(parts) < 2 or not _NAME_RE.fullmatch(parts[1]):
            raise _LineError(f"# {parts[0].decode()} needs a metric name")
        if parts[0] != b"TYPE":
            return False
        if len(parts) < 3:
            raise _LineError("# TYPE needs a type")
        name, t = parts[1].decode(), parts[2].strip().decode("utf-8", "replace")
        if t == "untyped":
            t = "unknown"
        if t not in TYPES:
            raise _LineError(f"unknown metric type {t!r} (one of {', '.join(sorted(TYPES))})")
        old = st.types.get(name)
        if old is not None and old != t:
            raise _LineError(f"# TYPE {name} {t} conflicts with an earlier # TYPE {name} {old}")
        if old is None and any(name + x in st.names for x in ("", *_ALL_SUFFIXES)):
            # A repeated # TYPE (a capture written scrape by scrape) changes nothing; a new
            # one would change what earlier samples meant.
            raise _LineError(f"# TYPE {name} comes after samples of {name} (metadata goes first)")
        st.types[name] = t
        return False

    def _series_id(self, st: _FileState, key: _Key) -> int:
        """The series id for a parsed key (-1: a sample herdwatch drops, such as `_created`)."""
        st.names.add(key.name)
        family, t, suffix = _resolve(key.name, st.types)
        if suffix == "_bucket" and not any(k == "le" for k, _ in key.labels):
            raise _LineError(f"histogram bucket {key.name} without an 'le' label")
        if t == "summary" and not suffix and not any(k == "quantile" for k, _ in key.labels):
            raise _LineError(f"summary sample {key.name} without a 'quantile' label")
        prev = self._family_types.get(family)
        if prev is not None and prev[0] != t:
            raise _LineError(f"family {family} is {t} here but {prev[0]} in {prev[1]}")
        self._family_types.setdefault(family, (t, st.file))
        if suffix == "_created":
            return -1
        sid = self._ids.get(key)
        if sid is None:
            strict = t in ("counter", "histogram", "gaugehistogram") or (
                t == "summary" and suffix in ("_count", "_sum")
            )
            sid = len(self._accs)
            self._ids[key] = sid
            self._accs.append(_Acc(key.name, key.labels, family, t, strict))
            self._last_ts.append(-math.inf)
        return sid

    def _check_and_store(
        self,
        st: _FileState,
        line0: int,
        idx: npt.NDArray[np.intp],
        sids: npt.NDArray[np.intp],
        vals: npt.NDArray[np.float64],
        tss: npt.NDArray[np.float64],
        errors: list[tuple[int, str]],
    ) -> None:
        """Check timestamps and values of one block's samples (line `idx`, series `sids`),
        then append them to their series. Raises the error of the first offending line."""
        file = st.file

        def first_bad(mask: npt.NDArray[np.bool_]) -> int:
            cand = np.flatnonzero(mask)
            return int(cand[np.argmin(idx[cand])])

        # One comparison catches NaN, +-Inf and millisecond timestamps alike.
        ts_ok = np.abs(tss) <= MS_TIMESTAMP_LIMIT
        if not ts_ok.all():
            k = first_bad(~ts_ok)
            if np.isfinite(tss[k]):
                msg = (
                    f"timestamp {tss[k]:.17g} looks like milliseconds; OpenMetrics timestamps "
                    "are seconds (promtool would silently misread it)"
                )
            else:
                msg = f"timestamp {float(tss[k])!r} is not a finite number"
            errors.append((int(idx[k]), msg))
        finite = np.isfinite(vals)
        if not finite.all() and self._accs:
            strict = np.fromiter((a.strict for a in self._accs), bool, len(self._accs))
            bad = ~finite & (sids >= 0)
            bad[bad] = strict[sids[bad]]
            if bad.any():
                k = first_bad(bad)
                a = self._accs[sids[k]]
                errors.append(
                    (int(idx[k]), f"{float(vals[k])!r} value in {a.type} {a.name}: must be finite")
                )

        # Group by series, keeping file order inside each (a stable radix sort on small ints).
        if len(sids) and sids.min() < 0:
            keep = sids >= 0
            idx, sids, vals, tss = idx[keep], sids[keep], vals[keep], tss[keep]
        small = sids.astype(np.int16 if len(self._accs) < 2**15 else np.int32)
        order = np.argsort(small, kind="stable")
        s_sid, s_ts, s_idx, s_val = sids[order], tss[order], idx[order], vals[order]
        if len(s_sid):
            group_start = _first_per_group(s_sid)
            prev_ts = np.empty_like(s_ts)
            prev_ts[1:] = s_ts[:-1]
            prev_ts[group_start] = np.asarray(self._last_ts)[s_sid[group_start]]
            back = s_ts <= prev_ts
            if back.any():
                cand = np.flatnonzero(back)
                k = int(cand[np.argmin(s_idx[cand])])
                a = self._accs[s_sid[k]]
                where = a.last_line if group_start[k] else f"{file}:{line0 + int(s_idx[k - 1]) + 1}"
                word = "repeats" if s_ts[k] == prev_ts[k] else "goes back from"
                errors.append(
                    (
                        int(s_idx[k]),
                        f"timestamp {s_ts[k]:.17g} {word} {prev_ts[k]:.17g} ({where}) "
                        f"in series {_show(a)}",
                    )
                )
        if errors:
            i, msg = min(errors, key=lambda e: e[0])
            raise ReplayFormatError(msg, file=file, line=line0 + i + 1)
        if not len(s_sid):
            return
        bounds = [*np.flatnonzero(group_start).tolist(), len(s_sid)]
        for a0, a1 in itertools.pairwise(bounds):
            sid = int(s_sid[a0])
            acc = self._accs[sid]
            if not acc.ts:
                acc.first = (st.ordinal, line0 + int(s_idx[a0]))
            acc.ts.append(s_ts[a0:a1])
            acc.vals.append(s_val[a0:a1])
            self._last_ts[sid] = float(s_ts[a1 - 1])
            acc.last_line = f"{file}:{line0 + int(s_idx[a1 - 1]) + 1}"


@dataclass(slots=True)
class _FileState:
    file: str
    ordinal: int
    lines: int = 0
    eof_line: int | None = None
    eof_index: int | None = None
    types: dict[str, str] = field(default_factory=dict)
    key_ids: dict[bytes, int] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # sample names seen in this file


def _show(a: _Acc) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in a.labels)
    return f"{a.name}{{{inner}}}" if inner else a.name


@dataclass(slots=True)
class _Block:
    """The vectorized scan of a block of whole lines (see _scan)."""

    data: bytearray  # the lines, then _PAD zero bytes
    starts: npt.NDArray[np.intp]
    ends: npt.NDArray[np.intp]
    slow: npt.NDArray[np.intp]  # lines for the per-line parser (comments, odd lines), sorted
    fast: npt.NDArray[np.intp]  # the other lines, sorted
    values: npt.NDArray[np.float64]
    stamps: npt.NDArray[np.float64]
    keys: list[bytes]  # distinct key texts (`name{labels}`) of the fast lines
    key_first: npt.NDArray[np.intp]  # per key, its first position in `fast`
    inv: npt.NDArray[np.intp]  # per fast line, its key


_EMPTY_B = np.zeros(0, bool)
_EMPTY_I = np.zeros(0, np.intp)
# SWAR integer parsing (see _digits8): a field of n digits is shifted to the top of its word
# and the bottom filled with '0', so every word holds exactly 8 digits.
_ZEROS = np.uint64(0x3030303030303030)
_SIXES = np.uint64(0x0606060606060606)
_NIBBLE_HI = np.uint64(0xF0F0F0F0F0F0F0F0)
_NIBBLE_LO = np.uint64(0x0F0F0F0F0F0F0F0F)
_LANES16 = np.uint64(0x00FF00FF00FF00FF)
_LANES32 = np.uint64(0x0000FFFF0000FFFF)
_M1, _M2, _M3 = np.uint64(10 * 256 + 1), np.uint64(100 * 65536 + 1), np.uint64(10000 * 2**32 + 1)
_SH8, _SH16, _SH32 = np.uint64(8), np.uint64(16), np.uint64(32)
_SHIFT = np.array([0] + [8 * (8 - n) for n in range(1, 9)], np.uint64)
_FILL = np.array([0x3030303030303030] + [0x3030303030303030 & ((1 << 8 * (8 - n)) - 1)
                                         for n in range(1, 9)], np.uint64)  # fmt: skip
_POW10U = np.array([10**n for n in range(17)], np.uint64)
_POW10F = np.array([float(10**n) for n in range(17)], np.float64)  # exact: 10**n, n <= 22
_EXACT = np.uint64(2**53)
_DOT = 46  # b"."
_EMPTY_F = np.zeros(0, np.float64)
_WORD_MASKS = np.array([(1 << (8 * v)) - 1 for v in range(9)], np.uint64)
# _MASKS[n, c]: the bytes of word c that lie within the first n bytes (little-endian words).
_MASKS = _WORD_MASKS[np.clip(np.arange(_MAX_KEY + 1)[:, None] - 8 * np.arange(_MAX_KEY // 8), 0, 8)]
# Random odd multipliers for the linear word hash of keys (collisions are caught anyway):
# `np.random.default_rng(0x4E52).integers(1, 2**63, _MAX_KEY // 8, dtype=np.uint64) | 1`, written
# out because importing numpy.random costs a replay ~5 ms (tests/sources/test_openmetrics.py
# checks the table against that expression).
_HASH_MULT = np.array([
    0x5C8447E34798578D, 0x1122606AC9BF61F3, 0x30A9625D7C88CCD3, 0x3B333C17C8FCB419,
    0x18E0739E0A431B1D, 0x444077560CC82B5B, 0x40A3BC1ED8EEF3A7, 0x751CB305B96443D3,
    0x30AE5C1EDFCE2CD9, 0x21AF7844567C1A9D, 0x3F630EC43983B127, 0x5B6DD6C64DD1BC47,
    0x1D6B03C2D5F720BD, 0x5309F14AD98862BB, 0x147F3A85B8246FB9, 0x3AF3EC39C8F8D441,
    0x1527C307CC3D5203, 0x6DFEBD7648CB9AB3, 0x4C4BA18085F74F73, 0x626C04F5B273031B,
    0x3C65989CEA47AD65, 0x1F9272C294258E31, 0x0C7A2582A75CBD9B, 0x342EAEA12D52B069,
    0x1AC152DEF8E7E299, 0x14E9A41E00CB7259, 0x1FB3D3BD7F69FE23, 0x6EBEF8B2963E607F,
    0x1B0D5ED6D0A97055, 0x0A1015B36F4EB9DD, 0x61BE68FE5F945693, 0x0EF2EEFDEFDC0975,
], np.uint64)  # fmt: skip
_HI_BITS = np.uint64(0x8080808080808080)
_LO_BITS = np.uint64(0x0101010101010101)
_UNDERSCORES = np.uint64(0x5F5F5F5F5F5F5F5F)
# Every byte but the ones that send a line to the per-line parser: control bytes other than
# newline (a NUL would look like the fast path's padding), `#` (comments, exemplars), `\\`
# (escapes) and DEL.
_ORDINARY = bytes(b for b in range(256) if not ((b < 32 and b != 10) or b in b"#\\\x7f"))
# Up to this many such bytes in a block are located with bytes.find (a pass per distinct byte)
_FEW = 4096


def _find_all(data: bytearray, chars: bytes | bytearray, end: int) -> list[int]:
    """Every position in `data[:end]` of a byte of `chars`."""
    out = []
    for c in set(chars):
        needle = bytes((c,))
        i = data.find(needle, 0, end)
        while i >= 0:
            out.append(i)
            i = data.find(needle, i + 1, end)
    return out


#: a longer line (newline excluded) is refused, naming its file:line; one without a newline
#: is refused before it is held in memory whole
MAX_LINE_BYTES = 1 << 20
_LONG_LINE = f"line longer than {MAX_LINE_BYTES} bytes (is this OpenMetrics text?)"


class _LongLine(Exception):
    """The line after every line yielded so far is too long (its number is counted by whoever
    parsed those: counting newlines here cost a pass over every byte)."""


#: whole lines `data[lo:hi]`: a block as read, never copied to cut it
_Piece = tuple[bytes, int, int]


def _whole_lines(blocks: Iterable[bytes]) -> Iterator[_Piece]:
    """The blocks' whole lines, as ranges of the blocks themselves: a line cut by a block's end
    is the next piece's head (that line alone is copied), not a copy of the whole block."""
    carry = b""
    for block in blocks:
        lo = 0
        if carry:
            first = block.find(b"\n")
            if first < 0:
                carry += block
                if len(carry) > MAX_LINE_BYTES:
                    raise _LongLine
                continue
            head = carry + block[: first + 1]
            carry = b""
            yield head, 0, len(head)
            lo = first + 1
        cut = block.rfind(b"\n", lo)
        if cut >= lo:
            yield block, lo, cut + 1
            lo = cut + 1
        carry = block[lo:] if lo else block
        if len(carry) > MAX_LINE_BYTES:
            raise _LongLine
    if carry:
        yield carry + b"\n", 0, len(carry) + 1


#: a block at least this long is scanned in `_WORKERS` parts at once (a file of one block, a
#: bundled incident's 12 MB, would otherwise keep one worker busy and the other idle)
_SPLIT = 1 << 21


def _parts(piece: _Piece) -> list[_Piece]:
    """`piece` cut at line ends into `_WORKERS` parts of about equal length."""
    data, lo, hi = piece
    if hi - lo < _SPLIT:
        return [piece]
    cuts = [lo]
    for k in range(1, _WORKERS):
        cut = data.rfind(b"\n", cuts[-1], lo + (hi - lo) * k // _WORKERS) + 1
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(hi)
    return [(data, a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _scan(piece: _Piece) -> _Block:
    """Classify the lines of `piece` (whole lines) with numpy. A canonical sample line is
    `key value timestamp` where value and timestamp are the last two space-separated fields
    (label values may hold spaces; numbers cannot) and hold plain decimals."""
    block, lo, hi = piece
    n = hi - lo
    # the lines' one copy: zero-padded (the bulk readers read past a line's end), and numpy's
    # view of the same bytes
    data = bytearray(n + _PAD)
    data[:n] = memoryview(block)[lo:hi]
    buf = np.frombuffer(data, np.uint8)
    u = buf[:n]
    ends = np.flatnonzero(u == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    slow = ends == starts
    # Bytes that need the per-line parser are rare: see which there are (one C pass that
    # deletes every ordinary byte) before locating them, one by one when they are few (the
    # comments and `# EOF` of a capture: a numpy pass over the block costs more).
    rare = data.translate(None, _ORDINARY)[:-_PAD]  # the padding's zeros are not ordinary
    if len(rare) > _FEW:
        special = np.flatnonzero(((u < 32) & (u != 10)) | (u == 35) | (u == 92) | (u == 127))
        slow[np.searchsorted(ends, special)] = True
    elif rare:
        slow[np.searchsorted(ends, _find_all(data, rare, n))] = True
    sp = np.concatenate([np.array([-3, -2], np.intp), np.flatnonzero(u == 32)])
    j = np.searchsorted(sp, ends)
    s2 = sp[j - 1]  # the last space of the line
    s1 = sp[j - 2]  # the one before
    klen = s1 - starts
    vlen = s2 - s1 - 1
    tlen = ends - s2 - 1
    ok = ~slow & (s1 > starts) & (vlen > 0) & (tlen > 0)
    ok &= (klen <= _MAX_KEY) & (vlen <= _MAX_NUM) & (tlen <= _MAX_NUM)
    fast = np.flatnonzero(ok)
    values, ok_v = _bulk_floats(buf, s1[fast] + 1, vlen[fast], dedupe=False)
    stamps, ok_t = _bulk_floats(buf, s2[fast] + 1, tlen[fast], dedupe=True)
    good = ok_v & ok_t
    if not good.all():
        fast, values, stamps = fast[good], values[good], stamps[good]
        ok[:] = False
        ok[fast] = True
    keys, key_first, inv = _group_keys(buf, starts[fast], klen[fast])
    return _Block(
        data, starts, ends, np.flatnonzero(~ok), fast, values, stamps, keys, key_first, inv
    )


def _group_keys(
    buf: npt.NDArray[np.uint8], kstart: npt.NDArray[np.intp], klen: npt.NDArray[np.intp]
) -> tuple[list[bytes], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Distinct key texts, a row holding each and each row's key. Keys are hashed in bulk as
    64-bit words; every row is then compared word for word with its key's row, and a
    collision falls back to an exact (slower) grouping."""
    if len(kstart) == 0:
        return [], _EMPTY_I, _EMPTY_I
    nw = int((klen.max() + 7) // 8)
    words = sliding_window_view(buf, 8 * nw)[kstart].view(np.uint64)
    words &= _MASKS[klen, :nw]
    h = words @ _HASH_MULT[:nw] + klen.astype(np.uint64)
    # The distinct hashes of every 32nd row usually cover the block (series repeat all through
    # it, interleaved or in runs); sort all of them only when they do not.
    uniq = np.unique(h[::32])
    inv = np.minimum(np.searchsorted(uniq, h), len(uniq) - 1)
    if not (uniq[inv] == h).all():
        uniq = np.unique(h)
        inv = np.searchsorted(uniq, h)
    rep = np.empty(len(uniq), np.intp)
    rep[inv] = np.arange(len(h))
    if not (words == words[rep[inv]]).all():
        _, rep, inv = np.unique(
            words.view(f"V{8 * nw}").ravel(), return_index=True, return_inverse=True
        )
        inv = inv.reshape(-1)
    raw = words.view(np.uint8)
    keys = [raw[r, : klen[r]].tobytes() for r in rep.tolist()]
    return keys, rep, inv


def _bulk_floats(
    buf: npt.NDArray[np.uint8],
    start: npt.NDArray[np.intp],
    length: npt.NDArray[np.intp],
    *,
    dedupe: bool,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Convert the decimal fields buf[start:start+length] at once; `ok` is False for fields
    that are not plain decimal numbers (those go to the per-line parser). With `dedupe`, a
    field equal to the one before it (timestamps of a capture written scrape by scrape) is
    copied rather than converted again."""
    if len(start) == 0:
        return _EMPTY_F, np.zeros(0, bool)
    width = max(16, int((length.max() + 7) // 8 * 8))  # _bulk_decimals reads 16 bytes a row
    mat = sliding_window_view(buf, width)[start]
    words = mat.view(np.uint64)
    words &= _MASKS[length, : width // 8]
    strings = mat.view(f"S{width}").reshape(-1)
    # Plain integers (counter values, whole-second timestamps) and plain decimals (gauges,
    # timestamps with milliseconds) are converted with integer arithmetic on the words; numpy's
    # string cast (one Python float() each, holding the GIL) is left for the rest.
    ints, converted = _bulk_ints(words, length)
    out = np.where(converted, ints, 0.0)
    ok = converted.copy()
    other = np.flatnonzero(~converted)
    if len(other):
        decimals, is_dec = _bulk_decimals(buf, start[other], length[other], mat[other])
        out[other] = decimals
        ok[other] = converted[other] = is_dec
        other = other[~is_dec]
    if len(other):
        # numpy converts with Python's float(): the same correctly rounded routine, and the
        # same grammar as _FLOAT_RE once whitespace (never in a field), `_` and non-ASCII are
        # excluded. Both are found word-wise: a high bit, or a zero byte after xor with "_".
        w = words[other]
        x = w ^ _UNDERSCORES
        bad = (w & _HI_BITS) | ((x - _LO_BITS) & ~x & _HI_BITS)
        ok[other] = ~bad.any(axis=1)
    rows = ok & ~converted
    same = _EMPTY_B
    if dedupe and len(start) > 1 and rows.mean() > 0.5:
        same = np.zeros(len(start), bool)
        same[1:] = (words[1:] == words[:-1]).all(axis=1)
        if same.mean() > 0.5:
            rows &= ~same
        else:
            same = _EMPTY_B
    try:
        out[rows] = strings[rows].astype(np.float64)
    except ValueError:
        for i in np.flatnonzero(rows).tolist():
            s = bytes(strings[i])
            if _FLOAT_RE.fullmatch(s):
                out[i] = float(s)
            else:
                ok[i] = False
    if len(same):
        # Copies carry the converted value (or the rejection) of the row they repeat.
        src = np.where(~same, np.arange(len(start)), 0)
        np.maximum.accumulate(src, out=src)
        out = out[src]
        ok = ok[src]
    return out, ok


def _digits8(w: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """Value of 8 ASCII digits per word (first digit in the lowest byte) and whether all 8
    bytes are digits (SWAR: three multiply-shift steps combine pairs, quads, octets)."""
    ok = ((w & _NIBBLE_HI) == _ZEROS) & (((w + _SIXES) & _NIBBLE_HI) == _ZEROS)
    v = w & _NIBBLE_LO
    v = (v * _M1) >> _SH8
    v = ((v & _LANES16) * _M2) >> _SH16
    v = ((v & _LANES32) * _M3) >> _SH32
    return v, ok


def _uints(
    words: npt.NDArray[np.uint64], length: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """Fields of 0 to 16 ASCII digits (the bytes past `length` zeroed), as integers."""
    n0 = np.minimum(length, 8)
    w0 = (words[:, 0] << _SHIFT[n0]) | _FILL[n0]
    v, ok = _digits8(w0)
    if words.shape[1] > 1:
        n1 = np.clip(length - 8, 0, 8)
        v1, ok1 = _digits8((words[:, 1] << _SHIFT[n1]) | _FILL[n1])
        v = v * _POW10U[n1] + v1
        ok &= ok1
    ok &= length <= 16
    return v, ok


def _bulk_ints(
    words: npt.NDArray[np.uint64], length: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Fields of 1 to 16 ASCII digits below 2**53 (exact as float64), converted as integers."""
    v, ok = _uints(words, length)
    ok &= v < _EXACT
    return v.astype(np.float64), ok


def _bulk_decimals(
    buf: npt.NDArray[np.uint8],
    start: npt.NDArray[np.intp],
    length: npt.NDArray[np.intp],
    mat: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Fields `digits.digits` (either side may be empty, not both; `mat` holds each field's
    bytes, zeroed past its length, at least 16 a row) with at most 16 digits that, read as one
    integer m, stay below 2**53: with f digits after the point the value is m / 10**f, and that
    is exactly float(field) (m and 10**f are exact doubles and IEEE division rounds once,
    correctly: Clinger's fast path). `ok` is False for every other field (0.0 in the values)."""
    point = (mat == _DOT).argmax(axis=1)  # the first point, or 0 when there is none
    ok = (mat[np.arange(len(mat)), point] == _DOT) & (length >= 2) & (length <= 17)
    point = np.where(ok, point, 0)
    frac = np.where(ok, length - point - 1, 0)
    # The digits before the point are the field's first bytes; a second point after it is not
    # a digit, so the fraction's digit check rejects it.
    whole, ok_w = _uints(mat[:, :16].view(np.uint64) & _MASKS[point, :2], point)
    after = sliding_window_view(buf, 16)[start + point + 1].view(np.uint64)
    part, ok_p = _uints(after & _MASKS[frac, :2], frac)
    digits = whole * _POW10U[frac] + part
    ok &= ok_w & ok_p & (digits < _EXACT)
    return np.where(ok, digits.astype(np.float64) / _POW10F[frac], 0.0), ok


def read_openmetrics(paths: Path | Iterable[Path]) -> list[Series]:
    """Parse one OpenMetrics file (or several, merged in order) into series."""
    reader = OpenMetricsReader()
    for p in [paths] if isinstance(paths, Path) else paths:
        reader.read_file(p)
    return reader.series()


def parse_openmetrics(text: str | bytes, *, file: str = "<text>") -> list[Series]:
    """Parse OpenMetrics text held in memory (it must end with `# EOF`)."""
    reader = OpenMetricsReader()
    reader.read_bytes(text.encode() if isinstance(text, str) else text, file=file)
    return reader.series()
