"""YAML with positions: load a document and remember the line and column of every node.

PyYAML's composed node tree knows where each node starts; we walk it once, record the mark of each
mapping key and sequence item by path, reject duplicate keys (PyYAML silently keeps the last), and
construct plain Python data with SafeLoader semantics (merge keys included).
"""

from __future__ import annotations

from typing import Any

import yaml

from autoscaler.core.errors import Problem

Path = tuple[str | int, ...]
Marks = dict[Path, tuple[int, int]]


def load_with_marks(text: str, file: str) -> tuple[Any, Marks, list[Problem]]:
    """Parse one YAML document; returns (data, marks, problems). Data is None on problems."""
    problems: list[Problem] = []
    if not text.strip():
        return None, {}, [Problem(file, 1, 1, "file is empty")]
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        # Raised before any mark exists: a control character (a NUL, say) in the text.
        line, col = _position(text, e.position)
        msg = f"invalid YAML: unacceptable character #x{e.character:04x}: {e.reason}"
        return None, {}, [Problem(file, line, col, msg)]
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, [Problem(file, 1, 1, "file holds no YAML document")]
        marks: Marks = {}
        _walk(node, (), marks, problems, file)
        if problems:
            return None, marks, problems
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = ": ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        return None, {}, [Problem(file, line, col, f"invalid YAML: {msg}")]
    except yaml.YAMLError as e:
        return None, {}, [Problem(file, 1, 1, f"invalid YAML: {e}")]
    except RecursionError:
        # PyYAML composes (and we walk) recursively; the reader knows how far it got.
        line, col = loader.line + 1, loader.column + 1
        return None, {}, [Problem(file, line, col, "invalid YAML: nested too deeply")]
    finally:
        loader.dispose()
    return data, marks, problems


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset into ``text``."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(node: yaml.Node, path: Path, marks: Marks, problems: list[Problem], file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in _entries(node):
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key in seen:
                line, col = _pos(key_node)
                first = seen[key].start_mark.line + 1
                problems.append(
                    Problem(
                        file,
                        line,
                        col,
                        f"duplicate key {key!r} (first on line {first})",
                        _dotted((*path, key)),
                    )
                )
            seen[key] = key_node
            marks[(*path, key)] = _pos(key_node)
            _walk(value_node, (*path, key), marks, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks[(*path, i)] = _pos(item)
            _walk(item, (*path, i), marks, problems, file)


def _entries(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """Own entries first, then merged ones that the node does not override (SafeLoader order)."""
    own = [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]
    own_keys = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
    merged: list[tuple[yaml.Node, yaml.Node]] = []
    for k, v in node.value:
        if k.tag != "tag:yaml.org,2002:merge":
            continue
        sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
        for src in sources:
            if isinstance(src, yaml.MappingNode):
                for mk, mv in _entries(src):
                    if isinstance(mk, yaml.ScalarNode) and mk.value not in own_keys:
                        own_keys.add(mk.value)
                        merged.append((mk, mv))
    return own + merged


def _dotted(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def locate(marks: Marks, path: Path) -> tuple[int, int]:
    """The position of the deepest known node on ``path`` (missing keys point at their parent)."""
    p = tuple(path)
    while p:
        if p in marks:
            return marks[p]
        p = p[:-1]
    return 1, 1


dotted = _dotted
