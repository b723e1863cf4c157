"""`herdwatch capture`: a Prometheus range -> a replay directory to share or rescan offline.

The directory holds `metrics.om` (`metrics.om.gz` when large) with exactly the samples a live
scan of the same range reads, and `herdwatch.yaml` with the detection config used (`signals:`
pointing at the captured names, `rules:`). Sources, alert targets and secrets are not written:
a replay of the directory reads nothing but the directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from herdwatch.config import PrometheusConfig, redact
from herdwatch.errors import ConfigError, SourceError
from herdwatch.sources.omwrite import write_openmetrics
from herdwatch.sources.prometheus import PrometheusSource, scan_overrides
from herdwatch.sources.replay import replay_files

__all__ = ["CaptureResult", "capture"]

#: metrics files larger than this are written gzip-compressed
GZIP_ABOVE = 2_000_000
#: config sections that shape a scan's findings (the rest describe where data comes from)
_KEPT = ("signals", "rules")
_SECRET_KEYS = frozenset({"password", "token", "bearer_token", "secret", "api_key"})


@dataclass(frozen=True, slots=True)
class CaptureResult:
    """What a capture wrote: the directory, its metrics file, and what that file holds."""

    directory: Path
    metrics: Path
    config: Path
    since: float
    until: float
    step: float
    families: int
    series: int
    samples: int
    detail: str


def _scrub(value: Any) -> Any:
    """`value` without secret-named keys, every string passed through `redact`."""
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def capture(
    prom: PrometheusConfig,
    since: float | None,
    until: float | None,
    out_dir: Path,
    config_used: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> CaptureResult:
    """Write the herdwatch families of [since, until] (default: the last hour) from `prom` into
    `out_dir` as a replay directory. `config_used` is the merged config as a plain mapping; its
    `signals:` (PromQL overrides included) choose what is fetched.

    Raises SourceError when Prometheus cannot be read or holds none of the families, and
    ConfigError when `out_dir` already holds a recording (unless `overwrite`).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory", key="output")
    metrics_old, _ = replay_files(out_dir) if out_dir.is_dir() else ([], [])
    if metrics_old and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds a recording ({metrics_old[0].name}); "
            "choose an empty directory",
            key="output",
        )
    signals = {str(k): str(v) for k, v in dict(config_used.get("signals") or {}).items()}
    source = PrometheusSource(prom, signals)
    raw = source.fetch(since, until)
    window = raw.window()
    if not raw.series or window is None:
        raise SourceError(source.name, f"no herdwatch metric families in the range "
                                       f"({raw.sources[0].detail})")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in metrics_old:
        old.unlink()
    metrics = out_dir / "metrics.om"
    stats = write_openmetrics(raw.series, metrics)
    if metrics.stat().st_size > GZIP_ABOVE:
        metrics.unlink()
        metrics = out_dir / "metrics.om.gz"
        stats = write_openmetrics(raw.series, metrics)

    kept: dict[str, Any] = {k: _scrub(config_used[k]) for k in _KEPT if config_used.get(k)}
    if signals:
        kept["signals"] = scan_overrides(signals)
    step = source.step or 0.0
    header = [
        # Never the source's URL: the directory is made to be shared, and a URL names a host
        # and may carry a token.
        f"# Captured by herdwatch from Prometheus at a {step:g} s step,",
        f"# {_iso(window[0])} .. {_iso(window[1])} ({redact(raw.sources[0].detail)}).",
    ]
    header += [
        f"# signals.{k} was the PromQL {redact(v)!r}"
        for k, v in signals.items()
        if kept["signals"][k] != v
    ]
    body = yaml.safe_dump(kept, sort_keys=True) if kept else ""
    config = out_dir / "herdwatch.yaml"
    config.write_text("\n".join(header) + "\n" + body, encoding="utf-8")
    return CaptureResult(
        out_dir,
        metrics,
        config,
        window[0],
        window[1],
        step,
        stats.families,
        stats.series,
        stats.samples,
        raw.sources[0].detail,
    )
