"""herdwatch.yaml, HERDWATCH_* variables and flags, merged into one frozen, typed `Config`.

Layers, lowest first (a later layer overrides a key of an earlier one; mappings merge key by key,
lists are replaced):

1. the discovered file: `./herdwatch.yaml`, else `$XDG_CONFIG_HOME/herdwatch/herdwatch.yaml`
   (only when no `--config FILE` is given);
2. `DIR/herdwatch.yaml` of a replay directory (it describes that recording);
3. `--config FILE`;
4. `HERDWATCH_*` environment variables;
5. command-line flags.

Environment variables: every key has one, named `HERDWATCH_` + its path upper-cased with `.` as
`_` (`sources.redis.url` -> `HERDWATCH_SOURCES_REDIS_URL`, `daemon.interval` ->
`HERDWATCH_DAEMON_INTERVAL`). Maps whose keys are names take the name as the last part:
`HERDWATCH_SIGNALS_DB_LATENCY=myapp_db_query_seconds`, and a rule takes a YAML flow mapping:
`HERDWATCH_RULES_CACHE_STAMPEDE='{enabled: false}'`. Lists take YAML (`[a, b]`) or commas (`a,b`).
Other `HERDWATCH_*` names are ignored (they may hold secrets named by `*_env` keys).

Secrets never live in the config: a password is named by a `*_env` key (an environment variable)
or a `*_file` key (a file holding it); a URL or DSN with a password in it is refused.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from herdwatch.config._durations import parse_duration
from herdwatch.config._secrets import redact, register_secret
from herdwatch.config._sizes import format_size, parse_size
from herdwatch.config._yaml import LineOf, load_with_lines
from herdwatch.config._zones import zone
from herdwatch.errors import ConfigError

__all__ = [
    "PROMETHEUS_MAX_QUERIES",
    "PROMETHEUS_MAX_RANGE",
    "REPLAY_MEMORY_BUDGET",
    "AlertmanagerConfig",
    "AlertsConfig",
    "Config",
    "DaemonConfig",
    "LeaderConfig",
    "MitigationsConfig",
    "PostgresConfig",
    "PrometheusConfig",
    "RedisConfig",
    "ShardConfig",
    "SmtpConfig",
    "SourcesConfig",
    "TimeSpec",
    "WebhookConfig",
    "env_var_names",
    "find_config_file",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_size",
    "parse_time",
    "redact",
    "register_secret",
    "resolve_secret",
    "split_matcher",
]

CONFIG_NAME = "herdwatch.yaml"
ENV_PREFIX = "HERDWATCH_"

# Typed configuration


#: HTTP requests one Prometheus fetch may send (`--max-queries`)
PROMETHEUS_MAX_QUERIES = 2000
#: the longest range one Prometheus fetch reads: 31 days
PROMETHEUS_MAX_RANGE = 31 * 86400.0
#: the memory a replay may take (`sources.replay_memory`): 2 GiB, estimated from its files'
#: sizes before any is parsed (herdwatch.sources.replay.replay_memory)
REPLAY_MEMORY_BUDGET = 2 << 30


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    url: str
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    timeout: float = 30.0
    max_queries: int = PROMETHEUS_MAX_QUERIES
    max_range: float = PROMETHEUS_MAX_RANGE


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    password_env: str | None = None
    password_file: str | None = None


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    dsn: str
    password_env: str | None = None
    password_file: str | None = None
    sample_interval: float = 0.1


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    prometheus: PrometheusConfig | None = None
    redis: RedisConfig | None = None
    postgres: PostgresConfig | None = None
    host: bool = False
    logs: tuple[str, ...] = ()
    replay_memory: int = REPLAY_MEMORY_BUDGET
    #: the zone of log times written without one (`UTC+5:30`, `EST`, `America/New_York`)
    log_timezone: str | None = None

    @property
    def any(self) -> bool:
        """True when at least one source is configured."""
        return bool(self.prometheus or self.redis or self.postgres or self.host or self.logs)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """`starttls` upgrades a plain connection, `tls` connects with TLS from the start (465).
    `severities` / `signatures` route: empty means every one."""

    host: str
    to: tuple[str, ...]
    from_addr: str
    port: int = 587
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    timeout: float = 10.0
    severities: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """`format` is `json` (herdwatch's payload) or `slack` (Slack-compatible blocks)."""

    url: str
    format: str = "json"
    timeout: float = 10.0
    severities: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    """`resend`: how often a firing alert is posted again (Alertmanager resolves an alert it
    has not heard of for its resolve_timeout); `runbook_url` becomes an annotation."""

    url: str
    resend: float = 60.0
    runbook_url: str = ""
    timeout: float = 10.0
    severities: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Notifiers and the alert lifecycle: `hold` is each rule's `for:` (seconds a finding must
    last before it fires), `renotify` how often a firing alert is sent again, `group_window`
    how close onsets must be to share one notification, `outbox` the SQLite file (None: the
    state directory), `dead_after` the age at which an undelivered notification is dead."""

    smtp: SmtpConfig | None = None
    webhook: WebhookConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    hold: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    renotify: float = 4 * 3600.0
    group_window: float = 30.0
    outbox: str | None = None
    dead_after: float = 3600.0


@dataclass(frozen=True, slots=True)
class LeaderConfig:
    """Leadership through a Redis lease: only the holder of `key` notifies; `ttl` bounds how
    long a dead leader keeps it."""

    redis: str
    password_env: str | None = None
    password_file: str | None = None
    key: str = "herdwatch:daemon:leader"
    ttl: float = 10.0


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """This daemon's share of the fleet: it notifies the findings whose subject matches any of
    `owns` (matchers on subject labels, `name=value`, `name!=value`, `name=~regex`,
    `name!~regex`; None: every subject) and, when `fleet`, the fleet-wide ones (empty subject),
    under the subject `{herdwatch_shard: name}`. With `leader`, the lease is per shard."""

    name: str
    owns: tuple[str, ...] | None = None
    fleet: bool = True


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """`log_format` text or json (one object a line); `drain_timeout`: how long SIGTERM waits
    for the outbox to drain."""

    interval: float = 1.0
    listen: str = "127.0.0.1:9464"
    log_format: str = "text"
    drain_timeout: float = 10.0
    leader: LeaderConfig | None = None
    shard: ShardConfig | None = None

    @property
    def lease_key(self) -> str | None:
        """The Redis key of this daemon's lease: `leader.key`, then `:` and the shard's name
        (each shard's group elects its own leader); None without `leader`."""
        if self.leader is None:
            return None
        return self.leader.key if self.shard is None else f"{self.leader.key}:{self.shard.name}"


@dataclass(frozen=True, slots=True)
class MitigationsConfig:
    allow: tuple[str, ...] = ()


def _empty_map() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """The merged configuration. `signals` maps a logical signal to a family (or PromQL);
    `rules` maps a rule id to its parameter overrides. `origins` tells, for each key path that
    was set (`rules.cache_stampede.enabled`), where: `(file or variable, line or None)`."""

    sources: SourcesConfig = field(default_factory=SourcesConfig)
    signals: Mapping[str, str] = field(default_factory=_empty_map)
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_map)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    mitigations: MitigationsConfig = field(default_factory=MitigationsConfig)
    files: tuple[str, ...] = ()
    origins: Mapping[str, tuple[str, int | None]] = field(default_factory=_empty_map, repr=False)

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for `key` (a dotted path) that names where that key was set."""
        probe = key
        while probe:
            if probe in self.origins:
                file, line = self.origins[probe]
                return ConfigError(message, file=file, line=line, key=key)
            probe = probe.rpartition(".")[0]
        return ConfigError(message, key=key)

    def relocate(self, exc: ConfigError) -> ConfigError:
        """`exc` (raised deeper down, naming a key but no file) with the file:line where that
        key was set; `exc` itself when it already names a file or no key."""
        if exc.file is not None or not exc.key:
            return exc
        message = str(exc)
        if message.startswith(f"{exc.key}: "):
            message = message[len(exc.key) + 2 :]
        return self.error(exc.key, message)


# Durations, times, secrets

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class TimeSpec:
    """A point in time from `--since/--until`: absolute unix seconds, or `ago` seconds before a
    reference (now for live sources, the end of the recording for a replay)."""

    absolute: float | None = None
    ago: float | None = None

    def resolve(self, reference: float) -> float:
        if self.absolute is not None:
            return self.absolute
        return reference - (self.ago or 0.0)


#: 9999-12-31T23:59:59Z: later unix seconds are a typo (and no calendar can show them)
MAX_TIME = 253402300799.0


def parse_time(text: str) -> TimeSpec:
    """A duration before the reference (`2h`), an RFC 3339 time (`2025-11-24T16:12:07Z`; without
    an offset it is UTC) or unix seconds (`1764000727`, at most `MAX_TIME`). Raises ValueError
    otherwise."""
    s = text.strip()
    if _NUMBER.fullmatch(s):
        value = float(s)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"not a time: {text!r}")
        if value > MAX_TIME:
            raise ValueError(f"not a time: {text!r} is after the year 9999 in unix seconds")
        return TimeSpec(absolute=value)
    try:
        return TimeSpec(ago=parse_duration(s))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use a duration like 2h, RFC 3339 or unix seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        value = dt.timestamp()
    except (OverflowError, OSError, ValueError):
        value = -1.0
    if value < 0:
        raise ValueError(f"not a time: {text!r} is before 1970")
    return TimeSpec(absolute=value)


def _has_password(value: str) -> bool:
    return redact(value) != value


def resolve_secret(
    env_name: str | None,
    file: str | None,
    *,
    key: str,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The secret named by a `*_env` key (environment variable) or a `*_file` key (file content,
    trailing newline dropped); None when neither is set. `key` names the config key for errors."""
    environ = os.environ if environ is None else environ
    if env_name:
        if env_name not in environ:
            raise ConfigError(f"environment variable {env_name} is not set", key=f"{key}_env")
        secret = environ[env_name]
    elif file:
        secret = _read_secret_file(file, f"{key}_file")
    else:
        return None
    register_secret(secret)
    return secret


