"""The Prometheus source: raw series of herdwatch's metric families over a time range.

For each logical signal's families (`herdwatch.sources.families.DEFAULT_FAMILIES`, or the config's
`signals:` override) it runs one `query_range` per family at the scrape interval, chunked so no
query returns more than `MAX_POINTS` points per series (Prometheus refuses 11,000). Counters and
histogram buckets come back raw (herdwatch computes rates itself, as it does for a replay).

Two details make a Prometheus scan see exactly the samples a replay of the same data sees:

* the evaluation grid sits half a step after each family's scrape phase, so each grid point
  shows one scrape (never one scrape twice, or none, because of jitter);
* a second, small query per family (`max by (job, instance) (timestamp(...))`) gives each
  value its real scrape time, so rates divide by the true interval and a value repeated from an
  older scrape (a missed scrape; Prometheus' 5-minute lookback on backfilled data, which has no
  staleness markers) is a gap, not a flat stretch followed by a jump.

A `signals:` override that is PromQL rather than a family or selector is queried as is; its
series are named `herdwatch:<signal>` (`herdwatch:<signal>_bucket` when they carry `le`),
typed `unknown`, and `scan_overrides()` points the signal at that name for the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.poolmanager import PoolManager
from urllib3.util.retry import Retry

from herdwatch.config import (
    PROMETHEUS_MAX_QUERIES,
    PROMETHEUS_MAX_RANGE,
    PrometheusConfig,
    parse_duration,
    redact,
    resolve_secret,
)
from herdwatch.errors import ConfigError, SourceError
from herdwatch.model import FloatArray, RawData, Series, SourceStatus
from herdwatch.sources.base import CollectWindow
from herdwatch.sources.families import COMPANION_FAMILIES, DEFAULT_FAMILIES, parse_selector

__all__ = [
    "DEFAULT_MAX_QUERIES",
    "DEFAULT_MAX_RANGE",
    "DEFAULT_WINDOW",
    "MAX_POINTS",
    "PrometheusSource",
    "is_promql",
    "promql_series_name",
    "scan_overrides",
]

#: Points per series per query; Prometheus refuses more than 11,000.
MAX_POINTS = 10_000
#: How far back a scan reads when no `since` is given (seconds).
DEFAULT_WINDOW = 3600.0
#: HTTP requests one fetch may send (`--max-queries`, `sources.prometheus.max_queries`).
DEFAULT_MAX_QUERIES = PROMETHEUS_MAX_QUERIES
#: The longest range one fetch reads (`sources.prometheus.max_range`).
DEFAULT_MAX_RANGE = PROMETHEUS_MAX_RANGE
#: A fetch of at most this many scrape steps, within `_KNOWN_FOR` seconds of a full fetch, is a
#: tail fetch: raw samples (see `PrometheusSource._tail`).
_TAIL_STEPS = 60
#: how long a full fetch's scrape step is trusted by the tail fetches after it
_KNOWN_FOR = 60.0
#: the labels that tell scrape targets apart
_TARGET = ("job", "instance")
_Labels = tuple[tuple[str, str], ...]
_Points = dict[tuple[str, _Labels], list[list[Any]]]
_PROBE_SPAN = 600.0
_HISTOGRAMS = frozenset(
    {
        "db_query_duration_seconds",
        "http_client_request_duration_seconds",
        "herdcache_load_duration_seconds",
    }
)
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def is_promql(text: str) -> bool:
    """True when a `signals:` value is a PromQL expression, not a family or `family{...}`."""
    try:
        parse_selector(text)
    except ConfigError:
        return True
    return False


def promql_series_name(signal: str, *, buckets: bool = False) -> str:
    """The series name a PromQL override of `signal` is stored under."""
    return f"herdwatch:{signal}_bucket" if buckets else f"herdwatch:{signal}"


def scan_overrides(overrides: Mapping[str, str]) -> dict[str, str]:
    """`overrides` with each PromQL value replaced by the name its series carry, for the engine.

    Histogram-like signals (db_latency, upstream_latency) point at the `_bucket` name."""
    out: dict[str, str] = {}
    for signal, text in overrides.items():
        if signal != "error_logs" and is_promql(text):
            out[signal] = promql_series_name(signal, buckets=signal.endswith("_latency"))
        else:
            out[signal] = text
    return out


@dataclass(frozen=True, slots=True)
class _Query:
    """One thing to fetch: a family selector (`promql` False) or a PromQL override."""

    text: str
    signal: str = ""
    promql: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    """A family's range query: `sample` selects its series, `probe` (one sample name) dates its
    scrapes (empty for PromQL); `names` are its sample names (for a tail fetch)."""

    query: _Query
    sample: str
    probe: str
    probe_name: str
    family: str
    type: str
    names: tuple[str, ...] = ()


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _sample_names(family: str) -> list[str]:
    if family.endswith("_total"):
        return [family]
    return [family, *(family + s for s in _SUFFIXES)]


def _family_matchers(text: str) -> tuple[str, str]:
    """`family{m="v"}` -> ("family", ',m="v"'): its family and its matchers as PromQL text."""
    sel = parse_selector(text)
    return sel.family, "".join(f',{k}{op}"{v}"' for k, op, v in sel.matchers)


def _selector_query(text: str) -> str:
    """`family{m="v"}` -> a selector for every sample name the family may have."""
    sel = parse_selector(text)
    parts = ['__name__=~"' + "|".join(_sample_names(sel.family)) + '"']
    for key, op, value in sel.matchers:
        parts.append(f'{key}{op}"{value}"')
    return "{" + ",".join(parts) + "}"


class _UnverifiedHTTPSPool(HTTPSConnectionPool):
    """An HTTPS pool that does not emit urllib3's InsecureRequestWarning.

    Only mounted for `insecure_skip_verify: true`, where the user asked for no verification.
    The fetch runs in a thread pool, and warnings filters are process-global:
    `warnings.catch_warnings()` around each request is not thread-safe (one thread's exit
    restores the filters while another is mid-request), and a filter installed once would also
    silence other code's unverified requests. Not warning here keeps it to these connections.
    """

    def _validate_conn(self, conn: Any) -> None:
        # HTTPSConnectionPool._validate_conn less its warning: connect early, so TLS errors
        # surface where urllib3 wraps them as SSLError
        HTTPConnectionPool._validate_conn(self, conn)
        if isinstance(conn, HTTPSConnection) and conn.is_closed:
            conn.connect()


class _UnverifiedAdapter(HTTPAdapter):
    """requests' adapter with `_UnverifiedHTTPSPool` for https (see there why)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        manager: PoolManager = self.poolmanager
        manager.pool_classes_by_scheme = {
            **manager.pool_classes_by_scheme,
            "https": _UnverifiedHTTPSPool,
        }


