"""What labels say: which server a series is on, which peer a call went to, which calls failed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from herdwatch.model import Series

#: labels that say which state a connection is in, not which server it is on
CONN_STATE_LABELS = frozenset(
    {
        "state",
        "datname",
        "usename",
        "application_name",
        "wait_event",
        "wait_event_type",
        "backend_type",
    }
)
IDLE_STATES = frozenset({"idle", ""})
#: labels that carry a call's outcome, the first present wins
CODE_LABELS = (
    "code",
    "status",
    "status_code",
    "http_response_status_code",
    "http_status_code",
    "http_status",
    "rpc_grpc_status_code",
    "grpc_code",
    "response_code",
    "outcome",
    "result",
)
#: labels that name the dependency a client calls, most specific first; without one, all calls
#: to upstreams form one group
PEER_LABELS = (
    "peer",
    "upstream",
    "target",
    "service",
    "server_address",
    "client_name",
    "net_peer_name",
    "destination",
    "dependency",
    "remote",
)
_ERROR_WORDS = frozenset(
    {
        "",
        "0",
        "error",
        "err",
        "timeout",
        "failure",
        "failed",
        "refused",
        "exception",
        "connection_error",
        "unavailable",
        "5xx",
        # Spring's http.client.requests `status` when no response came (IO_ERROR, CLIENT_ERROR),
        # Micrometer's `outcome` and gRPC's status names
        "io_error",
        "client_error",
        "server_error",
        "deadline_exceeded",
        "internal",
    }
)
#: answers that say the upstream is up and shedding load (rate limited), not down
_THROTTLE_WORDS = frozenset({"429", "too_many_requests", "resource_exhausted", "throttled"})


def group_key(s: Series, drop: Iterable[str]) -> str:
    """`k=v,...` of the series' labels less `drop`: a readable name for the group it is in."""
    dropped = set(drop)
    return ",".join(f"{k}={v}" for k, v in s.labels if k not in dropped)


def code_label(series: Sequence[Series]) -> str | None:
    """The first of CODE_LABELS that any of the series carries."""
    keys = {k for s in series for k, _ in s.labels}
    return next((k for k in CODE_LABELS if k in keys), None)


def peer_label(series: Sequence[Series]) -> str | None:
    """The first of PEER_LABELS that any of the series sets to a non-empty value."""
    return next((k for k in PEER_LABELS if any(s.label(k) for s in series)), None)


def is_error_code(value: str) -> bool:
    """HTTP 5xx, 429, a 0 / empty status (connection failed), a word such as error/timeout or
    IO_ERROR, or a throttling answer (`is_throttle_code`)."""
    v = value.strip().lower()
    if v in _ERROR_WORDS or v in _THROTTLE_WORDS:
        return True
    return v.isdigit() and v.startswith("5")


def is_throttle_code(value: str) -> bool:
    """429 Too Many Requests or gRPC RESOURCE_EXHAUSTED: the upstream answered, rate limited."""
    return value.strip().lower() in _THROTTLE_WORDS
