"""Deprecated: recommendations live with their detectors (herdwatch.detect); delete this shim
once nothing imports it."""

from herdwatch.detect import recommend

__all__ = ["recommend"]