class PrometheusSource:
    """Raw series of herdwatch's families from one Prometheus, through prometheus-api-client."""

    def __init__(
        self,
        cfg: PrometheusConfig,
        signal_overrides: Mapping[str, str] | None = None,
        *,
        max_points: int = MAX_POINTS,
        workers: int = 4,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.url = cfg.url.rstrip("/")
        self.name = f"prometheus {redact(self.url)}"
        self.signal_overrides = dict(signal_overrides or {})
        self.max_points = max_points
        self.workers = workers
        self._environ = environ
        self._conn: PrometheusConnect | None = None
        #: the step used by the last fetch (seconds), for reports and capture
        self.step: float | None = None
        # Per fetch: requests sent so far, and the event that stops it (a cancelled collect).
        self._queries = 0
        self._stop = threading.Event()
        #: (scrape step, time.monotonic()) of the last full fetch that found series
        self._known: tuple[float, float] | None = None

    # ------------------------------------------------------------------ connection

    def _connect(self) -> PrometheusConnect:
        if self._conn is not None:
            return self._conn
        cfg = self.cfg
        key = "sources.prometheus"
        password = resolve_secret(
            cfg.password_env, cfg.password_file, key=f"{key}.password", environ=self._environ
        )
        token = resolve_secret(
            cfg.bearer_token_env,
            cfg.bearer_token_file,
            key=f"{key}.bearer_token",
            environ=self._environ,
        )
        session = requests.Session()
        if cfg.insecure_skip_verify:
            session.verify = False
        elif cfg.ca_file:
            session.verify = cfg.ca_file
        headers = {"Authorization": f"Bearer {token}"} if token else None
        # As bytes, in UTF-8 (RFC 7617's charset, and Prometheus's): requests would encode a
        # str as latin-1 and fail on any other character, before sending anything.
        auth = (cfg.username.encode(), (password or "").encode()) if cfg.username else None
        # One quick retry on 502/503/504; a refused connection fails fast, not after backoff,
        # and a read that timed out is not sent again (that would double the wait).
        retry = Retry(
            total=1, connect=0, read=0, backoff_factor=0.2, status_forcelist=(502, 503, 504)
        )
        self._conn = PrometheusConnect(
            url=self.url,
            headers=headers,
            auth=auth,
            session=session,
            retry=retry,
            timeout=cfg.timeout,  # the library hints int; requests takes a float
        )
        if cfg.insecure_skip_verify:
            # replaces the adapter PrometheusConnect just mounted on this prefix
            session.mount(self.url, _UnverifiedAdapter(max_retries=retry))
        return self._conn

    def _error(self, exc: BaseException) -> SourceError:
        return SourceError(self.name, _one_line(redact(_describe(exc, self.cfg.timeout))))

    def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        """Call a PrometheusConnect method; every failure becomes a one-line SourceError.
        Past `max_queries` requests in one fetch, or once the fetch is stopped, none is sent."""
        if self._stop.is_set():
            raise _Stopped
        self._queries += 1
        if self._queries > self.cfg.max_queries:
            raise self._too_many(self._queries)
        conn = self._connect()
        try:
            return getattr(conn, fn)(*args, **kwargs)
        except (
            PrometheusApiClientException,
            requests.exceptions.RequestException,
            ValueError,
            KeyError,
            TypeError,
        ) as exc:
            raise self._error(exc) from None

    def _range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        # The client rounds start/end to whole seconds; our grid is sub-second, so pass them in
        # `params`, which the client applies after its own.
        dt = datetime.fromtimestamp(start, UTC)
        result: list[dict[str, Any]] = self._call(
            "custom_query_range",
            query,
            start_time=dt,
            end_time=dt,
            step=_fmt(step),
            params={"start": _fmt(start), "end": _fmt(end)},
        )
        return result

    # ------------------------------------------------------------------ what to fetch

    def queries(self) -> list[_Query]:
        """Every family selector and PromQL override this source fetches, without duplicates."""
        seen: set[str] = set()
        out: list[_Query] = []
        for signal, families in DEFAULT_FAMILIES.items():
            override = self.signal_overrides.get(signal)
            if override is not None:
                if is_promql(override):
                    out.append(_Query(override, signal, promql=True))
                    continue
                families = (override,)
            for fam in (*families, *COMPANION_FAMILIES.get(signal, ())):
                if fam not in seen:
                    seen.add(fam)
                    out.append(_Query(fam))
        return out

    # ------------------------------------------------------------------ step and phase

    def plans(self, since: float, until: float) -> tuple[list[_Plan], list[str]]:
        """How to fetch each family, and the families with no data in [since, until]. One
        request for the sample names of all of them; PromQL overrides go as they are."""
        queries = self.queries()
        selectors = [_selector_query(q.text) for q in queries if not q.promql]
        names: set[str] = set()
        if selectors:
            params = {"match[]": selectors, "start": _fmt(since), "end": _fmt(until)}
            answer = self._call("get_label_values", "__name__", params=params)
            if not isinstance(answer, list) or not all(isinstance(n, str) for n in answer):
                raise self._bad_answer(
                    "the metric names", f"labels that are not names ({answer!r:.80})"
                )
            names = set(answer)
        plans: list[_Plan] = []
        missing: list[str] = []
        for q in queries:
            plan = _plan(q, names)
            if plan is None:
                missing.append(q.text)
            else:
                plans.append(plan)
        return plans, missing

    def _probe(self, probe: str, span: float, since: float, until: float) -> list[FloatArray]:
        """Raw sample times of `probe` over `span` seconds before `until` (else after `since`)."""
        for at in dict.fromkeys((until, min(since + span, until))):
            query = f"{probe}[{round(span * 1000)}ms]"
            res = self._items(query, self._call("custom_query", query, params={"time": _fmt(at)}))
            stamps = [np.array([p[0] for p in values]) for _, values in res[:20]]
            if any(len(x) > 2 for x in stamps):
                return stamps
        return []

    def scrape_step(self, plans: Iterable[_Plan], since: float, until: float) -> float:
        """The scrape interval: the spacing of raw samples near `until` (else near `since`);
        `/api/v1/targets` as a fallback, then 15 s."""
        span = max(min(until - since, _PROBE_SPAN), 1.0)
        for plan in plans:
            if plan.probe:
                stamps = self._probe(plan.probe, span, since, until)
                if stamps:
                    diffs = np.concatenate([np.diff(x) for x in stamps if len(x) > 2])
                    return _snap(float(np.median(diffs)))
        return _snap(self._target_interval())

    def scrape_phases(
        self, plans: Iterable[_Plan], step: float, since: float, until: float
    ) -> dict[str, float]:
        """sample name -> when within each step it is scraped (seconds after a multiple of
        `step`), for each plan's probe name; one request for all."""
        probes = sorted({p.probe_name for p in plans if p.probe_name})
        if not probes:
            return {}
        sel = "{" + '__name__=~"' + "|".join(probes) + '"}'
        stamps: dict[str, list[float]] = {}
        span = min(8 * step, until - since)
        for at in dict.fromkeys((until, min(since + span, until))):
            query = f"{sel}[{round(span * 1000)}ms]"
            res = self._items(query, self._call("custom_query", query, params={"time": _fmt(at)}))
            for metric, values in res:
                stamps.setdefault(metric.get("__name__", ""), []).extend(p[0] for p in values)
            if all(n in stamps for n in probes):
                break
        return {n: _phase(np.array(stamps[n]), step) for n in probes if n in stamps}

    def _target_interval(self) -> float:
        """The shortest scrapeInterval of the active targets (the client has no targets call)."""
        conn = self._connect()
        try:
            resp = conn._session.get(
                f"{self.url}/api/v1/targets",
                headers=conn.headers,
                auth=conn.auth,
                timeout=self.cfg.timeout,
            )
            targets = resp.json()["data"]["activeTargets"]
            intervals = [parse_duration(t["scrapeInterval"]) for t in targets]
        except (requests.exceptions.RequestException, ValueError, KeyError, TypeError):
            return 15.0
        return min(intervals) if intervals else 15.0

    # ------------------------------------------------------------------ fetching

    def _too_many(self, queries: int) -> SourceError:
        return SourceError(
            self.name,
            f"this range needs more than {self.cfg.max_queries} queries ({queries} at least): "
            "narrow --since/--until, or raise the bound with --max-queries N "
            "(sources.prometheus.max_queries)",
        )

    def fetch(self, since: float | None = None, until: float | None = None) -> RawData:
        """Raw series over [since, until] (default: the last hour up to now). The range may
        be at most `cfg.max_range` long and take at most `cfg.max_queries` requests: past
        either, SourceError says which bound and how to raise it, before any range query."""
        self._queries = 0
        until = time.time() if until is None else until
        since = until - DEFAULT_WINDOW if since is None else since
        if not until > since:
            raise SourceError(self.name, f"empty time range ({since:.3f} .. {until:.3f})")
        if until - since > self.cfg.max_range:
            raise SourceError(
                self.name,
                f"the range is {_days(until - since)}, longer than the "
                f"{_days(self.cfg.max_range)} one scan reads: narrow --since/--until, or raise "
                "the bound with --max-range DURATION (sources.prometheus.max_range)",
            )
        known = self._known
        if (
            known is not None
            and time.monotonic() - known[1] < _KNOWN_FOR
            and until - since <= _TAIL_STEPS * known[0]
            and not any(q.promql for q in self.queries())
        ):
            return self._tail(known[0], since, until)
        self._known = None
        plans, missing = self.plans(since, until)
        step = self.scrape_step(plans, since, until)
        self.step = step
        # Every plan's range in chunks, and as many again for the scrape times: refuse now
        # rather than after thousands of requests.
        chunks = len(_chunks(since, until, step, self.max_points, limit=self.cfg.max_queries))
        planned = self._queries + 2 + 2 * chunks * len(plans)
        if planned > self.cfg.max_queries:
            raise self._too_many(planned)
        phases = self.scrape_phases(plans, step, since, until)

        def grid(plan: _Plan) -> tuple[float, float]:
            # Grid points half a step after the family's scrapes: each shows one scrape.
            offset = (phases.get(plan.probe_name, 0.0) + 0.5 * step) % step
            start = math.ceil((since - offset) / step) * step + offset
            return start, math.ceil((until - offset) / step) * step + offset

        grids = [grid(p) for p in plans]
        # Independent HTTP requests overlap: Prometheus evaluates one while we decode another.
        fetched = _map(
            lambda pg: self._fetch_range(pg[0].sample, pg[1][0], pg[1][1], step),
            list(zip(plans, grids, strict=True)),
            self.workers,
            self._stop,
        )
        # When each target was really scraped, from the raw samples of one series per
        # target (all series of a target share the scrape time). It restores the true
        # intervals (rates divide by them, as a replay does) and shows a value repeated
        # from an older scrape (a missed scrape; Prometheus' lookback on backfilled data,
        # which has no staleness markers) for what it is. A raw range selector is far
        # cheaper than timestamp().
        reps: dict[tuple[str, ...], tuple[str, _Labels, float, float]] = {}
        for plan, points, (start, end) in zip(plans, fetched, grids, strict=True):
            if plan.query.promql:
                continue
            for name, labels in sorted(points):
                target = _target(labels)
                if target in reps:
                    n0, l0, lo, hi = reps[target]
                    reps[target] = (n0, l0, min(lo, start), max(hi, end))
                else:
                    reps[target] = (name, labels, start, end)
        targets = list(reps)
        times = _map(lambda t: self._scrape_times(*reps[t], step), targets, self.workers,
                     self._stop)  # fmt: skip
        scraped = dict(zip(targets, times, strict=True))
        series: dict[tuple[str, _Labels], Series] = {}
        for plan, points in zip(plans, fetched, strict=True):
            if not points:
                missing.append(plan.query.text)
            for s in _to_series(plan, points, scraped, (since, until)):
                series.setdefault((s.name, s.labels), s)
        detail = f"{len(series)} series at step {step:g}s"
        if missing:
            detail += f"; no data for {', '.join(missing)}"
        status = SourceStatus(self.name, True, detail)
        if series:  # the step was measured: later short fetches may be tail fetches
            self._known = (step, time.monotonic())
        return RawData(series=list(series.values()), sources=[status])

    def _tail(self, step: float, since: float, until: float) -> RawData:
        """The last few scrapes, as a daemon or `top` polls every second: the raw samples of
        (since, until], from one instant range query (`{__name__=~"..."}[window]`) per set of
        label matchers for every sample name the families may have, at the scrape step of the
        last full fetch. Raw samples carry their scrape times, so neither grid, phases nor
        scrape-time queries are needed: one request a poll instead of a dozen, and the same
        samples (tests/sources/test_prometheus.py). The families and their types are read
        from the names that come back, as `plans` reads them from the names in the range."""
        window = f"[{max(1, math.ceil((until - since) * 1000))}ms]"
        queries = self.queries()
        groups: dict[str, list[str]] = {}
        for q in queries:
            family, matchers = _family_matchers(q.text)
            group = groups.setdefault(matchers, [])
            group += [n for n in _sample_names(family) if n not in group]
        texts = [
            "{" + '__name__=~"' + "|".join(names) + '"' + m + "}" + window
            for m, names in groups.items()
        ]
        answers = _map(
            lambda q: self._items(q, self._call("custom_query", q, params={"time": _fmt(until)})),
            texts,
            self.workers,
            self._stop,
        )
        found: dict[tuple[str, str], list[tuple[dict[str, str], list[list[Any]]]]] = {}
        for m, answer in zip(groups, answers, strict=True):
            for metric, values in answer:
                name = metric.pop("__name__", "")
                found.setdefault((m, name), []).append((metric, values))
        series: dict[tuple[str, _Labels], Series] = {}
        missing: list[str] = []
        for q in queries:
            _, matchers = _family_matchers(q.text)
            plan = _plan(q, {name for m, name in found if m == matchers})
            if plan is None:
                missing.append(q.text)
                continue
            for name in plan.names:
                for metric, values in found.get((matchers, name), ()):
                    labels = tuple(sorted(metric.items()))
                    if (name, labels) not in series:
                        s = _series(name, labels, values, plan.family, plan.type, None,
                                    (since, until))  # fmt: skip
                        series[(name, labels)] = s
        detail = f"{len(series)} series at step {step:g}s"
        if missing:
            detail += f"; no data for {', '.join(missing)}"
        return RawData(
            series=list(series.values()), sources=[SourceStatus(self.name, True, detail)]
        )

    def _fetch_range(self, query: str, start: float, end: float, step: float) -> _Points:
        points: _Points = {}
        for a, b in _chunks(start, end, step, self.max_points):
            for metric, values in self._items(query, self._range(query, a, b, step)):
                name = metric.pop("__name__", "")
                key = (name, tuple(sorted(metric.items())))
                points.setdefault(key, []).extend(values)
        return points

    def _bad_answer(self, query: str, what: str) -> SourceError:
        return SourceError(self.name, _one_line(redact(f"answered {what} to {query}")))

    def _items(self, query: str, result: Any) -> list[tuple[dict[str, str], list[list[Any]]]]:
        """A matrix answer checked (see `_checked`)."""
        if not isinstance(result, list):
            raise self._bad_answer(query, f"a result that is not a list of series ({result!r:.80})")
        return [self._checked(query, item) for item in result]

    def _checked(self, query: str, item: Any) -> tuple[dict[str, str], list[list[Any]]]:
        """A range query's series as (labels, [[t, v], ...]) with numbers for t and v, or a
        SourceError: a value that is no number must not become an empty, "ok" scan."""
        metric = item.get("metric") if isinstance(item, dict) else None
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(metric, dict) or not isinstance(values, list):
            raise self._bad_answer(query, f"a series without metric and values ({item!r:.80})")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metric.items()):
            raise self._bad_answer(query, f"labels that are not strings ({metric!r:.80})")
        out: list[list[Any]] = []
        for point in values:
            try:
                t, v = point
                out.append([_number(t), _number(v)])
            except (TypeError, ValueError):
                raise self._bad_answer(
                    query, f"a sample that is not [time, number] ({point!r:.80})"
                ) from None
        return dict(metric), out

    def _scrape_times(
        self, name: str, labels: _Labels, start: float, end: float, step: float
    ) -> FloatArray:
        """Raw sample times of one series over (start - step, end], sorted."""
        sel = (
            "{"
            + ",".join([f'__name__="{_esc(name)}"', *(f'{k}="{_esc(v)}"' for k, v in labels)])
            + "}"
        )
        out: list[float] = []
        for a, b in _chunks(start, end, step, self.max_points):
            window = round((b - a + step) * 1000)
            query = f"{sel}[{window}ms]"
            res = self._call("custom_query", query, params={"time": _fmt(b)})
            for _, values in self._items(query, res):
                out.extend(p[0] for p in values)
        return np.unique(np.array(out, dtype=np.float64))

    async def collect(self, window: CollectWindow) -> RawData:
        """The Source protocol: `fetch` over the window's recorded range, off the event loop.

        Cancelling it (Ctrl-C) returns at once: the fetch runs in a daemon thread that sends
        no further request once stopped, and a request still waiting on a silent server is
        left to its timeout rather than waited for (asyncio.to_thread would be joined when
        the loop closes, for up to `timeout` seconds)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[RawData] = loop.create_future()
        stop = self._stop = threading.Event()

        def settle(result: RawData | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)  # type: ignore[arg-type]

        def run() -> None:
            result: RawData | None = None
            error: BaseException | None = None
            try:
                result = self.fetch(window.since, window.until)
            except _Stopped:
                return
            except BaseException as exc:  # handed to the awaiting task, which re-raises it
                error = exc
            # RuntimeError: the loop is gone, nobody waits for this fetch any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name=f"herdwatch {self.name}", daemon=True).start()
        try:
            return await done
        finally:
            stop.set()


def _plan(q: _Query, names: set[str]) -> _Plan | None:
    """How to fetch one family given the sample names Prometheus has (None: none of them)."""
    if q.promql:
        return _Plan(q, q.text, "", "", "", "unknown")
    family, matchers = _family_matchers(q.text)

    def one(name: str) -> str:
        return "{" + f'__name__="{name}"{matchers}' + "}"

    family, mtype = _family_type(family, names)
    if mtype in ("histogram", "summary"):
        first = "_bucket" if mtype == "histogram" else ""
        parts = [n for n in (family + first, family + "_count", family + "_sum") if n in names]
        if not parts:
            return None
        # buckets, _count and _sum of one histogram are scraped together
        probe = family + "_count" if family + "_count" in names else parts[0]
        sample = "{" + '__name__=~"' + "|".join(parts) + '"' + matchers + "}"
        return _Plan(q, sample, one(probe), probe, family, mtype, tuple(parts))
    name = family + "_total" if mtype == "counter" else family
    if name not in names:
        return None
    return _Plan(q, one(name), one(name), name, family, mtype, (name,))


def _to_series(
    plan: _Plan,
    points: _Points,
    scraped: Mapping[tuple[str, ...], FloatArray],
    cut: tuple[float, float],
) -> list[Series]:
    if plan.query.promql:
        buckets = any(dict(labels).get("le") for _, labels in points)
        name = promql_series_name(plan.query.signal, buckets=buckets)
        return [
            _series(name, labels, vals, name, "unknown", None, cut)
            for (_, labels), vals in sorted(points.items())
        ]
    return [
        _series(n, labels, vals, plan.family, plan.type, scraped[_target(labels)], cut)
        for (n, labels), vals in sorted(points.items())
    ]


def _target(labels: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    d = dict(labels)
    return tuple(d.get(k, "") for k in _TARGET)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(
    name: str,
    labels: tuple[tuple[str, str], ...],
    vals: list[list[Any]],
    family: str,
    mtype: str,
    scraped: FloatArray | None,
    cut: tuple[float, float],
) -> Series:
    """A Series from query_range points; with `scraped` (the target's raw sample times) each
    value gets the time of the scrape it came from (the last at or before its grid point), and
    a value whose scrape was already seen is dropped."""
    t = np.fromiter((float(p[0]) for p in vals), dtype=np.float64, count=len(vals))
    v = np.array([p[1] for p in vals], dtype=np.float64)
    if scraped is not None:
        idx = np.searchsorted(scraped, t + 1e-6, side="right") - 1
        keep = idx >= 0
        t, v = scraped[idx[keep]], v[keep]
    # like a replay cut to [since, until]: a grid point just after `since` may show a scrape
    # from before it
    inside = (t >= cut[0]) & (t <= cut[1])
    t, v = t[inside], v[inside]
    if len(t) > 1 and not (np.diff(t) > 0).all():
        t, idx = np.unique(t, return_index=True)
        v = v[idx]
    return Series(name, labels, t, v, family=family, type=mtype)


def _family_type(family: str, names: Iterable[str]) -> tuple[str, str]:
    """(family, type) as a replay of the same samples would report them."""
    names = set(names)
    if family.endswith("_total"):
        return family[: -len("_total")], "counter"
    if family + "_bucket" in names or family in _HISTOGRAMS:
        return family, "histogram"
    if family + "_total" in names and family not in names:
        return family, "counter"
    if family + "_count" in names:
        return family, "summary"
    return family, "gauge"


def _snap(step: float) -> float:
    """A measured scrape interval rounded to the configured one (15.001 -> 15)."""
    if round(step) >= 1 and abs(step - round(step)) <= 0.02 * step:
        return float(round(step))
    return round(step, 3) if step > 0 else 15.0


def _phase(stamps: np.ndarray[Any, Any], step: float) -> float:
    """The circular median of the sample times modulo `step`."""
    if not len(stamps):
        return 0.0
    ang = 2 * np.pi * (stamps % step) / step
    mean = math.atan2(float(np.sin(ang).mean()), float(np.cos(ang).mean()))
    return (mean / (2 * np.pi) * step) % step


def _chunks(
    start: float, end: float, step: float, max_points: int, *, limit: int | None = None
) -> list[tuple[float, float]]:
    """Consecutive [a, b] ranges on the grid, each with at most `max_points` points (only the
    first `limit + 1` when `limit` is given: enough to tell that there are too many)."""
    out: list[tuple[float, float]] = []
    span = (max_points - 1) * step
    a = start
    while a <= end + 1e-9:
        b = min(a + span, end)
        out.append((a, b))
        if limit is not None and len(out) > limit:
            break
        a = b + step
    return out


class _Stopped(Exception):
    """Raised in a fetch's threads once its collect was cancelled: nothing more is sent."""


def _map(
    fn: Callable[[Any], Any], items: Sequence[Any], workers: int, stop: threading.Event
) -> list[Any]:
    """[fn(x) for x in items] on up to `workers` daemon threads, in order; the first error is
    raised (and stops the others taking more work). Daemon threads, unlike a
    ThreadPoolExecutor's, are not joined at exit: a Ctrl-C never waits for a slow server. One
    item (or one worker) runs in the calling thread: a live poll's, already off the event loop
    in collect()'s daemon thread; in the main thread (capture) Ctrl-C interrupts the request."""
    if len(items) == 1 or workers <= 1:
        out = []
        for x in items:
            if stop.is_set():
                raise _Stopped
            out.append(fn(x))
        return out
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    todo = iter(range(len(items)))
    lock = threading.Lock()

    def work() -> None:
        while not errors and not stop.is_set():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # re-raised by the caller's thread
                errors.append(exc)
                return

    threads = [
        threading.Thread(target=work, daemon=True, name="herdwatch prometheus")
        for _ in range(max(1, min(workers, len(items))))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    if stop.is_set():
        raise _Stopped
    return results


def _number(x: Any) -> float:
    """A JSON sample time or value (Prometheus writes values as strings: "1.5", "NaN", "+Inf")."""
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        raise TypeError(x)
    if isinstance(x, str) and not _FLOAT.fullmatch(x.strip()):
        raise ValueError(x)
    return float(x)


_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf|NaN|nan)")


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.4g} days" if seconds >= 86400 else f"{seconds / 3600:.3g} h"


