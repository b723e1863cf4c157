"""The package's public surface is small and sorted, and it imports nothing else of herdwatch."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import herdwatch.cache
from herdwatch.cache import errors
from herdwatch.errors import HerdwatchError

PKG = Path(herdwatch.cache.__file__).parent
ALLOWED_THIRD_PARTY = {"redis", "prometheus_client"}


def test_all_is_sorted_and_complete() -> None:
    names = herdwatch.cache.__all__
    assert list(names) == sorted(names)
    assert all(hasattr(herdwatch.cache, n) for n in names)


def test_modules_are_internal_except_errors() -> None:
    public = {p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_")}
    assert public == {"errors"}


def test_imports_point_nowhere_else_in_herdwatch() -> None:
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: use absolute imports"
                mods = [node.module or ""]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top == "herdwatch":
                    assert mod.startswith("herdwatch.cache"), f"{path.name} imports {mod}"
                else:
                    assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (
                        f"{path.name} imports {mod}"
                    )


def test_error_tree() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.CacheError)
    # Standalone: an application embedding the client does not get the scanner's tree.
    assert not issubclass(errors.CacheError, HerdwatchError)
