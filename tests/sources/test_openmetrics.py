"""The OpenMetrics parser: formats, every error with its file:line, and property tests against
the straightforward reference reader in om_reference.py."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herdwatch.errors import ReplayFormatError
from herdwatch.model import Series
from herdwatch.sources.openmetrics import OpenMetricsReader, parse_openmetrics, read_openmetrics
from tests.sources import om_reference as ref

T0 = 1764000000


def by_key(series: list[Series]) -> dict[tuple[str, tuple[tuple[str, str], ...]], Series]:
    return {(s.name, s.labels): s for s in series}


def error_of(text: str, file: str = "m.om") -> str:
    with pytest.raises(ReplayFormatError) as exc:
        parse_openmetrics(text, file=file)
    return str(exc.value)


def test_counter_gauge_histogram_summary_families() -> None:
    text = f"""# HELP http_requests_total Requests.
# TYPE http_requests counter
# UNIT http_requests requests
http_requests_total{{code="200"}} 10 {T0}
http_requests_created{{code="200"}} {T0 - 100} {T0}
http_requests_total{{code="200"}} 12 {T0 + 1}
# TYPE db_query_duration_seconds histogram
db_query_duration_seconds_bucket{{le="0.1"}} 3 {T0}
db_query_duration_seconds_bucket{{le="+Inf"}} 4 {T0}
db_query_duration_seconds_count 4 {T0}
db_query_duration_seconds_sum 0.25 {T0}
# TYPE pg_stat_activity_count gauge
pg_stat_activity_count{{state="idle in transaction",datname="app"}} 5 {T0}.5
# TYPE rpc summary
rpc{{quantile="0.99"}} NaN {T0}
rpc_count 7 {T0}
rpc_sum 1.5 {T0}
# EOF
"""
    series = by_key(parse_openmetrics(text))
    hits = series[("http_requests_total", (("code", "200"),))]
    assert (hits.family, hits.type) == ("http_requests", "counter")
    assert hits.timestamps.tolist() == [T0, T0 + 1]
    assert hits.values.tolist() == [10.0, 12.0]
    assert not any(name.endswith("_created") for name, _ in series)
    bucket = series[("db_query_duration_seconds_bucket", (("le", "+Inf"),))]
    assert (bucket.family, bucket.type, bucket.values.tolist()) == (
        "db_query_duration_seconds", "histogram", [4.0]
    )  # fmt: skip
    assert series[("db_query_duration_seconds_sum", ())].family == "db_query_duration_seconds"
    act = series[("pg_stat_activity_count", (("datname", "app"), ("state", "idle in transaction")))]
    assert act.timestamps.tolist() == [T0 + 0.5]
    q = series[("rpc", (("quantile", "0.99"),))]
    assert q.type == "summary" and math.isnan(q.values[0])


def test_type_may_repeat_unchanged_between_scrapes() -> None:
    scrape = "# TYPE g gauge\ng {} {}\n"
    text = scrape.format(1, T0) + scrape.format(2, T0 + 1) + "# EOF\n"
    (s,) = parse_openmetrics(text)
    assert s.values.tolist() == [1.0, 2.0]


def test_prometheus_text_variant_type_names_the_counter() -> None:
    text = f"# TYPE redis_keyspace_hits_total counter\nredis_keyspace_hits_total 5 {T0}\n# EOF\n"
    (s,) = parse_openmetrics(text)
    assert (s.name, s.family, s.type) == ("redis_keyspace_hits_total", "redis_keyspace_hits_total",
                                          "counter")  # fmt: skip


def test_label_escapes_commas_braces_and_exemplars() -> None:
    text = (
        'm{a="x\\"y",b="c\\\\d",c="line\\nbreak",d="1,2 {3}",e="\\t"} 1 '
        f'{T0} # {{trace_id="abc"}} 0.5 {T0}\n'
        f'm{{ a = "p" , }}\t2  {T0}.250  \n# EOF'
    )
    series = by_key(parse_openmetrics(text))
    labels = (("a", 'x"y'), ("b", "c\\d"), ("c", "line\nbreak"), ("d", "1,2 {3}"), ("e", "\\t"))
    assert series[("m", labels)].values.tolist() == [1.0]
    assert series[("m", (("a", "p"),))].timestamps.tolist() == [T0 + 0.25]


def test_gauge_nan_is_a_gap_and_timestamps_keep_milliseconds() -> None:
    text = f"# TYPE g gauge\ng 1 {T0}.001\ng NaN {T0}.002\ng +Inf {T0}.003\n# EOF\n"
    (s,) = parse_openmetrics(text)
    assert s.timestamps.tolist() == [T0 + 0.001, T0 + 0.002, T0 + 0.003]
    assert s.values[0] == 1.0 and math.isnan(s.values[1]) and s.values[2] == math.inf


def test_empty_label_value_is_no_label_and_any_interval() -> None:
    text = f'x{{a=""}} 1 {T0}\nx 2 {T0 + 15}\nx 3 {T0 + 75}\n# EOF\n'
    (s,) = parse_openmetrics(text)
    assert s.labels == () and np.diff(s.timestamps).tolist() == [15.0, 60.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"a 1 {T0}\n", "m.om:1: missing '# EOF' at the end (is the file truncated?)"),
        ("", "m.om:1: empty file (is the file truncated?)"),
        (f"a 1 {T0}\n# EOF\na 2 {T0 + 1}\n", "m.om:3: content after '# EOF'"),
        (f"a 1 {T0}\n# EOF\n\n", "m.om:3: content after '# EOF'"),
        ("a 1\n# EOF\n", "m.om:1: sample without a timestamp (replay needs one on every sample)"),
        (f"a 1 {T0}\na 2 {T0 - 1}\n# EOF\n",
         f"m.om:2: timestamp {T0 - 1} goes back from {T0} (m.om:1) in series a"),
        (f'a{{x="1"}} 1 {T0}\nb 1 {T0}\na{{x="1"}} 2 {T0}\n# EOF\n',
         f'm.om:3: timestamp {T0} repeats {T0} (m.om:1) in series a{{x="1"}}'),
        ("a 1 NaN\n# EOF\n", "m.om:1: timestamp nan is not a finite number"),
        ("a 1 +Inf\n# EOF\n", "m.om:1: timestamp inf is not a finite number"),
        (f"# TYPE c counter\nc_total NaN {T0}\n# EOF\n",
         "m.om:2: nan value in counter c_total: must be finite"),
        (f'# TYPE h histogram\nh_bucket{{le="1"}} +Inf {T0}\n# EOF\n',
         "m.om:2: inf value in histogram h_bucket: must be finite"),
        (f"# TYPE c counter\nc_bucket 1 {T0}\n# EOF\n",
         "m.om:2: sample c_bucket does not belong in counter family c"),
        (f"# TYPE g gauge\ng_total 1 {T0}\n# EOF\n",
         "m.om:2: sample g_total does not belong in gauge family g"),
        (f"# TYPE h histogram\nh 1 {T0}\n# EOF\n",
         "m.om:2: sample h has no histogram suffix (expected one of ('_bucket', '_count', "
         "'_sum', '_created'))"),
        (f"# TYPE h histogram\nh_bucket 1 {T0}\n# EOF\n",
         "m.om:2: histogram bucket h_bucket without an 'le' label"),
        (f"a 1 {T0}000\n# EOF\n",
         f"m.om:1: timestamp {T0}000 looks like milliseconds; OpenMetrics timestamps are "
         "seconds (promtool would silently misread it)"),
        (f'a{{b="1}} 1 {T0}\n# EOF\n', "m.om:1: unterminated value of label b"),
        (f'a{{b="1",b="2"}} 1 {T0}\n# EOF\n', "m.om:1: duplicate label b"),
        (f"a 1 {T0}\n\n# EOF\n", "m.om:2: empty line (OpenMetrics has none)"),
        (f"a one {T0}\n# EOF\n", "m.om:1: invalid value 'one'"),
        (f"a 1 {T0}x\n# EOF\n", f"m.om:1: invalid timestamp '{T0}x'"),
        (f"a 1 {T0} extra\n# EOF\n", "m.om:1: unexpected text after the timestamp: 'extra'"),
        ("# TYPE a countr\n# EOF\n",
         "m.om:1: unknown metric type 'countr' (one of counter, gauge, gaugehistogram, "
         "histogram, info, stateset, summary, unknown)"),
        ("# TYPE a gauge\n# TYPE a counter\n# EOF\n",
         "m.om:2: # TYPE a counter conflicts with an earlier # TYPE a gauge"),
        (f"a_total 1 {T0}\n# TYPE a counter\n# EOF\n",
         "m.om:2: # TYPE a comes after samples of a (metadata goes first)"),
        ("#EOF\n", "m.om:1: a comment must start with '# '"),
        ("# EOF x\n", "m.om:1: malformed '# EOF' line"),
        (f"1a 1 {T0}\n# EOF\n", "m.om:1: expected a metric name"),
        (f"a 1 {T0}\r\n# EOF\r\n",
         "m.om:1: line ends in CR (a Windows line ending); OpenMetrics lines end in LF"),
    ],
)  # fmt: skip
def test_errors_name_file_and_line(text: str, expected: str) -> None:
    assert error_of(text) == expected


def test_first_error_wins_across_kinds() -> None:
    # line 3 goes backwards, line 4 is malformed: the report is line 3.
    text = f"a 1 {T0}\nb 1 {T0}\na 1 {T0 - 5}\nb one {T0 + 1}\n# EOF\n"
    assert error_of(text).startswith("m.om:3: timestamp")


def test_error_line_counts_across_blocks_and_files(tmp_path: Path) -> None:
    lines = [f'a{{i="{i % 7}"}} {i} {T0 + i // 7}' for i in range(5000)]
    lines[4321] = f'a{{i="{4321 % 7}"}} 1 {T0}'
    text = "\n".join([*lines, "# EOF", ""]).encode()
    reader = OpenMetricsReader()
    with pytest.raises(ReplayFormatError) as exc:
        reader.read_bytes(text, file="big.om", block_size=4096)
    assert str(exc.value).startswith("big.om:4322: timestamp")
    first = tmp_path / "a.om"
    second = tmp_path / "b.om.gz"
    first.write_text(f"a 1 {T0}\na 2 {T0 + 1}\n# EOF\n")
    with gzip.open(second, "wt") as fh:
        fh.write(f"# HELP a x\na 3 {T0 + 1}\n# EOF\n")
    with pytest.raises(ReplayFormatError) as exc:
        read_openmetrics([first, second])
    assert (
        str(exc.value) == f"{second}:2: timestamp {T0 + 1} repeats {T0 + 1} ({first}:2) in series a"
    )


def test_a_block_scanned_in_parts_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long block is scanned in parts at once: the same series, and errors on the same line."""
    from herdwatch.sources import openmetrics

    lines = [f'a{{i="{i % 7}"}} {i} {T0 + i // 7}' for i in range(5000)]
    text = "\n".join(["# TYPE a gauge", *lines, "# EOF", ""]).encode()
    whole = OpenMetricsReader()
    whole.read_bytes(text)
    monkeypatch.setattr(openmetrics, "_SPLIT", 1000)
    assert len(openmetrics._parts((text, 0, len(text)))) == openmetrics._WORKERS
    parts = OpenMetricsReader()
    parts.read_bytes(text)
    for a, b in zip(whole.series(), parts.series(), strict=True):
        assert (a.name, a.labels) == (b.name, b.labels)
        assert a.timestamps.tolist() == b.timestamps.tolist()
        assert a.values.tolist() == b.values.tolist()
    lines[4321] = f'a{{i="{4321 % 7}"}} 1 {T0}'
    broken = "\n".join([*lines, "# EOF", ""]).encode()
    with pytest.raises(ReplayFormatError) as exc:
        OpenMetricsReader().read_bytes(broken, file="big.om")
    assert str(exc.value).startswith("big.om:4322: timestamp")


