"""`mitigate ttl-spread`: re-spread the expiries of keys that would expire together.

Plan (pure, `plan_spread`): the keys' absolute expiries (PEXPIRETIME, ms) are bucketed by
`bucket_ms`; a run of adjacent buckets each holding at least `max(min_keys, min_share * n)`
keys is one cluster, anchored at its earliest expiry `a`. Each key of a cluster moves to

    new = a + floor(frac(key) * spread),   frac(key) = blake2b(key) / 2**64 in [0, 1)

and only when that is later than its current expiry: a re-spread never makes a key expire
earlier, so it never causes a load that would not have happened. The fraction is a hash of the
key, so a second run computes the same targets: a cluster already spread is no cluster any more
(or its keys are already at their targets) and nothing is written: the apply is idempotent.

Apply (`apply_spread`): batches of at most `batch` keys, each one Lua script that sets a key's
new expiry only if its expiry is still the one planned (a key the application rewrote meanwhile
is left alone), paced to `rate` keys per second so the server never stalls. Each batch is
recorded in the undo file before it is sent; `undo_spread` puts back the old expiry of every key
whose expiry is still the one written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio
import redis.exceptions

from herdwatch.config import redact
from herdwatch.errors import HerdwatchError, SourceError
from herdwatch.mitigate._common import UndoWriter

__all__ = [
    "ApplyResult",
    "Cluster",
    "KeyExpiry",
    "Move",
    "SpreadPlan",
    "apply_spread",
    "collect_expiries",
    "expiry_histogram",
    "key_fraction",
    "plan_spread",
    "undo_spread",
]

#: sets KEYS[i]'s expiry to ARGV[2i] (ms) when it is still ARGV[2i-1]; returns how many it set
_CAS_EXPIRE = """
local n = 0
for i, k in ipairs(KEYS) do
  if redis.call('PEXPIRETIME', k) == tonumber(ARGV[2 * i - 1]) then
    redis.call('PEXPIREAT', k, ARGV[2 * i])
    n = n + 1
  end
end
return n
"""


#: one SCAN step and the absolute expiry (PEXPIRETIME, ms) of each key it found, packed in one
#: string ("<len>:<key><ms>\n" per key) so that a batch is one reply to parse, not thousands
_SCAN_EXPIRETIMES = """
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local out = {}
for i, k in ipairs(r[2]) do
  out[i] = #k .. ':' .. k .. redis.call('PEXPIRETIME', k) .. '\\n'
end
return {r[1], table.concat(out)}
"""


class KeyExpiry(NamedTuple):
    """A key and its absolute expiry in unix ms (-1: none). A tuple: a million are cheap."""

    key: bytes
    expire_ms: int


@dataclass(frozen=True, slots=True)
class Move:
    key: bytes
    old_ms: int
    new_ms: int


@dataclass(frozen=True, slots=True)
class Cluster:
    start_ms: int
    end_ms: int
    keys: int


@dataclass(frozen=True, slots=True)
class SpreadPlan:
    """What a re-spread would write: `moves`, the `clusters` found, over `considered` keys
    with an expiry (keys without one are never touched)."""

    moves: tuple[Move, ...]
    clusters: tuple[Cluster, ...]
    considered: int
    spread_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "keys_with_expiry": self.considered,
            "clusters": [
                {"start": c.start_ms / 1000, "end": c.end_ms / 1000, "keys": c.keys}
                for c in self.clusters
            ],
            "keys_to_move": len(self.moves),
            "spread_seconds": self.spread_ms / 1000,
        }


@dataclass(frozen=True, slots=True)
class ApplyResult:
    written: int
    changed_meanwhile: int
    seconds: float


def key_fraction(key: bytes) -> float:
    """A fraction in [0, 1) fixed by the key (blake2b, 64 bits): the same on every run."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


