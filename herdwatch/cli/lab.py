"""`herdwatch lab`: a real herd on real Redis and Postgres, watched live, with and without the fix.

    herdwatch lab run stampede --client naive|herdcache [--redis URL --postgres DSN]
    herdwatch lab compare stampede [--format json] [--html FILE]
    herdwatch lab compare all

Without --redis/--postgres the lab starts its own on free loopback ports (and stops them).
Exit codes: `lab run` 1 when findings fired, 0 when none; `lab compare` 0 when every expectation
held (naive found, herdcache silent, >= 99 % of duplicate loads saved), 1 otherwise; 2 bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from herdwatch.cli._app import Output, cli, err_console
from herdwatch.errors import ConfigError

__all__ = ["lab"]

SAVED_AT_LEAST = 0.99


@cli.group()
def lab() -> None:
    """Drive a real herd (naive client) and the same load through herdwatch.cache."""


@contextlib.contextmanager
def _servers(redis_url: str | None, dsn: str | None) -> Iterator[tuple[str, str]]:
    from herdwatch.lab.servers import LabServer, start_postgres, start_redis

    started: list[LabServer] = []
    try:
        if redis_url is None:
            started.append(start_redis())
            redis_url = started[-1].url
        if dsn is None:
            started.append(start_postgres())
            dsn = started[-1].url
        yield redis_url, dsn
    finally:
        for s in reversed(started):
            s.stop()


@contextlib.contextmanager
def _progress(what: str) -> Iterator[Callable[[float, float, Any], None] | None]:
    err = err_console()
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), TimeRemainingColumn(),
        "{task.fields[found]}", console=err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(what, total=1.0, found="")

        def update(done: float, total: float, snap: Any) -> None:
            found = ", ".join(sorted({t.finding.signature for t in snap.active}))
            bar.update(task, completed=done, total=total, found=found and f"found: {found}")

        yield update


def _scenarios(name: str) -> list[str]:
    from herdwatch.lab import SCENARIOS

    if name == "all":
        return [n for n, sc in SCENARIOS.items() if not sc.draft]
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)}, all)")
    return [name]


def _run(name: str, client: str, url: str, dsn: str, settings: dict[str, Any] | None,
         scale: float) -> Any:  # fmt: skip
    from herdwatch.lab import run_scenario

    with _progress(f"{name} / {client}") as bar:
        return asyncio.run(
            run_scenario(
                name, client, redis_url=url, dsn=dsn, settings=settings, scale=scale, on_tick=bar
            )
        )


def _row(r: Any) -> str:
    lat = r.latency_ms
    found = (
        "; ".join(f"{f['signature']} (+{f['detected_after_s']:.1f}s)" for f in r.findings) or "none"
    )
    return (
        f"| {r.client} | {r.loads_per_expiry:.2f} | {r.duplicate_loads} | "
        f"{r.peak_pg_connections:.0f} | {lat['p50']:.1f} | {lat['p99']:.1f} | {lat['max']:.0f} | "
        f"{r.errors} | {found} |"
    )


HEADER = [
    "| client | loads per expiry | duplicate loads | peak PG conns | p50 ms | p99 ms | max ms "
    "| errors | findings (detected after onset) |",
    "|---|---|---|---|---|---|---|---|---|",
]

SCALE = click.option(
    "--scale", default=1.0, show_default=True, type=click.FloatRange(0.2, 20),
    help="Multiply the baseline and the time after the onset (shorter runs < 1).",
)  # fmt: skip
SERVERS = [
    click.option("--redis", "redis_url", metavar="URL", help="Redis to use (else one is started)."),
    click.option("--postgres", "dsn", metavar="DSN", help="Postgres to use (else one is started)."),
]


def _with_servers(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(SERVERS):
        f = opt(f)
    return f


@lab.command("run")
@click.argument("scenario")
@click.option("--client", type=click.Choice(["naive", "herdcache"]), default="naive",
              show_default=True)  # fmt: skip
@_with_servers
@SCALE
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich")
def run_cmd(scenario: str, client: str, redis_url: str | None, dsn: str | None, scale: float,
            fmt: str) -> None:  # fmt: skip
    """Run SCENARIO's load with one client while herdwatch watches; exit 1 when it found a herd."""
    (name,) = _scenarios(scenario)
    with _servers(redis_url, dsn) as (url, pg):
        res = _run(name, client, url, pg, None, scale)
    out = Output(soft_wrap=True)
    if fmt == "json":
        out.print_json(json.dumps(res.to_json()))
    else:
        for line in [f"lab run {name} --client {client}", *HEADER, _row(res)]:
            out.print(line, markup=False, highlight=False)
        for f in res.findings:
            out.print(f"  {f['signature']}: {f['summary']}", markup=False, highlight=False)
    click.get_current_context().exit(1 if res.findings else 0)


def compare_one(name: str, url: str, pg: str, scale: float) -> dict[str, Any]:
    """Naive, then herdcache with the settings recommended for the naive run's finding."""
    from herdwatch.lab import SCENARIOS, herdcache_settings

    sc = SCENARIOS[name]
    naive = _run(name, "naive", url, pg, None, scale)
    settings = herdcache_settings(naive.recommendations) if naive.recommendations else None
    herd = _run(name, "herdcache", url, pg, settings, scale)
    saved = 1 - herd.duplicate_loads / naive.duplicate_loads if naive.duplicate_loads else 0.0
    expect = {
        "naive_found": any(f["signature"] == sc.signature for f in naive.findings),
        "herdcache_silent": not herd.findings,
        "loads_saved": saved >= SAVED_AT_LEAST,
    }
    return {
        "scenario": name,
        "signature": sc.signature,
        "runs": {"naive": naive, "herdcache": herd},
        "duplicate_loads_saved": round(saved, 4),
        "expectations": expect,
        "ok": all(expect.values()),
    }


@lab.command("compare")
@click.argument("scenario")
@_with_servers
@SCALE
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich")
@click.option("--html", "html", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a self-contained HTML report with the signals' charts.")  # fmt: skip
def compare_cmd(scenario: str, redis_url: str | None, dsn: str | None, scale: float, fmt: str,
                html: Path | None) -> None:  # fmt: skip
    """Run SCENARIO naive, then through herdwatch.cache; exit 0 when every expectation held."""
    names = _scenarios(scenario)
    results = []
    with _servers(redis_url, dsn) as (url, pg):
        for name in names:
            results.append(compare_one(name, url, pg, scale))
    if html is not None:
        from herdwatch.lab.report import html_report

        html.write_text(html_report(results), encoding="utf-8")
    out = Output(soft_wrap=True)
    if fmt == "json":
        doc = {
            "ok": all(r["ok"] for r in results),
            "scenarios": [
                {**r, "runs": {k: v.to_json() for k, v in r["runs"].items()}} for r in results
            ],
        }
        out.print_json(json.dumps(doc))
    else:
        for r in results:
            out.print(f"herdwatch lab compare {r['scenario']}", markup=False, highlight=False)
            for line in [*HEADER, *(_row(v) for v in r["runs"].values())]:
                out.print(line, markup=False, highlight=False)
            exp = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in r["expectations"].items())
            out.print(f"duplicate loads saved: {r['duplicate_loads_saved']:.1%}; {exp}",
                      markup=False, highlight=False)  # fmt: skip
    click.get_current_context().exit(0 if all(r["ok"] for r in results) else 1)