def test_series_continue_across_files_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "1.om").write_text(f"# TYPE g gauge\ng 1 {T0}\n# EOF\n")
    with gzip.open(tmp_path / "2.om.gz", "wt") as fh:
        fh.write(f"# TYPE g gauge\ng 2 {T0 + 1}\n# EOF\n")
    (s,) = read_openmetrics(sorted(tmp_path.iterdir()))
    assert s.values.tolist() == [1.0, 2.0] and s.type == "gauge"


def test_family_type_must_agree_across_files(tmp_path: Path) -> None:
    (tmp_path / "1.om").write_text(f"# TYPE g gauge\ng 1 {T0}\n# EOF\n")
    (tmp_path / "2.om").write_text(f"g 2 {T0 + 1}\n# EOF\n")
    with pytest.raises(ReplayFormatError, match=r"2\.om:1: family g is unknown here but gauge"):
        read_openmetrics(sorted(tmp_path.iterdir()))


def test_truncated_gzip_is_a_format_error(tmp_path: Path) -> None:
    p = tmp_path / "m.om.gz"
    p.write_bytes(gzip.compress(f"a 1 {T0}\n# EOF\n".encode())[:-8])
    with pytest.raises(ReplayFormatError, match=r"m\.om\.gz: truncated gzip file \(it ends before"):
        read_openmetrics(p)