#: a password or token file larger than this is not one (a wrong path, say /dev/zero)
_MAX_SECRET_FILE = 64 * 1024


def _read_secret_file(file: str, key: str) -> str:
    """The text of a secret file, trailing newline dropped. Its content never reaches an
    error: an undecodable file is reported by its path and the byte offset alone."""
    try:
        with open(file, "rb") as fh:
            data = fh.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}", key=key) from None
    if len(data) > _MAX_SECRET_FILE:
        raise ConfigError(f"{file} is larger than {_MAX_SECRET_FILE} bytes", key=key)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # `from None`, and no exc in the message: a UnicodeDecodeError's text holds the bytes.
        raise ConfigError(
            f"{file} is not UTF-8 text (invalid byte at offset {exc.start})", key=key
        ) from None
    return text.rstrip("\r\n")


# Schema: a nested dict of key -> leaf kind, sub-schema, or a map with free keys


class _MapOf:
    """A mapping whose keys are names (signal names, rule ids), each value of `kind`."""

    __slots__ = ("env_style", "kind")

    def __init__(self, kind: Any, env_style: str) -> None:
        self.kind = kind
        self.env_style = env_style


_SECRET = {"password_env": "str", "password_file": "str"}
_ROUTE = {"severities": "str_list", "signatures": "str_list"}
_SCHEMA: dict[str, Any] = {
    "sources": {
        "prometheus": {
            "url": "url",
            "username": "str",
            **_SECRET,
            "bearer_token_env": "str",
            "bearer_token_file": "str",
            "ca_file": "str",
            "insecure_skip_verify": "bool",
            "timeout": "duration",
            "max_queries": "count",
            "max_range": "duration",
        },
        "redis": {"url": "url", **_SECRET},
        "postgres": {"dsn": "url", **_SECRET, "sample_interval": "duration"},
        "host": "bool",
        "logs": "str_list",
        "log_timezone": "timezone",
        "replay_memory": "size",
    },
    "signals": _MapOf("str", env_style="value"),
    "rules": _MapOf("params", env_style="yaml"),
    "alerts": {
        "smtp": {
            "host": "str",
            "port": "port",
            "starttls": "bool",
            "tls": "bool",
            "username": "str",
            **_SECRET,
            "from": "str",
            "to": "str_list",
            "timeout": "duration",
            **_ROUTE,
        },
        "webhook": {
            "url": "url",
            "url_env": "str",
            "url_file": "str",
            "format": "str",
            "timeout": "duration",
            **_ROUTE,
        },
        "alertmanager": {
            "url": "url",
            "resend": "duration",
            "runbook_url": "str",
            "timeout": "duration",
            **_ROUTE,
        },
        "for": _MapOf("duration", env_style="value"),
        "renotify": "duration",
        "group_window": "duration",
        "outbox": "str",
        "dead_after": "duration",
    },
    "daemon": {
        "interval": "duration",
        "listen": "address",
        "log_format": "str",
        "drain_timeout": "duration",
        "leader": {"redis": "url", **_SECRET, "key": "str", "ttl": "duration"},
        "shard": {"name": "str", "owns": "str_list", "fleet": "bool"},
    },
    "mitigations": {"allow": "str_list"},
}


