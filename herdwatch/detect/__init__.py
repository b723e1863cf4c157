"""The detector registry: a rule file names its detector; the detector gets typed parameters.

Detectors are pure: `(SignalSet, Params) -> list[Finding]`, no I/O, no shared state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from herdwatch.detect.cron import CronParams, detect_cron_herd
from herdwatch.detect.ctxswitch import CtxSwitchParams, detect_ctx_switch_burst
from herdwatch.detect.locks import LockClusterParams, detect_lock_timeout_cluster
from herdwatch.detect.pool import PoolParams, detect_pool_exhaustion
from herdwatch.detect.retry import RetryParams, detect_retry_storm
from herdwatch.detect.stampede import StampedeParams, detect_cache_stampede
from herdwatch.detect.ttl_cliff import TtlCliffParams, detect_ttl_cliff
from herdwatch.model import Finding
from herdwatch.signals import SignalSet

__all__ = ["DETECTORS", "DetectorSpec"]


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector function and the frozen dataclass of parameters it takes."""

    name: str
    params: type[Any]
    run: Callable[[SignalSet, Any], list[Finding]]


DETECTORS: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        DetectorSpec("cache_stampede", StampedeParams, detect_cache_stampede),
        DetectorSpec("pool_exhaustion", PoolParams, detect_pool_exhaustion),
        DetectorSpec("ctx_switch_burst", CtxSwitchParams, detect_ctx_switch_burst),
        DetectorSpec("lock_timeout_cluster", LockClusterParams, detect_lock_timeout_cluster),
        DetectorSpec("retry_storm", RetryParams, detect_retry_storm),
        DetectorSpec("cron_herd", CronParams, detect_cron_herd),
        DetectorSpec("ttl_cliff", TtlCliffParams, detect_ttl_cliff),
    )
}
