"""`mitigate client`: push runtime settings to herdwatch.cache clients through Redis.

The settings go where `herdwatch.cache.publish_settings` puts them: merged into the JSON
overrides at `<ns>:settings` and announced on the channel of that name; every HerdCache of the
namespace applies them at once, and one that starts later reads the key. Every value is checked
against `herdwatch.cache.Settings` before anything is sent.

Confirmations: a client that applied a document records it in the hash `<ns>:applied` (field:
its client id; value: JSON with the overrides it runs with, when, pid and host), which
`--status` reads. `confirm_applied` is that hook for a running HerdCache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions

from herdwatch.cache import HerdCache, Settings, SettingsError, publish_settings, settings_key
from herdwatch.config import redact
from herdwatch.errors import ConfigError, SourceError

__all__ = [
    "ALIASES",
    "ClientPlan",
    "applied_key",
    "confirm_applied",
    "parse_sets",
    "plan_client",
    "push_settings",
    "read_status",
    "restore_settings",
]

#: names the recommendations and the issue use for Settings fields
ALIASES = {"xfetch_beta": "beta", "jitter": "ttl_jitter", "swr": "stale_while_revalidate"}


def applied_key(namespace: str) -> str:
    """The hash where clients confirm the settings they applied (field: client id)."""
    return f"{namespace}:applied"


def _value(text: str) -> Any:
    """A --set value: JSON (numbers, true/false) where it parses, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`name=value` pairs as typed, validated settings changes; ConfigError names the first
    bad one, so a bad value is refused before anything is sent."""
    if not items:
        raise ConfigError("nothing to set: give --set NAME=VALUE (e.g. --set ttl_jitter=120)")
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"{item!r}: expected NAME=VALUE", key="--set")
        out[ALIASES.get(name, name)] = _value(raw.strip())
    try:
        Settings().replace(out)
    except SettingsError as exc:
        raise ConfigError(str(exc), key="--set") from None
    # integers written as 120 for a float setting are fine; keep what Settings coerced
    return out


@dataclass(frozen=True, slots=True)
class ClientPlan:
    namespace: str
    changes: Mapping[str, Any]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    subscribers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "changes": dict(self.changes),
            "overrides_before": dict(self.before) if self.before is not None else None,
            "overrides_after": dict(self.after),
            "subscribers": self.subscribers,
        }


def _redis_error(url: str, exc: BaseException) -> SourceError:
    text = str(exc).strip().splitlines()
    return SourceError(f"redis {redact(url)}", redact(text[0] if text else type(exc).__name__))


async def _stored(client: redis.asyncio.Redis, namespace: str) -> dict[str, Any] | None:
    raw = await client.get(settings_key(namespace))
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return dict(doc) if isinstance(doc, dict) else None


async def plan_client(
    client: redis.asyncio.Redis, namespace: str, changes: Mapping[str, Any], *, url: str
) -> ClientPlan:
    """What a push would do: the overrides stored now, after, and how many clients listen."""
    try:
        before = await _stored(client, namespace)
        numsub = await client.pubsub_numsub(settings_key(namespace))
    except (redis.exceptions.RedisError, OSError) as exc:
        raise _redis_error(url, exc) from None
    subscribers = int(numsub[0][1]) if numsub else 0
    return ClientPlan(namespace, dict(changes), before, {**(before or {}), **changes}, subscribers)


async def push_settings(
    client: redis.asyncio.Redis, plan: ClientPlan, *, url: str
) -> dict[str, Any]:
    """Publish the plan's changes (herdwatch.cache.publish_settings); the overrides in force."""
    try:
        return await publish_settings(client, plan.namespace, plan.changes)
    except SettingsError as exc:
        raise ConfigError(str(exc), key="--set") from None
    except (redis.exceptions.RedisError, OSError) as exc:
        raise _redis_error(url, exc) from None


async def restore_settings(
    client: redis.asyncio.Redis,
    namespace: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    *,
    url: str,
) -> bool:
    """Put back the overrides `before` when the stored ones are still `after` (else False:
    someone pushed since). Announced like a push, so running clients apply it at once."""
    try:
        current = await _stored(client, namespace)
        if current != dict(after):
            return False
        doc = json.dumps(dict(before or {}), sort_keys=True)
        async with client.pipeline(transaction=True) as pipe:
            if before is None:
                pipe.delete(settings_key(namespace))
            else:
                pipe.set(settings_key(namespace), doc)
            pipe.publish(settings_key(namespace), doc)
            await pipe.execute()
    except (redis.exceptions.RedisError, OSError) as exc:
        raise _redis_error(url, exc) from None
    return True


async def read_status(client: redis.asyncio.Redis, namespace: str, *, url: str) -> dict[str, Any]:
    """The stored overrides, the listening clients and each client's confirmation."""
    try:
        stored = await _stored(client, namespace)
        numsub = await client.pubsub_numsub(settings_key(namespace))
        confirmations = await client.hgetall(applied_key(namespace))
    except (redis.exceptions.RedisError, OSError) as exc:
        raise _redis_error(url, exc) from None
    clients = []
    for cid, raw in sorted(confirmations.items()):
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict):
            cur = doc.get("overrides")
            clients.append(
                {"client": cid.decode() if isinstance(cid, bytes) else str(cid), **doc,
                 "in_sync": cur == (stored or {})}
            )  # fmt: skip
    return {
        "namespace": namespace,
        "overrides": stored or {},
        "subscribers": int(numsub[0][1]) if numsub else 0,
        "clients": clients,
    }


async def confirm_applied(
    cache: HerdCache,
    client: redis.asyncio.Redis,
    namespace: str,
    *,
    client_id: str | None = None,
    interval: float = 0.1,
    stop: asyncio.Event | None = None,
) -> None:
    """Run beside a HerdCache: whenever the settings it runs with change, record in
    `<ns>:applied` the overrides it applied (the diff from its defaults), until `stop`."""
    cid = client_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    defaults = Settings().as_dict()
    last: dict[str, Any] | None = None
    while stop is None or not stop.is_set():
        now = cache.settings.as_dict()
        if now != last:
            overrides = {k: v for k, v in now.items() if v != defaults[k]}
            stored = await _stored(client, namespace) or {}
            # report the pushed document when it is what runs (the constructor may set more)
            applied = {k: now[k] for k in stored if k in now}
            doc = {
                "overrides": applied,
                "settings": overrides,
                "at": time.time(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
            await client.hset(applied_key(namespace), cid, json.dumps(doc, sort_keys=True))
            last = now
        if stop is None:
            await asyncio.sleep(interval)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
