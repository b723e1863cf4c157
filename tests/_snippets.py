"""Reading the config snippets of recommendations back, for tests."""

from __future__ import annotations

import ast
import re


def from_url_kwargs(config: str) -> dict[str, object]:
    """The literal keyword arguments of the `HerdCache.from_url(...)` call in `config`."""
    m = re.search(r"HerdCache\.from_url\((.*)\)", config, re.S)
    assert m, config
    call = ast.parse(f"f({m.group(1)})", mode="eval").body
    assert isinstance(call, ast.Call)
    return {
        k.arg: ast.literal_eval(k.value)
        for k in call.keywords
        if k.arg and isinstance(k.value, ast.Constant)
    }