def plan_spread(
    entries: Sequence[KeyExpiry],
    spread_ms: int,
    *,
    bucket_ms: int = 1000,
    min_share: float = 0.01,
    min_keys: int = 10,
) -> SpreadPlan:
    """The re-spread of `entries` over `spread_ms` (see the module docstring). Pure."""
    if spread_ms <= 0:
        raise ValueError("spread must be > 0")
    live = sorted((e for e in entries if e.expire_ms > 0), key=lambda e: e.expire_ms)
    n = len(live)
    if n == 0:
        return SpreadPlan((), (), 0, spread_ms)
    dense_at = max(min_keys, int(min_share * n + 0.999999))
    # group sorted entries by bucket
    buckets: list[tuple[int, int, int]] = []  # (bucket, first index, last index exclusive)
    i = 0
    while i < n:
        b = live[i].expire_ms // bucket_ms
        j = i
        while j < n and live[j].expire_ms // bucket_ms == b:
            j += 1
        buckets.append((b, i, j))
        i = j
    clusters: list[tuple[int, int]] = []  # index ranges [lo, hi)
    for b, lo, hi in buckets:
        if hi - lo < dense_at:
            continue
        if clusters and live[clusters[-1][1] - 1].expire_ms // bucket_ms == b - 1:
            clusters[-1] = (clusters[-1][0], hi)
        else:
            clusters.append((lo, hi))
    moves: list[Move] = []
    found: list[Cluster] = []
    for lo, hi in clusters:
        anchor = live[lo].expire_ms
        found.append(Cluster(anchor, live[hi - 1].expire_ms, hi - lo))
        for e in live[lo:hi]:
            new = anchor + int(key_fraction(e.key) * spread_ms)
            if new > e.expire_ms:
                moves.append(Move(e.key, e.expire_ms, new))
    return SpreadPlan(tuple(moves), tuple(found), n, spread_ms)


def expiry_histogram(
    entries: Sequence[KeyExpiry], plan: SpreadPlan, now_ms: int, bins: int = 12
) -> list[tuple[float, float, int, int]]:
    """(from s, to s, keys before, keys after) in `bins` equal bins of time-until-expiry over
    the range of the clusters before and after (the keys the plan concerns)."""
    if not plan.clusters:
        return []
    moved = {m.key: m.new_ms for m in plan.moves}
    lo = min(c.start_ms for c in plan.clusters)
    hi = max(max(moved.values(), default=lo), max(c.end_ms for c in plan.clusters)) + 1
    width = max((hi - lo) / bins, 1.0)
    before = [0] * bins
    after = [0] * bins
    for e in entries:
        if lo <= e.expire_ms < hi:
            before[min(int((e.expire_ms - lo) / width), bins - 1)] += 1
        new = moved.get(e.key, e.expire_ms)
        if lo <= new < hi:
            after[min(int((new - lo) / width), bins - 1)] += 1
    return [
        (
            (lo + k * width - now_ms) / 1000,
            (lo + (k + 1) * width - now_ms) / 1000,
            before[k],
            after[k],
        )
        for k in range(bins)
    ]


def _redis_error(url: str, exc: BaseException) -> SourceError:
    text = str(exc).strip().splitlines()
    return SourceError(f"redis {redact(url)}", redact(text[0] if text else type(exc).__name__))


async def collect_expiries(
    client: redis.asyncio.Redis,
    match: str,
    *,
    url: str,
    count: int = 250,
    on_progress: Callable[[int], None] | None = None,
) -> list[KeyExpiry]:
    """Every key matching `match` (SCAN MATCH, never KEYS) with its absolute expiry in ms
    (PEXPIRETIME of a SCAN batch in one short script: one reply to parse, not one per key;
    -1 when it has none, keys gone meanwhile dropped)."""
    out: dict[bytes, KeyExpiry] = {}
    cursor = b"0"
    step = client.register_script(_SCAN_EXPIRETIMES)
    try:
        while True:
            cursor, packed = await step(args=[cursor, match, count])
            _unpack(bytes(packed), out)
            if on_progress is not None:
                on_progress(len(out))
            if cursor in (b"0", 0, "0"):
                break
    except (redis.exceptions.RedisError, OSError) as exc:
        raise _redis_error(url, exc) from None
    # SCAN may return a key twice across calls (rehash): the dict kept one
    return list(out.values())


