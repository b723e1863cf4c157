"""YAML documents with the line of every key, for errors that name file:line (config, rules).

The text is parsed once, with libyaml's safe loader when PyYAML was built with it (about ten
times faster than the pure-Python one), else the pure-Python safe loader; both build the same
plain values. A duplicate key in any mapping is an error: YAML says keys are unique, and
PyYAML would silently keep the last one.

Aliases are expanded with a bound: a document whose values, aliases expanded, would exceed
`MAX_NODES` (a "billion laughs") or that refers to itself is refused before it is built, so no
consumer ever walks, copies or prints an exponential value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import yaml

__all__ = ["MAX_NODES", "LineOf", "YamlErrorFactory", "load_with_lines"]

#: the most values (scalars, lists, mappings, keys) a document may hold once aliases expand
MAX_NODES = 100_000

#: the line (1-based) of the key at a path of keys and list indexes, or of its nearest parent
LineOf = Callable[[Sequence[Any]], int | None]
#: builds the caller's error from (message, line or None, dotted key path or None)
YamlErrorFactory = Callable[[str, int | None, str | None], Exception]

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_with_lines(text: str, error: YamlErrorFactory) -> tuple[Any, LineOf]:
    """The document in `text` as plain values (None when empty) and its `line_of(path)`.

    Syntax errors, values that cannot be constructed (unknown tags, bad base64, unhashable
    keys, undefined aliases) and duplicate keys raise `error(message, line, key)`, with the
    line when known; the message starts `invalid YAML: ` (or is `duplicate key`)."""
    loader = _LOADER(text)
    lines: dict[tuple[Any, ...], int] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            return None, _line_lookup(lines)
        _index(loader, root, (), lines, error, set())
        _check_size(root, error)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        position = getattr(exc, "position", None)  # a ReaderError: a bad character
        if line is None and isinstance(position, int):
            line = text.count("\n", 0, position) + 1
        raise error(f"invalid YAML: {problem}", line, None) from None
    finally:
        loader.dispose()
    return data, _line_lookup(lines)


def _index(
    loader: Any,
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    error: YamlErrorFactory,
    seen_nodes: set[int],
) -> None:
    """Record the line of every key and list item under `node`; refuse duplicate keys."""
    # setdefault: a key's own line stands for its value, even when the value starts below it.
    lines.setdefault(path, node.start_mark.line + 1)
    # An alias repeats a node: index it once (aliases may nest exponentially, or recurse).
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(loader, item, (*path, i), lines, error, seen_nodes)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    keys: set[Any] = set()
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            continue  # constructing the document reports an unhashable key with its line
        key = loader.construct_object(knode, deep=True)
        line = knode.start_mark.line + 1
        if key in keys and key != "<<":
            dotted = ".".join(str(p) for p in (*path, key))
            raise error("duplicate key", line, dotted)
        keys.add(key)
        lines[(*path, key)] = line
        _index(loader, vnode, (*path, key), lines, error, seen_nodes)


def _check_size(root: yaml.Node, error: YamlErrorFactory) -> None:
    """Refuse a document that expands to more than MAX_NODES values or contains itself."""
    sizes: dict[int, int] = {}
    # Iterative post-order walk (a deep document must not exhaust Python's recursion limit);
    # `open_` holds the nodes being expanded, to catch an alias to an enclosing node.
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise error(
                    f"invalid YAML: aliases expand to more than {MAX_NODES} values",
                    node.start_mark.line + 1,
                    None,
                )
            continue
        if key in sizes:
            continue
        if key in open_:
            raise error("invalid YAML: an alias refers to a value that contains it",
                        node.start_mark.line + 1, None)  # fmt: skip
        open_.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_:
                raise error("invalid YAML: an alias refers to a value that contains it",
                            child.start_mark.line + 1, None)  # fmt: skip
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _line_lookup(lines: dict[tuple[Any, ...], int]) -> LineOf:
    def line_of(path: Sequence[Any]) -> int | None:
        probe = tuple(path)
        while probe not in lines:
            if not probe:
                return None
            probe = probe[:-1]
        return lines[probe]

    return line_of