def env_var_names() -> dict[str, str]:
    """Every fixed key path and its variable (`sources.redis.url` -> HERDWATCH_SOURCES_REDIS_URL);
    name maps add `HERDWATCH_SIGNALS_<NAME>` and `HERDWATCH_RULES_<RULE_ID>`."""
    out: dict[str, str] = {}

    def walk(schema: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, sub in schema.items():
            p = (*path, key)
            if isinstance(sub, dict):
                walk(sub, p)
            elif not isinstance(sub, _MapOf):
                out[".".join(p)] = ENV_PREFIX + "_".join(p).upper()

    walk(_SCHEMA, ())
    return out


class _Layer:
    """One source of settings: validates values against the schema as they come in, so each
    error names the file:line (or variable) where the bad key was written."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.origins: dict[str, tuple[str, int | None]] = {}


def _leaf(kind: str, value: Any, key: str, where: tuple[str, int | None]) -> Any:
    file, line = where

    def bad(message: str) -> ConfigError:
        return ConfigError(message, file=file, line=line, key=key)

    if kind == "str":
        if not isinstance(value, str):
            raise bad(f"expected a string, got {_kind_name(value)}")
        return value
    if kind == "timezone":
        if not isinstance(value, str):
            raise bad(f"expected a time zone, got {_kind_name(value)}")
        try:
            zone(value)
        except ValueError as exc:
            raise bad(
                f"{exc} (UTC+5:30, -05:00, EST or an IANA name such as Asia/Kolkata)"
            ) from None
        return value
    if kind == "url":
        if not isinstance(value, str) or not value.strip():
            raise bad(f"expected a URL, got {_kind_name(value)}")
        if _has_password(value):
            section = key.rpartition(".")[0]
            if key == "alerts.webhook.url":  # the secret is the URL: it has no password key
                raise bad(
                    f"a secret inside the URL is not allowed ({redact(value)}); put the whole "
                    f"URL in the variable named by {key}_env or the file named by {key}_file"
                )
            raise bad(
                f"a password inside the URL is not allowed ({redact(value)}); "
                f"name it with {section}.password_env or {section}.password_file"
            )
        if "://" in value:
            _check_url(value, bad)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad(f"expected true or false, got {_kind_name(value)}")
        return value
    if kind == "count":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
            raise bad(f"expected a whole number from 1 to {2**31 - 1}, got {value!r}")
        return value
    if kind == "size":
        try:
            return parse_size(value)
        except ValueError as exc:
            raise bad(str(exc)) from None
    if kind == "port":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise bad(f"expected a port number (1-65535), got {value!r}")
        return value
    if kind == "duration":
        if isinstance(value, dict | list) or value is None:
            raise bad(f"expected a duration such as 1s, 500ms or 2h, got {_kind_name(value)}")
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if seconds <= 0:
            raise bad(f"a duration must be positive, got {value!r}")
        return seconds
    if kind == "address":
        _host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"expected host:port, got {value!r}")
        return value
    if kind == "str_list":
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(f"expected a list of strings, got {_kind_name(value)}")
        return tuple(value)
    if kind == "params":
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad(f"expected a mapping of rule parameters, got {_kind_name(value)}")
        for k, v in value.items():
            if not isinstance(k, str):
                raise bad(f"parameter names are strings, got {k!r}")
            if isinstance(v, dict):
                raise bad(f"{k}: a rule parameter is a scalar or a list")
        return dict(value)
    raise AssertionError(kind)


def _check_url(value: str, bad: Callable[[str], ConfigError]) -> None:
    """Refuse a URL Python cannot take apart (`http://[::1`, a port that is no number or out of
    range, no host), naming it; `unix://` URLs name a socket path instead of a host."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- parsing the port is the check
    except ValueError as exc:
        raise bad(f"not a valid URL ({exc}): {redact(value)}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise bad(f"unix:// URL without a socket path: {redact(value)}")
        return
    if not parts.hostname:
        raise bad(f"URL without a host: {redact(value)}")


def _kind_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"


# --- YAML files, with the line of every key


def _read_yaml(path: Path, layer: _Layer) -> None:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("config is not UTF-8 text", file=file) from None

    def error(message: str, line: int | None, key: str | None) -> ConfigError:
        return ConfigError(message, file=file, line=line, key=key)

    doc, line_of = load_with_lines(text, error)
    if doc is not None:
        _walk(doc, _SCHEMA, (), _Where(file, line_of), layer.tree, layer.origins)


@dataclass(frozen=True, slots=True)
class _Where:
    """The file being read and the line of each key path in it."""

    file: str
    line_of: LineOf

    def at(self, path: tuple[str, ...]) -> tuple[str, int | None]:
        return self.file, self.line_of(path)

    def error(self, path: tuple[str, ...], message: str, key: str | None = None) -> ConfigError:
        dotted = key if key is not None else ".".join(path) or None
        return ConfigError(message, file=self.file, line=self.line_of(path), key=dotted)


def _walk(
    value: Any,
    schema: dict[str, Any],
    path: tuple[str, ...],
    where: _Where,
    out: dict[str, Any],
    origins: dict[str, tuple[str, int | None]],
) -> None:
    """Check the mapping `value` at `path` against `schema` into `out`, recording each key's
    file:line in `origins`."""
    if not isinstance(value, dict):
        raise where.error(path, f"expected a mapping, got {_kind_name(value)}")
    for name, sub_value in value.items():
        if not isinstance(name, str):
            raise where.error((*path, name), f"keys are strings, got {name!r}", ".".join(path))
        p = (*path, name)
        dotted = ".".join(p)
        if name not in schema:
            known = ", ".join(sorted(schema))
            raise where.error(p, f"unknown key (known here: {known})")
        sub = schema[name]
        origins[dotted] = where.at(p)
        if isinstance(sub, dict):
            if sub_value is None:
                out.setdefault(name, {})
                continue
            _walk(sub_value, sub, p, where, out.setdefault(name, {}), origins)
        elif isinstance(sub, _MapOf):
            _walk_map(sub_value, sub, p, where, out.setdefault(name, {}), origins)
        else:
            out[name] = _leaf(sub, sub_value, dotted, where.at(p))


def _walk_map(
    value: Any,
    sub: _MapOf,
    path: tuple[str, ...],
    where: _Where,
    target: dict[str, Any],
    origins: dict[str, tuple[str, int | None]],
) -> None:
    """A map whose keys are names (`signals:`, `rules:`): each value is a `sub.kind` leaf."""
    dotted = ".".join(path)
    if value is None:
        return
    if not isinstance(value, dict):
        raise where.error(path, f"expected a mapping, got {_kind_name(value)}")
    for item, item_value in value.items():
        if not isinstance(item, str):
            raise where.error((*path, item), f"names are strings, got {item!r}", dotted)
        p = (*path, item)
        origins[f"{dotted}.{item}"] = where.at(p)
        coerced = _leaf(sub.kind, item_value, f"{dotted}.{item}", where.at(p))
        if sub.kind == "params":
            for param in coerced:
                origins[f"{dotted}.{item}.{param}"] = where.at((*p, param))
        target[item] = coerced


# --- environment and flags


def _read_env(environ: Mapping[str, str], layer: _Layer) -> None:
    fixed = {var: path for path, var in env_var_names().items()}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        raw = environ[var]
        where = (f"${var}", None)
        if var in fixed:
            path = fixed[var].split(".")
            kind = _schema_at(path)
            value: Any = _env_value(kind, raw, var)
            _set(layer, path, _leaf(kind, value, fixed[var], where), where)
            continue
        for section, sub in _SCHEMA.items():
            head = f"{ENV_PREFIX}{section.upper()}_"
            if isinstance(sub, _MapOf) and var.startswith(head) and len(var) > len(head):
                name = var[len(head) :].lower()
                dotted = f"{section}.{name}"
                value = _env_value(sub.kind, raw, var)
                _set(layer, [section, name], _leaf(sub.kind, value, dotted, where), where)


def _env_value(kind: str, raw: str, var: str) -> Any:
    if kind in ("str", "url", "address", "duration"):
        return raw
    if kind == "str_list" and not raw.lstrip().startswith("["):
        return [part.strip() for part in raw.split(",") if part.strip()]

    def error(message: str, line: int | None, key: str | None) -> ConfigError:
        # the value itself is left out: a variable next to secrets may hold one by mistake
        return ConfigError(message.removeprefix("invalid YAML: "), file=f"${var}")

    doc, _ = load_with_lines(raw, error)
    return doc


def _schema_at(path: list[str]) -> Any:
    node: Any = _SCHEMA
    for part in path:
        node = node[part]
    return node


def _set(layer: _Layer, path: list[str], value: Any, where: tuple[str, int | None]) -> None:
    node = layer.tree
    for i, part in enumerate(path[:-1]):
        node = node.setdefault(part, {})
        layer.origins.setdefault(".".join(path[: i + 1]), where)
    node[path[-1]] = value
    layer.origins[".".join(path)] = where


def _read_flags(flags: Mapping[str, Any], layer: _Layer) -> None:
    """Flags as dotted key paths (`{"sources.redis.url": "redis://..."}`); None means unset."""
    where = ("command line", None)
    for dotted, value in flags.items():
        if value is None or value == ():
            continue
        path = dotted.split(".")
        try:
            kind = _schema_at(path)
        except (KeyError, TypeError):
            if path[0] in _SCHEMA and isinstance(_SCHEMA[path[0]], _MapOf) and len(path) == 2:
                kind = _SCHEMA[path[0]].kind
            else:
                raise ConfigError("unknown key", file="command line", key=dotted) from None
        if isinstance(value, tuple):
            value = list(value)
        _set(layer, path, _leaf(kind, value, dotted, where), where)


# --- merge and build


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _require(tree: Mapping[str, Any], key: str, section: str, cfg: Config) -> Any:
    if key not in tree:
        raise cfg.error(section, f"missing required key {key!r}")
    return tree[key]


_SEVERITIES = ("info", "warning", "critical")


def _webhook_url(hook: Mapping[str, Any], probe: Config) -> str:
    """`alerts.webhook.url`, or the URL held by the variable or file `url_env` / `url_file`
    name (a Slack-style URL is its own secret): registered as a secret, so that every output
    path's redact() hides it whole."""
    given = [k for k in ("url", "url_env", "url_file") if hook.get(k)]
    if len(given) != 1:
        raise probe.error("alerts.webhook", "set exactly one of url, url_env or url_file")
    if given == ["url"]:
        return str(hook["url"])
    try:
        url = resolve_secret(hook.get("url_env"), hook.get("url_file"), key="alerts.webhook.url")
    except ConfigError as exc:
        raise probe.relocate(exc) from None
    url = (url or "").strip()
    scheme = url.partition("://")[0].lower()
    if scheme not in ("http", "https") or not url.partition("://")[2]:
        # its content is a secret: say what is wrong, never what it is
        raise probe.error(f"alerts.webhook.{given[0]}", "does not hold an http(s):// URL")
    register_secret(url)
    # HTTP errors quote the request's path alone (`Max retries exceeded with url: /services/T0/B0/
    # XXXX`): a path long enough to hold a token is a secret too
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if len(target) >= 16:
        register_secret(target)
    return url


def _build_alerts(al: Mapping[str, Any], probe: Config) -> AlertsConfig:
    for name in ("smtp", "webhook", "alertmanager"):
        bad = set((al.get(name) or {}).get("severities", ())) - set(_SEVERITIES)
        if bad:
            raise probe.error(
                f"alerts.{name}.severities",
                f"unknown severity {sorted(bad)[0]!r} (known: {', '.join(_SEVERITIES)})",
            )
    smtp = al.get("smtp")
    hook = al.get("webhook")
    am = al.get("alertmanager")
    if hook is not None and hook.get("format", "json") not in ("json", "slack"):
        raise probe.error("alerts.webhook.format", "expected json or slack")
    rest = {k: al[k] for k in ("renotify", "group_window", "outbox", "dead_after") if k in al}
    return AlertsConfig(
        smtp=SmtpConfig(
            host=_require(smtp, "host", "alerts.smtp", probe),
            to=_require(smtp, "to", "alerts.smtp", probe),
            from_addr=_require(smtp, "from", "alerts.smtp", probe),
            **{k: v for k, v in smtp.items() if k not in ("host", "to", "from")},
        )
        if smtp is not None
        else None,
        webhook=WebhookConfig(
            url=_webhook_url(hook, probe),
            **{k: v for k, v in hook.items() if k not in ("url", "url_env", "url_file")},
        )
        if hook is not None
        else None,
        alertmanager=AlertmanagerConfig(
            url=_require(am, "url", "alerts.alertmanager", probe),
            **{k: v for k, v in am.items() if k != "url"},
        )
        if am is not None
        else None,
        hold=MappingProxyType(dict(al.get("for", {}))),
        **rest,
    )


#: a shard's name: it ends the lease key and labels its fleet-wide findings
_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
#: one label matcher: `name=value`, `name!=value`, `name=~regex`, `name!~regex`
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")


def split_matcher(text: str) -> tuple[str, str, str]:
    """`instance=~"redis-.*"` -> (name, op, value), quotes around the value dropped; ValueError
    when malformed or the regex does not compile. The one grammar of silences (herdwatch.alert)
    and of `daemon.shard.owns`."""
    m = _MATCHER.fullmatch(text)
    if m is None:
        raise ValueError(f"not a matcher: {text!r} (name=value, name!=value, name=~regex)")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regular expression in {text!r}: {exc}") from None
    return name, op, value


def _build_shard(shard: Mapping[str, Any], probe: Config) -> ShardConfig:
    name = _require(shard, "name", "daemon.shard", probe)
    if not _SHARD_NAME.fullmatch(name):
        raise probe.error(
            "daemon.shard.name",
            f"expected letters, digits, '_', '.' or '-' (at most 63), got {name!r}",
        )
    owns = shard.get("owns")
    for text in owns or ():
        try:
            split_matcher(text)
        except ValueError as exc:
            raise probe.error("daemon.shard.owns", str(exc)) from None
    if owns is not None and not owns and not shard.get("fleet", True):
        raise probe.error("daemon.shard", "owns no subject and no fleet-wide finding")
    return ShardConfig(
        name=name, owns=tuple(owns) if owns is not None else None, fleet=shard.get("fleet", True)
    )


def _build(tree: Mapping[str, Any], files: tuple[str, ...], origins: dict[str, Any]) -> Config:
    # A bare Config gives errors their file:line through `origins` while the real one is built.
    probe = Config(origins=MappingProxyType(dict(origins)))
    src = tree.get("sources", {})
    prom = src.get("prometheus")
    redis = src.get("redis")
    pg = src.get("postgres")
    sources = SourcesConfig(
        prometheus=PrometheusConfig(
            url=_require(prom, "url", "sources.prometheus", probe),
            **{k: v for k, v in prom.items() if k != "url"},
        )
        if prom is not None
        else None,
        redis=RedisConfig(
            url=_require(redis, "url", "sources.redis", probe),
            **{k: v for k, v in redis.items() if k != "url"},
        )
        if redis is not None
        else None,
        postgres=PostgresConfig(
            dsn=_require(pg, "dsn", "sources.postgres", probe),
            **{k: v for k, v in pg.items() if k != "dsn"},
        )
        if pg is not None
        else None,
        host=bool(src.get("host", False)),
        logs=tuple(src.get("logs", ())),
        replay_memory=src.get("replay_memory", REPLAY_MEMORY_BUDGET),
        log_timezone=src.get("log_timezone"),
    )
    for name, sec in (("prometheus", prom), ("redis", redis), ("postgres", pg)):
        if sec and sec.get("password_env") and sec.get("password_file"):
            raise probe.error(
                f"sources.{name}.password_file", "set password_env or password_file, not both"
            )
    al = tree.get("alerts", {})
    alerts = _build_alerts(al, probe)
    daemon = dict(tree.get("daemon", {}))
    if daemon.get("log_format", "text") not in ("text", "json"):
        raise probe.error("daemon.log_format", "expected text or json")
    leader = daemon.pop("leader", None)
    if leader is not None:
        daemon["leader"] = LeaderConfig(
            redis=_require(leader, "redis", "daemon.leader", probe),
            **{k: v for k, v in leader.items() if k != "redis"},
        )
    shard = daemon.pop("shard", None)
    if shard is not None:
        daemon["shard"] = _build_shard(shard, probe)
    return Config(
        sources=sources,
        signals=MappingProxyType(dict(tree.get("signals", {}))),
        rules=MappingProxyType(
            {k: MappingProxyType(dict(v)) for k, v in tree.get("rules", {}).items()}
        ),
        alerts=alerts,
        daemon=DaemonConfig(**daemon),
        mitigations=MitigationsConfig(**tree.get("mitigations", {})),
        files=files,
        origins=probe.origins,
    )


def find_config_file(
    explicit: Path | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path | None:
    """`explicit` (which must exist), else `./herdwatch.yaml`, else
    `$XDG_CONFIG_HOME/herdwatch/herdwatch.yaml` (XDG default `~/.config`), else None."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError("config file not found", file=str(explicit))
        return explicit
    environ = os.environ if environ is None else environ
    local = (cwd or Path.cwd()) / CONFIG_NAME
    if local.is_file():
        return local
    xdg = environ.get("XDG_CONFIG_HOME") or str(
        Path(environ.get("HOME", "~")).expanduser() / ".config"
    )
    candidate = Path(xdg) / "herdwatch" / CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_config(
    path: Path | None = None,
    *,
    replay_dir: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    discover: bool = True,
) -> Config:
    """The merged Config (see the module docstring for the layers and their order).

    `flags` are dotted key paths from the command line. Raises ConfigError naming file:line and
    the key path for an unknown key, a wrong type or a bad value."""
    environ = os.environ if environ is None else environ
    files: list[Path] = []
    if path is not None:
        found = find_config_file(path)
    elif discover:
        found = find_config_file(cwd=cwd, environ=environ)
    else:
        found = None
    replay_cfg = replay_dir / CONFIG_NAME if replay_dir is not None else None
    if replay_cfg is not None and replay_cfg.is_file():
        if path is None and found is not None and found.resolve() == replay_cfg.resolve():
            found = None
        if path is None and found is not None:
            files.append(found)
        files.append(replay_cfg)
        if path is not None and found is not None:
            files.append(found)
    elif found is not None:
        files.append(found)

    layers: list[_Layer] = []
    for f in files:
        layer = _Layer()
        _read_yaml(f, layer)
        layers.append(layer)
    env_layer = _Layer()
    _read_env(environ, env_layer)
    layers.append(env_layer)
    flag_layer = _Layer()
    _read_flags(flags or {}, flag_layer)
    layers.append(flag_layer)

    tree: dict[str, Any] = {}
    origins: dict[str, tuple[str, int | None]] = {}
    for layer in layers:
        tree = _merge(tree, layer.tree)
        origins.update(layer.origins)
    return _build(tree, tuple(str(f) for f in files), origins)
