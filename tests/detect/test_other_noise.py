"""The rules pass the synthetic incidents regenerated with noise they were never run on.

`fixtures/generate.py --salt N` keeps each incident (its story, magnitudes and onsets) and draws
new Poisson counts, latencies, jitter and log times: a rule tuned to the committed noise fails
here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from herdwatch.ruletest import run_fixture

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("salt", [7])
def test_rules_pass_fixtures_with_new_noise(tmp_path: Path, salt: int) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "fixtures" / "generate.py"),
            "--salt",
            str(salt),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    dirs = sorted(p.parent for p in tmp_path.glob("*/expected.json"))
    assert len(dirs) >= 20
    failed = [
        f"{d.name}: {r.signature} {r.expectation}: {r.detail}"
        for d in dirs
        for r in run_fixture(d)
        if not r.passed
    ]
    assert failed == []