# -- property tests against the reference ---------------------------------------------------

LABEL_CHARS = st.sampled_from(list('ab z,{}="\\\n#é=0 1.5'))
LABEL_VALUE = st.text(LABEL_CHARS, max_size=6)
SEP = st.sampled_from([" ", " ", " ", " ", "  ", "\t"])


def escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def fmt_float(draw: st.DrawFn, v: float) -> str:
    if math.isnan(v):
        return draw(st.sampled_from(["NaN", "nan", "+NaN"]))
    if math.isinf(v):
        return ("+" if draw(st.booleans()) else "") + "Inf" if v > 0 else "-Inf"
    forms = [repr(v), f"{v:.3e}", f"{v:.6g}"]
    if v == int(v) and abs(v) < 1e15:
        forms.append(str(int(v)))
    return draw(st.sampled_from(forms))


@st.composite
def documents(draw: st.DrawFn, *, broken: bool = False) -> bytes:
    families = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b_c", "http:req", "x1_y"]),
                st.sampled_from(["counter", "counter_prom", "gauge", "histogram", "summary",
                                 "unknown"]),
            ),
            min_size=1, max_size=3, unique_by=lambda f: f[0],
        )
    )  # fmt: skip
    header: list[str] = []
    series: list[tuple[str, bool]] = []  # (key text source, strict)
    for base, kind in families:
        if kind == "counter_prom":
            header.append(f"# TYPE {base}_total counter")
        elif kind != "unknown":
            header.append(f"# TYPE {base} {kind}")
        if draw(st.booleans()):
            header.append(f"# HELP {base} some help text # with hash")
        label_sets = draw(
            st.lists(
                st.dictionaries(st.sampled_from(["a", "code", "z_1"]), LABEL_VALUE, max_size=2),
                min_size=1, max_size=3,
                unique_by=lambda d: tuple(sorted((k, v) for k, v in d.items() if v)),
            )
        )  # fmt: skip
        for labels in label_sets:
            names: list[tuple[str, dict[str, str], bool]] = []
            if kind in ("counter", "counter_prom"):
                names.append((f"{base}_total", labels, True))
                if kind == "counter" and draw(st.booleans()):
                    names.append((f"{base}_created", labels, True))
            elif kind == "histogram":
                for le in draw(st.lists(st.sampled_from(["0.1", "1", "+Inf"]), min_size=1,
                                        max_size=3, unique=True)):  # fmt: skip
                    names.append((f"{base}_bucket", {**labels, "le": le}, True))
                names += [(f"{base}_count", labels, True), (f"{base}_sum", labels, True)]
            elif kind == "summary":
                names += [(base, {**labels, "quantile": "0.5"}, False),
                          (f"{base}_sum", labels, True)]  # fmt: skip
            else:
                names.append((base, labels, False))
            for name, lab, strict in names:
                sep = draw(st.sampled_from([",", ", ", " , "]))
                inner = sep.join(f'{k}="{escape(v)}"' for k, v in lab.items())
                key = f"{name}{{{inner}}}" if lab or draw(st.booleans()) else name
                series.append((key, strict))
    steps = draw(st.integers(1, 6))
    start = draw(st.sampled_from([0.0, 1.5, 1764000000.0, 1764000000.123]))
    gaps = draw(st.lists(st.sampled_from([0.001, 0.5, 1.0, 15.0]), min_size=steps,
                         max_size=steps))  # fmt: skip
    times = list(np.cumsum([start, *gaps[:-1]]))
    per_series: list[list[str]] = []
    for key, strict in series:
        lines = []
        for t in times:
            v = draw(
                st.floats(-1e300, 1e300)
                if strict
                else st.floats(width=64)
                if draw(st.booleans())
                else st.one_of(st.integers(0, 10**6), st.integers(0, 10**17)).map(float)
            )
            forms = [repr(float(t)), f"{t:.3f}", f"{t:.4f}", f"{t:.13e}"]
            if t == int(t):
                forms.append(str(int(t)))
            ts = draw(st.sampled_from(forms))
            line = f"{key}{draw(SEP)}{fmt_float(draw, v)}{draw(SEP)}{ts}"
            if draw(st.integers(0, 9)) == 0:
                line += ' # {trace_id="k"} 1'
            if draw(st.integers(0, 9)) == 0:
                line += draw(SEP)
            lines.append(line)
        per_series.append(lines)
    order = draw(st.permutations([i for i, ls in enumerate(per_series) for _ in ls]))
    cursors = [0] * len(per_series)
    body = []
    for i in order:
        body.append(per_series[i][cursors[i]])
        cursors[i] += 1
    lines = header + body + ["# EOF"]
    if broken:
        k = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop_last_token", "insert_char", "swap", "dup", "blank",
                                    "after_eof", "no_eof", "value"]))  # fmt: skip
        if how == "drop_last_token":
            lines[k] = lines[k].rsplit(" ", 1)[0]
        elif how == "insert_char":
            pos = draw(st.integers(0, len(lines[k])))
            c = draw(st.sampled_from(list('{}"= x#\\,')))
            lines[k] = lines[k][:pos] + c + lines[k][pos:]
        elif how == "swap" and k + 1 < len(lines):
            lines[k], lines[k + 1] = lines[k + 1], lines[k]
        elif how == "dup":
            lines.insert(k, lines[k])
        elif how == "blank":
            lines.insert(k, "")
        elif how == "after_eof":
            lines.append(lines[k])
        elif how == "no_eof":
            lines.pop()
        elif how == "value":
            lines[k] = lines[k].replace(" ", " NaN ", 1)
    return ("\n".join(lines) + draw(st.sampled_from(["\n", ""]))).encode()


