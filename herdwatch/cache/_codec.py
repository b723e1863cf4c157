"""Value codecs and the envelope that stores expiry and recompute time with each value."""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple, Protocol

from herdwatch.cache.errors import CodecError


class Codec(Protocol):
    """Turns values into bytes and back; must never execute code from the bytes (no pickle)."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonCodec:
    """The default codec: compact JSON (safe to read from the network)."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(f"value is not JSON-serializable: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            # Decoding first skips json's encoding sniffing on bytes: cheaper on every hit.
            return json.loads(data.decode())
        except ValueError as exc:
            raise CodecError(f"stored value is not valid JSON: {exc}") from exc


class BytesCodec:
    """Stores ``bytes`` as they are (for callers that serialize themselves)."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CodecError(f"BytesCodec stores bytes, got {type(value).__name__}")
        return bytes(value)

    def loads(self, data: bytes) -> Any:
        return data


# magic, version, soft expiry (unix s), delta (s): 2 + 1 + 8 + 8 = 19 bytes before the payload
_HEADER = struct.Struct(">2sBdd")
_MAGIC = b"HC"
_VERSION = 1
PREFIX = _MAGIC + bytes([_VERSION])  # what the Lua lease script checks before reading expiry
_TAIL = struct.Struct(">dd")  # expiry, delta: read in place on the hit path
_HEADER_SIZE = _HEADER.size


# A NamedTuple, not a frozen dataclass: it is built on every cache hit and costs 4x less.
class Entry(NamedTuple):
    """A stored value: payload bytes, soft expiry (unix seconds), delta (recompute seconds)."""

    payload: bytes
    expiry: float
    delta: float


def pack(payload: bytes, expiry: float, delta: float) -> bytes:
    """The bytes stored in Redis for one value."""
    return _HEADER.pack(_MAGIC, _VERSION, expiry, delta) + payload


def unpack(raw: bytes | str) -> Entry | None:
    """Decode :func:`pack`'s bytes; None for anything else (foreign or older data is a miss)."""
    if not isinstance(raw, bytes) or len(raw) < _HEADER.size or raw[:2] != _MAGIC:
        return None
    _, version, expiry, delta = _HEADER.unpack_from(raw)
    if version != _VERSION:
        return None
    return Entry(raw[_HEADER.size :], expiry, delta)