def _describe(exc: BaseException, timeout: float) -> str:
    """One line for a failed request that tells a refused connection, a server that never
    answered (read timeout), one that dropped the connection, and an error answer apart."""
    if isinstance(exc, PrometheusApiClientException):
        return str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (set ca_file, or insecure_skip_verify for a test server)"
    if isinstance(exc, json.JSONDecodeError):
        return f"answered something that is not JSON, so not the Prometheus HTTP API ({exc})"
    chain: list[BaseException] = []
    probe: BaseException | None = exc
    while probe is not None and len(chain) < 10:
        chain.append(probe)
        reason = getattr(probe, "reason", None)
        nested = probe.args[0] if probe.args and isinstance(probe.args[0], BaseException) else None
        probe = reason if isinstance(reason, BaseException) else nested or probe.__context__
    kinds = tuple(type(e) for e in chain)

    def has(*types: type[BaseException]) -> bool:
        return any(issubclass(k, types) for k in kinds)

    if has(requests.exceptions.RetryError):
        status = re.search(r"too many (\d+) error responses", str(exc))
        code = f"HTTP Status Code {status.group(1)}" if status else "an error status"
        return f"answered {code}, also when asked again"
    if has(ReadTimeoutError, requests.exceptions.ReadTimeout):
        return f"connected, but no answer within {timeout:g}s (read timeout)"
    if has(ConnectTimeoutError, requests.exceptions.ConnectTimeout) and not has(NewConnectionError):
        return f"cannot connect within {timeout:g}s (connect timeout)"
    if has(ConnectionRefusedError):
        return "cannot connect (connection refused)"
    if has(NewConnectionError):
        return "cannot connect"
    if has(ProtocolError, http.client.RemoteDisconnected, ConnectionResetError,
           requests.exceptions.ChunkedEncodingError):  # fmt: skip
        return "the connection was dropped before the answer was complete"
    if has(requests.exceptions.Timeout):
        return f"timed out after {timeout:g}s"
    if has(requests.exceptions.ConnectionError):
        return "cannot connect"
    if has(ValueError) and not has(requests.exceptions.RequestException):
        return f"answered something that is not the Prometheus HTTP API ({exc})"
    if isinstance(exc, KeyError | TypeError):
        return f"answered something that is not the Prometheus HTTP API (no {exc})"
    return f"{type(exc).__name__}: {exc}"