def _unpack(packed: bytes, out: dict[bytes, KeyExpiry]) -> None:
    """Decode "<len>:<key><ms>\\n" records; keys gone meanwhile (-2) are dropped."""
    i, n = 0, len(packed)
    while i < n:
        colon = packed.index(b":", i)
        size = int(packed[i:colon])
        key = packed[colon + 1 : colon + 1 + size]
        nl = packed.index(b"\n", colon + 1 + size)
        ms = int(packed[colon + 1 + size : nl])
        if ms != -2:
            out[key] = KeyExpiry(key, ms)
        i = nl + 1


def key_text(key: bytes) -> str:
    """The key as JSON-safe text (undecodable bytes kept through surrogateescape)."""
    return key.decode("utf-8", "surrogateescape")


def key_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


async def _cas_batches(
    client: redis.asyncio.Redis,
    triples: Sequence[tuple[bytes, int, int]],
    *,
    batch: int,
    rate: float,
    before_send: Callable[[Sequence[tuple[bytes, int, int]]], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Send (key, expected ms, new ms) in CAS batches, paced to `rate` keys/s; how many set."""
    script = client.register_script(_CAS_EXPIRE)
    start = time.monotonic()
    done = written = 0
    for i in range(0, len(triples), batch):
        chunk = triples[i : i + batch]
        if before_send is not None:
            before_send(chunk)
        args: list[int] = []
        for _, expected, new in chunk:
            args += [expected, new]
        written += int(await script(keys=[k for k, _, _ in chunk], args=args))
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, len(triples))
        # pace: never ahead of `rate` keys per second, so other clients keep their latency
        ahead = done / rate - (time.monotonic() - start)
        if ahead > 0:
            await asyncio.sleep(ahead)
    return written


async def apply_spread(
    client: redis.asyncio.Redis,
    plan: SpreadPlan,
    undo: UndoWriter,
    *,
    url: str,
    batch: int = 200,
    rate: float = 50_000.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> ApplyResult:
    """Write the plan's moves (see the module docstring); each batch is in `undo` before it is
    sent. Returns how many keys were re-spread and how many had changed since the plan."""
    if batch < 1 or not rate > 0:
        raise HerdwatchError("--batch must be >= 1 and --rate > 0")
    t0 = time.monotonic()

    def record(chunk: Sequence[tuple[bytes, int, int]]) -> None:
        undo.add([{"k": key_text(k), "old": old, "new": new} for k, old, new in chunk])

    triples = [(m.key, m.old_ms, m.new_ms) for m in plan.moves]
    try:
        written = await _cas_batches(
            client, triples, batch=batch, rate=rate, before_send=record, on_progress=on_progress
        )
    except (redis.exceptions.RedisError, OSError) as exc:
        raise _redis_error(url, exc) from None
    return ApplyResult(written, len(triples) - written, time.monotonic() - t0)


async def undo_spread(
    client: redis.asyncio.Redis,
    records: Sequence[dict[str, Any]],
    *,
    url: str,
    batch: int = 200,
    rate: float = 50_000.0,
) -> ApplyResult:
    """Put back `old` for every key whose expiry is still the `new` that was written."""
    t0 = time.monotonic()
    try:
        triples = [(key_bytes(str(r["k"])), int(r["new"]), int(r["old"])) for r in records]
    except (KeyError, TypeError, ValueError) as exc:
        raise HerdwatchError(f"undo file: bad record ({exc!r})") from None
    try:
        restored = await _cas_batches(client, triples, batch=batch, rate=rate)
    except (redis.exceptions.RedisError, OSError) as exc:
        raise _redis_error(url, exc) from None
    return ApplyResult(restored, len(triples) - restored, time.monotonic() - t0)


def plan_summary(plan: SpreadPlan) -> str:
    """One line for people: clusters found and keys that would move."""
    if not plan.clusters:
        return f"{plan.considered} keys with an expiry: no cluster to re-spread"
    parts = ", ".join(
        f"{c.keys} keys within {(c.end_ms - c.start_ms) / 1000:.3g}s" for c in plan.clusters
    )
    return (
        f"{plan.considered} keys with an expiry; cluster(s): {parts}; "
        f"{len(plan.moves)} keys to move over {plan.spread_ms / 1000:g}s"
    )


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
