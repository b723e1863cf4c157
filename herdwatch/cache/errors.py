"""The error tree of the cache client (standalone: no import of the rest of herdwatch).

CacheError
├── LeaseLostError   the fill's lease was invalidated or expired; its write was refused
├── Overloaded       too many loads in flight: shed at once (HTTP 503 semantics)
├── CircuitOpen      the loader's circuit breaker is open (HTTP 503 semantics)
├── RateLimited      the load token bucket is empty (HTTP 429 semantics); has retry_after
├── SettingsError    runtime settings that fail validation; names the key
└── CodecError       a value the codec cannot encode or decode
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CircuitOpen",
    "CodecError",
    "LeaseLostError",
    "Overloaded",
    "RateLimited",
    "SettingsError",
]


class CacheError(Exception):
    """Base of every error the cache client raises on purpose; its str() is one line."""


class LeaseLostError(CacheError):
    """The lease token no longer owns the key (invalidated, or expired and taken by another)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"lease on {key!r} lost: the fill's write was refused")


class Overloaded(CacheError):
    """Shed immediately because ``limit`` loads are already running (503 semantics)."""

    status = 503

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"overloaded: {limit} loads already in flight")


class CircuitOpen(CacheError):
    """The breaker around ``name`` is open; calls fail fast until ``retry_after`` seconds pass."""

    status = 503

    def __init__(self, name: str, retry_after: float) -> None:
        self.name, self.retry_after = name, retry_after
        super().__init__(f"circuit {name} open, retry after {retry_after:.3f}s")


class RateLimited(CacheError):
    """The token bucket is empty; a token is due in ``retry_after`` seconds (429 semantics)."""

    status = 429

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limited, retry after {retry_after:.3f}s")


class SettingsError(CacheError):
    """Cache settings that fail validation; ``key`` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"setting {key}: {message}")


class CodecError(CacheError):
    """The codec cannot encode or decode a value."""
