"""Build hook of herdwatch-cache: take the code from the repository's herdwatch/cache.

In a checkout it lives one level up (../herdwatch/cache): one copy of the code, the one the full
distribution's tests exercise. An sdist of herdwatch-cache carries it at its own root, and a
wheel built from that sdist finds it there, so nothing is added then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CacheSourcesHook(BuildHookInterface):
    """In a checkout, map ../herdwatch/cache to herdwatch/cache in the wheel or the sdist."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        here = Path(self.root)
        if not (here / "herdwatch" / "cache").is_dir():
            build_data["force_include"][str(here.parent / "herdwatch" / "cache")] = (
                "herdwatch/cache"
            )
