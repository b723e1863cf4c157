"""How many fixtures the exported Prometheus rules catch, beside the daemon's scan.

    .venv/bin/python -m tests.export.measure            # every fixture, prints the table
    .venv/bin/python -m tests.export.measure NAME ...   # only these fixtures

Each fixture with metrics becomes a promtool unit test (herdwatch.export.fixture_test, no
known misses left out): its series at its own resolution, the rules exported for that
resolution with its `signals:`, evaluated by promtool's rule engine (Prometheus' own) from the
first sample to the last. A `must` expectation is caught when the alert fires near the onset (a
cron herd's by the end); a `must_not` one is a false alarm when the alert ever fires. The
daemon's column is `herdwatch rules test` (herdwatch.ruletest.run_fixtures) on the same
fixtures: the scan's own verdict per expectation.

A live Prometheus evaluates rules only at the present, never over a backfilled past, so the
fixtures are replayed through promtool, which evaluates every step of their time range.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from herdwatch.export import EXPORTABLE
from herdwatch.export.promtool_tests import FixtureTest, fixture_test
from herdwatch.rules import load_rules
from herdwatch.ruletest import run_fixture

REPO = Path(__file__).resolve().parents[2]
INCIDENTS = REPO / "fixtures" / "incidents"
_FAILED_EXPR = re.compile(r'expr: "(.*)", time:')


@dataclass(frozen=True, slots=True)
class Outcome:
    """One expectation of one fixture: signature, `fires` (a must) or not, and whether the
    exported rules met it."""

    fixture: str
    signature: str
    fires: bool
    met: bool
    #: whether the daemon's scan (`herdwatch rules test`) met the same expectation
    daemon: bool = True


def run_promtool(test: FixtureTest, workdir: Path) -> list[Outcome]:
    """Write one fixture's test and its rule file to `workdir`, run `promtool test rules`, and
    read which checks failed from its report."""
    (workdir / test.rule_file).write_text(test.rule_text)
    path = workdir / f"{test.name}.test.yml"
    path.write_text(yaml.safe_dump(test.document, sort_keys=False, width=10**9))
    started = time.monotonic()
    res = subprocess.run(
        ["promtool", "test", "rules", path.name],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"{test.name}: promtool {time.monotonic() - started:.1f} s", file=sys.stderr)
    report = res.stdout + res.stderr
    failed = {m.group(1).replace('\\"', '"') for m in _FAILED_EXPR.finditer(report)}
    if res.returncode != 0 and not failed:
        raise RuntimeError(f"promtool on {test.name}: {report[-2000:]}")
    return [Outcome(test.name, c.signature, c.fires, c.expr not in failed) for c in test.checks]


def measure(names: Iterable[str] | None = None, jobs: int = 2) -> list[Outcome]:
    """The outcome of every check of every fixture (or of `names`)."""
    rules = load_rules()
    dirs = sorted(d for d in INCIDENTS.iterdir() if d.is_dir())
    if names is not None:
        wanted = set(names)
        dirs = [d for d in dirs if d.name in wanted]
    tests = [t for d in dirs if (t := fixture_test(d, rules, known_misses={})) is not None]
    with tempfile.TemporaryDirectory(prefix="herdwatch-measure-") as tmp:
        work = Path(tmp)
        tested = {t.name for t in tests}
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            running = pool.map(lambda t: run_promtool(t, work), tests)
            # the daemon's verdicts, as `herdwatch rules test` gives them (each fixture's own
            # herdwatch.yaml), while promtool runs
            scan = [r for d in dirs if d.name in tested for r in run_fixture(d)]
            runs = list(running)
    daemon = {(r.fixture, r.signature, r.expectation == "fires"): r.passed for r in scan}
    return [
        replace(o, daemon=daemon.get((o.fixture, o.signature, o.fires), False))
        for run in runs
        for o in run
    ]


def table(outcomes: Sequence[Outcome]) -> str:
    """The markdown table of docs/scale.md: per signature, the fixtures with it caught by the
    daemon and by the exported rules, and the false alarms on the fixtures without it."""
    lines = [
        "| signature | fixtures with it | daemon catches | exported rules catch "
        "| exported rules' false alarms (fixtures that must not have it) |",
        "|---|---|---|---|---|",
    ]
    for sig in EXPORTABLE:
        musts = [o for o in outcomes if o.signature == sig and o.fires]
        nots = [o for o in outcomes if o.signature == sig and not o.fires]
        missed = ", ".join(o.fixture for o in musts if not o.met)
        false = [o.fixture for o in nots if not o.met]
        caught = sum(o.met for o in musts)
        by_daemon = sum(o.daemon for o in musts)
        d_missed = ", ".join(o.fixture for o in musts if not o.daemon)
        d_false = [o.fixture for o in nots if not o.daemon]
        lines.append(
            f"| `{sig}` | {len(musts)} | {by_daemon}"
            + (f" (missed: {d_missed})" if d_missed else "")
            + (f"; false alarms: {', '.join(d_false)}" if d_false else "")
            + f" | {caught}"
            + (f" (missed: {missed})" if missed else "")
            + f" | {len(false)} of {len(nots)}"
            + (f" ({', '.join(false)})" if false else "")
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    outcomes = measure(argv or None)
    print(table(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