def compare(data: bytes, block_size: int) -> None:
    try:
        expected = ref.read([data])
    except ref.RefError as e:
        with pytest.raises(ReplayFormatError) as exc:
            OpenMetricsReader().read_bytes(data, file="p.om", block_size=block_size)
        assert exc.value.line == e.line, (str(exc.value), str(e))
        return
    reader = OpenMetricsReader()
    reader.read_bytes(data, file="p.om", block_size=block_size)
    got = reader.series()
    assert [(s.name, s.labels) for s in got] == list(expected)
    for s in got:
        family, typ, ts, vs = expected[(s.name, s.labels)]
        assert (s.family, s.type) == (family, typ)
        assert s.timestamps.dtype == np.float64 and s.values.dtype == np.float64
        # bit for bit, NaN payloads included
        assert s.timestamps.view(np.int64).tolist() == np.array(ts).view(np.int64).tolist()
        assert s.values.view(np.int64).tolist() == np.array(vs).view(np.int64).tolist()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.sampled_from([1 << 24, 7, 64, 333]))
def test_matches_reference_on_valid_documents(data: bytes, block_size: int) -> None:
    ref.read([data])  # the generator makes valid documents
    compare(data, block_size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(broken=True), st.sampled_from([1 << 24, 50]))
def test_matches_reference_on_broken_documents(data: bytes, block_size: int) -> None:
    compare(data, block_size)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([1 << 24, 5]))
