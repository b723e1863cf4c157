"""Package shape: sorted `__all__` in public modules, imports that point down only, and a wheel
that carries the built-in rules (so `pip install .` works without the repository) and leaves
herdwatch/cache to the herdwatch-cache distribution."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "herdwatch"

# The layers, lowest first (the README's Layout): a module may import herdwatch modules of its
# own layer or below, never above. `config` reads files and the environment into plain data and
# imports only `errors`, so every layer may use it. The engine drives detect/ through the rules;
# alert/ and mitigate/ read the engine's Snapshots; the edges parse input, drive and render.
LAYERS: list[tuple[str, ...]] = [
    ("herdwatch.__init__", "herdwatch.model", "herdwatch.errors", "herdwatch.config"),
    ("herdwatch.sources",),
    ("herdwatch.signals",),
    ("herdwatch.detect", "herdwatch.rules"),
    ("herdwatch.engine", "herdwatch.ruletest", "herdwatch.export"),
    ("herdwatch.mitigate", "herdwatch.alert"),
    (
        "herdwatch.cli",
        "herdwatch.capture",
        "herdwatch.render",
        "herdwatch.daemon",
        "herdwatch.tui",
        "herdwatch.lab",
        "herdwatch.__main__",
    ),
]
STANDALONE = "herdwatch.cache"  # imports nothing of herdwatch outside itself


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The layer of the longest prefix of `module` that LAYERS names (the package itself,
    `herdwatch`, is `herdwatch.__init__` there so that it is no prefix of everything)."""
    if module == "herdwatch":
        module = "herdwatch.__init__"
    best: tuple[int, int] | None = None
    for level, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > best[1]
            ):
                best = (level, len(name))
    return None if best is None else best[0]


def imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """Every herdwatch module `path` imports, at any depth (function-level imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "herdwatch")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "herdwatch":
                continue
            out.add(target)
            # `from herdwatch import signals` imports the module herdwatch.signals.
            out.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known)
    return out


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in all_modules() if layer_of(m) is None and not m.startswith(STANDALONE)]
    assert not unplaced, f"place these in LAYERS of tests/test_package.py: {unplaced}"


def test_imports_point_down() -> None:
    modules = all_modules()
    known = set(modules)
    upward = []
    for module, path in modules.items():
        for target in sorted(imported_modules(path, module, known)):
            if module.startswith(STANDALONE):
                if not target.startswith(STANDALONE):
                    upward.append(f"{module} -> {target} (herdwatch.cache is standalone)")
                continue
            if target.startswith(STANDALONE):
                continue  # anyone may use the reference client
            mine, theirs = layer_of(module), layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) -> {target} (layer {theirs})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_import_checker_sees_upward_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from herdwatch import render\n"
        "def f():\n    from ..engine import scan\n    import herdwatch.cli\n"
    )
    known = {"herdwatch.render", "herdwatch.engine", "herdwatch.cli"}
    found = imported_modules(src, "herdwatch.sources.m", known)
    assert {"herdwatch.render", "herdwatch.engine", "herdwatch.cli"} <= found
    assert layer_of("herdwatch.sources.replay") == 1
    assert layer_of("herdwatch.detect.stampede") == 3
    assert layer_of("herdwatch.engine.watch") == 4
    assert layer_of("herdwatch.cli.scan") == 6
    assert layer_of("herdwatch") == 0
    assert layer_of("herdwatch.no_such_module") is None


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest.
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def public_modules() -> list[str]:
    return [
        m
        for m in all_modules()
        if not any(part.startswith("_") for part in m.split(".")) or m == "herdwatch"
    ]


@pytest.mark.parametrize("module", public_modules())
def test_public_module_has_a_sorted_all(module: str) -> None:
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert isinstance(names, list | tuple), f"{module} has no __all__"
    assert list(names) == sorted(names, key=_isort_key), f"{module}.__all__ is not sorted"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it lacks: {missing}"


def test_wheel_carries_the_builtin_rules(tmp_path: Path) -> None:
    rules = sorted(p.name for p in (ROOT / "rules").glob("*.yaml"))
    assert rules, "no rules/*.yaml in the repository"
    out = tmp_path / "dist"
    # No build isolation: hatchling comes from this environment, not from the network.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=110,
    )  # fmt: skip
    (wheel,) = out.glob("herdwatch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "herdwatch = herdwatch.__main__:main" in zf.read(entry_points).decode()
        zf.extractall(tmp_path / "site")
    for rule in rules:
        assert f"herdwatch/_builtin_rules/{rule}" in names
    # Every file of the package travels, code and data alike (SQL files, for instance), except
    # herdwatch/cache: the herdwatch-cache distribution ships it (tests/test_cache_light.py), and
    # this wheel requires that one, so the two never own the same file.
    tracked = subprocess.run(
        ["git", "ls-files", "herdwatch"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked and "herdwatch/cli/__init__.py" in tracked and "herdwatch/py.typed" in tracked
    missing = [f for f in tracked if f not in names and not f.startswith("herdwatch/cache/")]
    assert not missing, f"not in the wheel: {missing}"
    assert not [n for n in names if n.startswith("herdwatch/cache/")]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # The unpacked wheel alone (not the repository) finds and loads the rules.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    probe = (
        "from herdwatch.rules import builtin_rules_dir, load_rules; "
        "print(builtin_rules_dir()); print(','.join(sorted(r.id for r in load_rules())))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    where, ids = done.stdout.splitlines()
    assert Path(where).is_relative_to(tmp_path / "site")
    from herdwatch.rules import load_rules

    assert ids.split(",") == sorted(r.id for r in load_rules(rules_dir=ROOT / "rules"))


HEAVY = ("scipy", "redis", "psycopg", "requests", "prometheus_api_client", "textual", "aiosmtplib")
# What the live sources, the daemon and the lab use, but a replay scan reads without: an event
# loop (asyncio, with ssl and socket), discovery's sockets, numpy.random, importlib.resources.
LIVE_ONLY = ("asyncio", "ssl", "socket", "numpy.random", "importlib.resources")


@pytest.mark.parametrize("fmt", ["json", "rich"])
def test_a_replay_scan_imports_nothing_it_does_not_use(tmp_path: Path, fmt: str) -> None:
    """A person's `herdwatch scan --replay` is dominated by imports: the commands load their
    drivers (Redis, Postgres, HTTP, SMTP, the TUI), scipy and an event loop only where they use
    them."""
    replay = str(ROOT / "fixtures/incidents/real_cache_stampede")
    probe = (
        "import sys, io, contextlib\n"
        "from herdwatch.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main(['scan', '--replay', {replay!r}, '--format', {fmt!r}])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(','.join(sorted(m for m in {HEAVY + LIVE_ONLY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported by a replay scan: {done.stdout.strip()}"


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("3", "3")])
def test_the_console_script_keeps_openblas_to_one_thread(
    tmp_path: Path, given: str | None, expected: str
) -> None:
    """herdwatch does no linear algebra: OpenBLAS's spinning worker threads are not started
    (OPENBLAS_NUM_THREADS=1 before numpy loads), unless the user set their own count."""
    probe = (
        "import os, sys\n"
        "from herdwatch.__main__ import main\n"
        "sys.argv = ['herdwatch', '--version']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.splitlines()[-1] == expected
