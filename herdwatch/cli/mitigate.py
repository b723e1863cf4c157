"""`herdwatch mitigate`: apply what a finding recommends, safely.

    herdwatch mitigate ttl-spread --redis URL --match 'product:*' --spread 120s [--apply]
    herdwatch mitigate client --redis URL --set ttl_jitter=120 [--apply] | --status
    herdwatch mitigate undo FILE

Dry run by default: the plan is printed and nothing changes. With `--apply`, only targets that
`mitigations.allow` allows (`product:*` for key patterns, `client:<namespace>` for settings),
with one audit line and an undo file. Exit 0 done (or nothing to do), 2 bad input or refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import redis.asyncio

from herdwatch.cli._app import CONFIG_OPTION, Output, cli, err_console
from herdwatch.config import (
    Config,
    RedisConfig,
    load_config,
    parse_duration,
    redact,
    resolve_secret,
)
from herdwatch.errors import ConfigError

__all__ = ["mitigate"]

FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["rich", "json"]), default="rich", show_default=True
)
APPLY = click.option("--apply", is_flag=True, help="Make the change (default: a dry run).")
UNDO_FILE = click.option(
    "--undo-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where the undo file goes (default $XDG_STATE_HOME/herdwatch/undo/...).",
)
AUDIT_LOG = click.option(
    "--audit-log",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Audit log to append to (default $XDG_STATE_HOME/herdwatch/audit.log).",
)


@cli.group()
def mitigate() -> None:
    """Apply a recommended mitigation: dry run by default, --apply to change anything."""


def _redis_target(cfg: Config, url: str | None) -> tuple[str, str | None]:
    """The Redis URL (flag, else the config's sources.redis) and its password from config."""
    rc = cfg.sources.redis
    if url is None:
        if rc is None:
            raise ConfigError("no Redis given: pass --redis URL (or sources.redis in the config)")
        url = rc.url
    rc = rc or RedisConfig(url=url)
    password = resolve_secret(rc.password_env, rc.password_file, key="sources.redis.password")
    return url, password


def _client(url: str, password: str | None) -> redis.asyncio.Redis:
    kwargs: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
    if password is not None:
        kwargs["password"] = password
    try:
        return redis.asyncio.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"not a Redis URL: {redact(str(exc))}", key="--redis") from None


@contextmanager
def _progress(what: str) -> Iterator[Callable[[int, int], None] | None]:
    err = err_console()
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        f"[progress.description]{what}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _emit(fmt: str, doc: dict[str, Any], lines: list[str]) -> None:
    out = Output(soft_wrap=True)
    if fmt == "json":
        out.print_json(json.dumps(doc))
    else:
        for line in lines:
            out.print(line, highlight=False, markup=False)


# -- ttl-spread ---------------------------------------------------------------------------------


async def _cliff_patterns(url: str, cfg: Config) -> list[str]:
    """The key patterns of the ttl_cliff findings on this Redis (a fresh key-expiry sample)."""
    from herdwatch.detect.ttl_cliff import TtlCliffParams, detect_ttl_cliff
    from herdwatch.signals import SignalSet
    from herdwatch.sources.base import CollectWindow
    from herdwatch.sources.redis_direct import RedisDirectSource

    rc = cfg.sources.redis if cfg.sources.redis and cfg.sources.redis.url == url else None
    raw = await RedisDirectSource(rc or RedisConfig(url=url)).collect(CollectWindow())
    sigs = SignalSet({}, key_expiry=raw.key_expiry)
    pats: list[str] = []
    for f in detect_ttl_cliff(sigs, TtlCliffParams()):
        for p in f.evidence.get("patterns") or []:
            if isinstance(p, dict) and p.get("pattern") and p["pattern"] not in pats:
                pats.append(str(p["pattern"]))
    return pats