def test_arbitrary_bytes_never_crash(data: bytes, block_size: int) -> None:
    compare(data + b"\n# EOF\n", block_size)


def test_key_hash_multipliers_are_the_seeded_draw() -> None:
    """The table written out (numpy.random is not imported to parse) is the seeded draw."""
    from herdwatch.sources import openmetrics

    drawn = np.random.default_rng(0x4E52).integers(1, 2**63, 32, dtype=np.uint64) | 1
    assert openmetrics._HASH_MULT.dtype == np.uint64
    assert openmetrics._HASH_MULT.tolist() == drawn.tolist()


def test_plain_decimals_convert_exactly_as_float_does() -> None:
    """Values and timestamps written `digits.digits` are converted with integer arithmetic
    (m / 10**f): every one is bit for bit what float() makes of its text, at the 2**53 edge and
    past the 16 digits the fast path takes too."""
    rng = np.random.default_rng(7)
    tokens = ["0.0", "5.", ".5", "0.000", "00012.50", "9007199254740.991", "9007199254740.993",
              "900719925474099.2", "9007199254740992.", ".9007199254740993", "1234567890123456.7",
              "0.1", "0.30000000000000004", "1.7976931348623157", "12345678.12345678"]  # fmt: skip
    for _ in range(3000):
        whole = "".join(rng.choice(list("0123456789"), int(rng.integers(0, 12))))
        frac = "".join(rng.choice(list("0123456789"), int(rng.integers(0, 12))))
        if whole or frac:
            tokens.append(f"{whole}.{frac}")
    stamps = [f"{T0 + i}.{int(rng.integers(0, 1000)):03d}" for i in range(len(tokens))]
    text = "# TYPE g gauge\n"
    text += "".join(f"g {v} {t}\n" for v, t in zip(tokens, stamps, strict=True)) + "# EOF\n"
    (s,) = parse_openmetrics(text)
    assert s.values.tolist() == [float(v) for v in tokens]
    assert (
        s.values.view(np.int64).tolist()
        == np.array([float(v) for v in tokens]).view(np.int64).tolist()
    )
    assert s.timestamps.tolist() == [float(t) for t in stamps]


@pytest.mark.parametrize("token", ["1.2.3", ".", "..5", "1..", "1_0.5", "1.5_0", "1.\u0665"])
def test_malformed_decimals_are_errors(token: str) -> None:
    assert "invalid value" in error_of(f"# TYPE g gauge\ng {token} {T0}\n# EOF\n")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(broken=True), st.sampled_from([1 << 24, 50]))
def test_matches_reference_when_special_bytes_are_many(data: bytes, block_size: int) -> None:
    """A block with more than _FEW bytes for the per-line parser (escapes, exemplars, comments)
    locates them with numpy instead of bytes.find: the same lines go to that parser."""
    from herdwatch.sources import openmetrics

    few, openmetrics._FEW = openmetrics._FEW, 0
    try:
        compare(data, block_size)
    finally:
        openmetrics._FEW = few
