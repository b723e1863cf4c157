"""Which sources a command reads: flags, else the config's `sources:`, else discovery."""

from __future__ import annotations

import dataclasses
import urllib.parse
from pathlib import Path
from typing import Any

from herdwatch.config import Config, PostgresConfig, PrometheusConfig, RedisConfig, SourcesConfig
from herdwatch.errors import ConfigError
from herdwatch.sources.base import Source

__all__ = [
    "DISCOVERY",
    "build_sources",
    "discover",
    "engine_overrides",
    "live_config",
    "live_setup",
    "load_rules",
]

# Where a command with no source looks (the usual local ports and paths).
DISCOVERY = {
    "prometheus": "http://127.0.0.1:9090",
    "redis": "redis://127.0.0.1:6379/0",
    "postgres": "postgresql://127.0.0.1:5432/postgres",
    "postgres_socket": "/var/run/postgresql/.s.PGSQL.5432",
    "host": "/proc/stat",
}


def load_rules(cfg: Config) -> list[Any]:
    """The rules with the config's overrides; a bad override names its file:line."""
    from herdwatch.rules import load_rules as load

    try:
        return list(load(overrides=cfg.rules))
    except ConfigError as exc:
        raise cfg.relocate(exc) from None


def live_config(cfg: Config, flagged: set[str]) -> Config:
    """With source flags, only the flagged sources are read (their other keys, such as
    password_env, may still come from the config); without, every configured source."""
    if not flagged:
        return cfg
    src = cfg.sources
    return dataclasses.replace(
        cfg,
        sources=SourcesConfig(
            prometheus=src.prometheus if "prometheus" in flagged else None,
            redis=src.redis if "redis" in flagged else None,
            postgres=src.postgres if "postgres" in flagged else None,
            host=False,
            logs=src.logs if "logs" in flagged else (),
        ),
    )


_LOCATIONS = ("url", "dsn", "logs")


def live_setup(config_file: Path | None, flags: dict[str, object]) -> tuple[Config, bool]:
    """The config a live command reads and whether its sources were discovered: the flagged
    sources, else the config's `sources:`, else what runs on this machine (HerdwatchError when
    nothing does)."""
    from herdwatch.config import load_config
    from herdwatch.errors import HerdwatchError

    # a flag naming where a source is (not one of its settings, such as --max-queries)
    flagged = {
        k.split(".")[1] for k, v in flags.items() if v and k.rsplit(".", 1)[-1] in _LOCATIONS
    }
    cfg = live_config(load_config(config_file, flags=flags), flagged)
    if cfg.sources.any:
        return cfg, False
    cfg = dataclasses.replace(cfg, sources=discover())
    if not cfg.sources.any:
        raise HerdwatchError(
            "no sources: none given and none found on this machine (tried "
            + ", ".join(f"{k} {v}" for k, v in DISCOVERY.items())
            + "); give --replay DIR, --prometheus, --redis, --postgres or --logs"
        )
    return cfg, True


def engine_overrides(cfg: Config) -> dict[str, str]:
    """The `signals:` map the engine applies: with a Prometheus source its PromQL overrides are
    queried by the source, and the engine sees the series' names instead."""
    if cfg.sources.prometheus is None:
        return dict(cfg.signals)
    from herdwatch.sources.prometheus import scan_overrides

    return dict(scan_overrides(cfg.signals))


def build_sources(cfg: Config) -> list[Source]:
    """One Source per configured system (see herdwatch.sources.base.Source)."""
    src = cfg.sources
    out: list[Source] = []
    if src.prometheus is not None:
        from herdwatch.sources.prometheus import PrometheusSource

        out.append(PrometheusSource(src.prometheus, cfg.signals))
    if src.redis is not None:
        from herdwatch.sources.redis_direct import RedisDirectSource

        out.append(RedisDirectSource(src.redis))
    if src.postgres is not None:
        from herdwatch.sources.postgres_direct import PostgresDirectSource

        out.append(PostgresDirectSource(src.postgres))
    if src.host:
        from herdwatch.sources.host import HostSource

        out.append(HostSource())
    if src.logs:
        from herdwatch.config._zones import log_zone
        from herdwatch.sources.logtail import LogTailSource

        out.append(LogTailSource(src.logs, default_tz=log_zone(src.log_timezone)))
    return out


def _listening(host: str, port: int, timeout: float = 0.3) -> bool:
    import socket  # discovery only: off a replay's path

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _prometheus_ready(url: str, timeout: float = 0.5) -> bool:
    import urllib.request  # discovery only: off a replay's path

    # No proxy: discovery only ever looks at this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/-/ready", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def discover() -> SourcesConfig:
    """The sources found on this machine: Prometheus answering /-/ready, something listening
    on the Redis and Postgres ports (or the Postgres socket), and the host's /proc/stat."""
    found = DISCOVERY
    prom = found["prometheus"]
    redis_url, pg_dsn = found["redis"], found["postgres"]
    redis_at = urllib.parse.urlsplit(redis_url)
    pg_at = urllib.parse.urlsplit(pg_dsn)
    pg_socket = Path(found["postgres_socket"])
    return SourcesConfig(
        prometheus=PrometheusConfig(url=prom) if _prometheus_ready(prom) else None,
        redis=RedisConfig(url=redis_url)
        if _listening(redis_at.hostname or "127.0.0.1", redis_at.port or 6379)
        else None,
        postgres=PostgresConfig(dsn=pg_dsn)
        if _listening(pg_at.hostname or "127.0.0.1", pg_at.port or 5432) or pg_socket.exists()
        else None,
        host=Path(found["host"]).is_file(),
    )
