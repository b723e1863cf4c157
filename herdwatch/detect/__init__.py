"""The detector registry: a rule file names its detector; the detector gets typed parameters.

Each signature's module holds its parameters, its detector, the shape of its evidence and its
recommendations. Detectors are pure: `(SignalSet, Params) -> list[Finding]`, no I/O, no shared
state; a recommender reads only the finding's evidence. A rule file that reuses a detector
under another id keeps its recommendations: they are looked up by detector, not by id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from herdwatch.detect.cron import CronParams, detect_cron_herd, recommend_cron_herd
from herdwatch.detect.ctxswitch import (
    CtxSwitchParams,
    detect_ctx_switch_burst,
    recommend_ctx_switch_burst,
)
from herdwatch.detect.locks import (
    LockClusterParams,
    detect_lock_timeout_cluster,
    recommend_lock_timeout_cluster,
)
from herdwatch.detect.pool import PoolParams, detect_pool_exhaustion, recommend_pool_exhaustion
from herdwatch.detect.retry import RetryParams, detect_retry_storm, recommend_retry_storm
from herdwatch.detect.stampede import (
    StampedeParams,
    detect_cache_stampede,
    recommend_cache_stampede,
)
from herdwatch.detect.ttl_cliff import TtlCliffParams, detect_ttl_cliff, recommend_ttl_cliff
from herdwatch.model import Finding, Recommendation
from herdwatch.signals import SignalSet

__all__ = ["DETECTORS", "DetectorSpec", "recommend"]


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector function, the frozen dataclass of parameters it takes, and the recommender
    for its findings (ranked, most effective first)."""

    name: str
    params: type[Any]
    run: Callable[[SignalSet, Any], list[Finding]]
    recommend: Callable[[Finding], list[Recommendation]]


DETECTORS: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        DetectorSpec(
            "cache_stampede", StampedeParams, detect_cache_stampede, recommend_cache_stampede
        ),
        DetectorSpec(
            "pool_exhaustion", PoolParams, detect_pool_exhaustion, recommend_pool_exhaustion
        ),
        DetectorSpec(
            "ctx_switch_burst",
            CtxSwitchParams,
            detect_ctx_switch_burst,
            recommend_ctx_switch_burst,
        ),
        DetectorSpec(
            "lock_timeout_cluster",
            LockClusterParams,
            detect_lock_timeout_cluster,
            recommend_lock_timeout_cluster,
        ),
        DetectorSpec("retry_storm", RetryParams, detect_retry_storm, recommend_retry_storm),
        DetectorSpec("cron_herd", CronParams, detect_cron_herd, recommend_cron_herd),
        DetectorSpec("ttl_cliff", TtlCliffParams, detect_ttl_cliff, recommend_ttl_cliff),
    )
}


def recommend(finding: Finding, detector: str | None = None) -> tuple[Recommendation, ...]:
    """The ranked recommendations for a finding, from the detector that made it (`detector`,
    the rule's detector name), else from the detector named like its signature; none when
    neither is known."""
    spec = DETECTORS.get(detector or "") or DETECTORS.get(finding.signature)
    return tuple(spec.recommend(finding)) if spec else ()