async def _ttl_spread(
    cfg: Config,
    url: str,
    password: str | None,
    patterns: list[str] | None,
    spread: float,
    opts: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    from herdwatch.mitigate import audit, require_allowed
    from herdwatch.mitigate._common import UndoWriter, default_undo_path
    from herdwatch.mitigate.ttl_spread import (
        apply_spread,
        collect_expiries,
        expiry_histogram,
        plan_spread,
        plan_summary,
    )

    if patterns is None:
        patterns = await _cliff_patterns(url, cfg)
        if not patterns:
            return {"redis": redact(url), "patterns": [], "applied": False}, [
                f"redis {redact(url)}: no ttl_cliff found; nothing to re-spread "
                "(give --match PATTERN to re-spread keys anyway)"
            ]
    allow = cfg.mitigations.allow
    if opts["apply"]:
        for pat in patterns:  # refused before anything is read or written
            require_allowed(pat, allow, "key pattern")
    client = _client(url, password)
    try:
        entries = []
        for pat in patterns:
            entries += await collect_expiries(client, pat, url=url)
        entries = list({e.key: e for e in entries}.values())
        plan = plan_spread(entries, int(spread * 1000))
        now_ms = int(time.time() * 1000)
        hist = expiry_histogram(entries, plan, now_ms)
        lines = [f"redis {redact(url)}, pattern(s) {', '.join(patterns)}: {plan_summary(plan)}"]
        if hist:
            lines.append("expires in          before     after")
            lines += [f"{a:8.1f}s-{b:8.1f}s {x:9d} {y:9d}" for a, b, x, y in hist]
        doc: dict[str, Any] = {
            "redis": redact(url),
            "patterns": patterns,
            **plan.to_json(),
            "histogram": [
                {"from": round(a, 3), "to": round(b, 3), "before": x, "after": y}
                for a, b, x, y in hist
            ],
            "applied": False,
        }
        if not opts["apply"]:
            refused = [p for p in patterns if not _allowed(p, allow)]
            note = "dry run: nothing changed; --apply to write"
            if refused:
                note += f" (refused then: {', '.join(refused)} not in mitigations.allow)"
            lines.append(note)
            return doc, lines
        if not plan.moves:
            lines.append("nothing to write: the keys are spread already")
            doc["applied"] = True
            doc["written"] = 0
            return doc, lines
        path = opts["undo_file"] or default_undo_path("ttl-spread")
        header = {"redis": redact(url), "patterns": patterns, "spread_seconds": spread}
        result = None
        started = time.time()
        try:
            with UndoWriter(path, "ttl-spread", header) as undo, _progress("re-spreading") as bar:
                result = await apply_spread(
                    client, plan, undo, url=url, batch=opts["batch"], rate=opts["rate"],
                    on_progress=bar,
                )  # fmt: skip
        finally:
            detail: dict[str, Any] = {
                "patterns": patterns,
                "spread_seconds": spread,
                "planned": len(plan.moves),
                "undo": str(path),
                "seconds": round(time.time() - started, 3),
            }
            if result is None:
                detail["interrupted"] = True
            else:
                detail["written"] = result.written
                detail["changed_meanwhile"] = result.changed_meanwhile
            audit_line = audit("ttl-spread", f"redis {url}", detail, opts["audit_log"])
            err_console().print(f"audit: {audit_line}", highlight=False, markup=False)
        doc.update(applied=True, written=result.written, undo=str(path),
                   changed_meanwhile=result.changed_meanwhile)  # fmt: skip
        lines.append(
            f"re-spread {result.written} keys in {result.seconds:.2f}s "
            f"({result.changed_meanwhile} changed since the plan, left alone); "
            f"undo: herdwatch mitigate undo {path}"
        )
        return doc, lines
    finally:
        await client.aclose()


def _allowed(pattern: str, allow: tuple[str, ...]) -> bool:
    from herdwatch.mitigate import allowed

    return allowed(pattern, allow)


@mitigate.command("ttl-spread")
@CONFIG_OPTION
@click.option("--redis", "redis_url", metavar="URL", help="Redis to re-spread (else the config's).")
@click.option(
    "--match", "patterns", metavar="PATTERN", multiple=True,
    help="SCAN pattern of the keys (repeatable); default: the patterns of the ttl_cliff found.",
)  # fmt: skip
@click.option("--spread", required=True, metavar="DURATION", help="Window to spread over (120s).")
@click.option("--batch", default=200, show_default=True, help="Keys per batch (one script).")
@click.option("--rate", default=50_000.0, show_default=True, help="Keys per second at most.")
@APPLY
@UNDO_FILE
@AUDIT_LOG
@FORMAT
def ttl_spread(
    config_file: Path | None,
    redis_url: str | None,
    patterns: tuple[str, ...],
    spread: str,
    batch: int,
    rate: float,
    apply: bool,
    undo_file: Path | None,
    audit_log: Path | None,
    fmt: str,
) -> None:
    """Re-spread the expiries of keys that would expire together (a ttl_cliff)."""
    cfg = load_config(config_file)
    try:
        seconds = parse_duration(spread)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--spread") from None
    if not seconds > 0:
        raise ConfigError("must be > 0", key="--spread")
    if batch < 1 or not rate > 0:
        raise ConfigError("--batch must be >= 1 and --rate > 0")
    url, password = _redis_target(cfg, redis_url)
    opts = {"apply": apply, "batch": batch, "rate": rate, "undo_file": undo_file,
            "audit_log": audit_log}  # fmt: skip
    doc, lines = asyncio.run(_ttl_spread(cfg, url, password, list(patterns) or None, seconds, opts))
    _emit(fmt, doc, lines)


# -- client -------------------------------------------------------------------------------------


async def _client_cmd(
    cfg: Config, url: str, password: str | None, namespace: str, sets: tuple[str, ...],
    status: bool, opts: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    from herdwatch.mitigate import audit, require_allowed
    from herdwatch.mitigate._common import UndoWriter, default_undo_path
    from herdwatch.mitigate.client import parse_sets, plan_client, push_settings, read_status

    target = f"client:{namespace}"
    if status:
        client = _client(url, password)
        try:
            st = await read_status(client, namespace, url=url)
        finally:
            await client.aclose()
        lines = [
            f"redis {redact(url)}, namespace {namespace}: overrides {json.dumps(st['overrides'])}, "
            f"{st['subscribers']} client(s) listening, {len(st['clients'])} confirmed"
        ]
        for c in st["clients"]:
            age = time.time() - float(c.get("at", 0))
            sync = "in sync" if c["in_sync"] else "NOT in sync"
            lines.append(
                f"  {c['client']}: {json.dumps(c.get('overrides'))} ({sync}, {age:.0f}s ago)"
            )
        return st, lines
    changes = parse_sets(sets)  # a bad value is refused here, before Redis is touched
    if opts["apply"]:
        require_allowed(target, cfg.mitigations.allow, "settings target")
    client = _client(url, password)
    try:
        plan = await plan_client(client, namespace, changes, url=url)
        lines = [
            f"redis {redact(url)}, namespace {namespace}: set {json.dumps(dict(changes))}; "
            f"overrides {json.dumps(plan.before or {})} -> {json.dumps(dict(plan.after))}; "
            f"{plan.subscribers} client(s) listening"
        ]
        doc = {"redis": redact(url), **plan.to_json(), "applied": False}
        if not opts["apply"]:
            note = "dry run: nothing sent; --apply to push"
            if not _allowed(target, cfg.mitigations.allow):
                note += f" (refused then: {target} not in mitigations.allow)"
            lines.append(note)
            return doc, lines
        path = opts["undo_file"] or default_undo_path("client")
        with UndoWriter(path, "client", {"redis": redact(url), "namespace": namespace}) as undo:
            undo.add([{"before": plan.before, "after": plan.after}])
            in_force = await push_settings(client, plan, url=url)
        line = audit("mitigate-client", f"redis {url}",
                     {"namespace": namespace, "changes": dict(changes), "overrides": in_force,
                      "undo": str(path)}, opts["audit_log"])  # fmt: skip
        err_console().print(f"audit: {line}", highlight=False, markup=False)
        doc.update(applied=True, overrides=in_force, undo=str(path))
        lines.append(
            f"pushed; overrides in force {json.dumps(in_force)}; confirmations: "
            f"herdwatch mitigate client --redis {redact(url)} --status; "
            f"undo: herdwatch mitigate undo {path}"
        )
        return doc, lines
    finally:
        await client.aclose()


@mitigate.command("client")
@CONFIG_OPTION
@click.option("--redis", "redis_url", metavar="URL", help="Redis the clients share.")
@click.option("--namespace", default="herdcache", show_default=True, help="HerdCache namespace.")
@click.option("--set", "sets", metavar="NAME=VALUE", multiple=True, help="A setting (repeatable).")
@click.option("--status", is_flag=True, help="Show the overrides and the clients' confirmations.")
@APPLY
@UNDO_FILE
@AUDIT_LOG
@FORMAT
def client_cmd(
    config_file: Path | None,
    redis_url: str | None,
    namespace: str,
    sets: tuple[str, ...],
    status: bool,
    apply: bool,
    undo_file: Path | None,
    audit_log: Path | None,
    fmt: str,
) -> None:
    """Push runtime settings to herdwatch.cache clients (ttl_jitter, beta, ...)."""
    cfg = load_config(config_file)
    if status and (sets or apply):
        raise ConfigError("--status reads only: give it without --set/--apply")
    url, password = _redis_target(cfg, redis_url)
    opts = {"apply": apply, "undo_file": undo_file, "audit_log": audit_log}
    doc, lines = asyncio.run(_client_cmd(cfg, url, password, namespace, sets, status, opts))
    _emit(fmt, doc, lines)


# -- undo ---------------------------------------------------------------------------------------


async def _undo(
    cfg: Config, path: Path, redis_url: str | None, audit_log: Path | None
) -> tuple[dict[str, Any], list[str]]:
    from herdwatch.mitigate import audit, read_undo
    from herdwatch.mitigate.client import restore_settings
    from herdwatch.mitigate.ttl_spread import undo_spread

    header, records = read_undo(path)
    kind = header.get("undo")
    recorded = str(header.get("redis") or "")
    url = redis_url or recorded
    if not url or "***" in url:
        raise ConfigError(f"{path}: give --redis URL (the file does not keep passwords)")
    url, password = _redis_target(cfg, url)
    client = _client(url, password)
    try:
        if kind == "ttl-spread":
            result = await undo_spread(client, records, url=url)
            detail: dict[str, Any] = {
                "restored": result.written,
                "changed_since": result.changed_meanwhile,
            }
            text = (
                f"restored the expiry of {result.written} keys "
                f"({result.changed_meanwhile} changed since, left alone)"
            )
        elif kind == "client":
            ns = str(header.get("namespace") or "herdcache")
            restored = 0
            for rec in reversed(records):
                ok = await restore_settings(
                    client, ns, rec.get("before"), rec.get("after") or {}, url=url
                )
                restored += ok
            detail = {"namespace": ns, "restored": restored}
            text = (
                f"restored the settings of namespace {ns}"
                if restored
                else f"namespace {ns}: settings changed since; left alone"
            )
        else:
            raise ConfigError(f"{path}: unknown undo kind {kind!r}")
    finally:
        await client.aclose()
    line = audit(f"undo {kind}", f"redis {url}", {"file": str(path), **detail}, audit_log)
    err_console().print(f"audit: {line}", highlight=False, markup=False)
    return {"undo": str(path), "kind": kind, **detail}, [text]


@mitigate.command("undo")
@CONFIG_OPTION
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--redis", "redis_url", metavar="URL", help="Redis (default: the file's).")
@AUDIT_LOG
@FORMAT
def undo(
    config_file: Path | None, file: Path, redis_url: str | None, audit_log: Path | None, fmt: str
) -> None:
    """Undo an applied mitigation from its undo file (keys changed since are left alone)."""
    cfg = load_config(config_file)
    doc, lines = asyncio.run(_undo(cfg, file, redis_url, audit_log))
    _emit(fmt, doc, lines)
