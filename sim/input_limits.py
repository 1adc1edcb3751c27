"""Limits on what a scenario file may be, so that no input hangs the loader or exhausts memory.

YAML is a small language with a few large traps, and a scenario file is often written by someone
else. Before the document is composed the text is checked for its size and its nesting depth (the
YAML composer recurses once per level and its scanner slows down quadratically with depth, so
20,000 nested brackets would take minutes before failing); after composing, the document is walked
once to check its expanded size (aliases let a 1 KB file stand for a billion nodes: "billion
laughs"), the length of every string, and its tags (``!!python/object``, ``!custom`` and the
YAML-only types ``!!binary``, ``!!set``, ``!!omap`` mean nothing in a scenario and are refused,
never constructed or dropped).

Every refusal is a :class:`~sim.loading.ScenarioError` naming the file (and, after composing, the
YAML path and line), so the CLI prints one line and exits with code 2.
"""

from __future__ import annotations

import datetime
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedOrderedMap, CommentedSeq, CommentedSet, TaggedScalar

MAX_FILE_BYTES = 100_000
"""Largest scenario file read (shipped scenarios are under 5 KB)."""
MAX_ITEMS = 2_000
"""Most lines and flow-list items a scenario file may have (shipped ones have under 100). The YAML
reader that keeps line numbers takes about 0.3 ms per item on a busy core: this keeps it under a second."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists (a scenario needs about 6)."""
MAX_NODES = 50_000
"""Largest document, counting every value once per place it appears after aliases are expanded."""
MAX_STRING = 10_000
"""Longest string value (names, descriptions, unit strings)."""
MAX_INDENT = 4 * MAX_DEPTH
"""Deepest indentation of a line: block nesting shows as indentation, before anything is parsed."""

STANDARD_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")}


class InputLimitError(ValueError):
    """Raised by the checks below; the loader turns it into a ScenarioError."""


def check_text(text: str) -> None:
    """Refuse text too deeply nested (flow brackets or indentation) or with too many items to read fast.

    A character scan, linear in the text: brackets and commas inside quoted strings and comments do
    not count.
    """
    depth = items = 0
    quote = ""  # the open quote character; quoted strings may span lines
    for line_number, line in enumerate(text.split("\n"), start=1):
        stripped = line.lstrip(" -?")  # "- - - x" nests block lists on one line
        if stripped and len(line) - len(stripped) > MAX_INDENT and not quote:
            raise InputLimitError(f"line {line_number}: nesting deeper than {MAX_DEPTH} levels (indentation)")
        items += bool(stripped)
        previous = "\n"
        for char in line:
            if quote:
                if char == quote and not (quote == '"' and previous == "\\"):
                    quote = ""
            elif char in "'\"" and previous in " \t\n[{,:-":
                quote = char
            elif char == "#" and previous in " \t\n":
                break
            elif char in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise InputLimitError(f"line {line_number}: nesting deeper than {MAX_DEPTH} levels")
            elif char in "]}":
                depth = max(depth - 1, 0)
            elif char == "," and depth:
                items += 1
            previous = char
        if items > MAX_ITEMS:
            raise InputLimitError(f"line {line_number}: more than {MAX_ITEMS:,} lines and list items (the limit for a scenario file)")


def check_document(data: Any) -> None:
    """Refuse a composed document that is too large expanded, too deep, holds a huge string or a tag.

    Shared subtrees (aliases) are sized once (memoised by identity), so the walk is linear in the
    distinct nodes even for an alias bomb; the count is of the *expanded* document, which is what
    validation would otherwise build.
    """
    sizes: dict[int, int] = {}
    total = _size(data, sizes, "", None, 0)
    if total > MAX_NODES:
        raise InputLimitError(
            f"the document expands to {total:.3g} values (aliases included), more than the limit of {MAX_NODES:,}"
        )


def _size(node: Any, sizes: dict[int, int], path: str, line: int | None, depth: int) -> int:
    if depth > MAX_DEPTH:
        raise InputLimitError(f"{path or '(top level)'}{_line(line)}: nesting deeper than {MAX_DEPTH} levels")
    _check_tag(node, path, line)
    if isinstance(node, str) and len(node) > MAX_STRING:
        raise InputLimitError(f"{path}{_line(line)}: a value of {len(node):,} characters (the limit is {MAX_STRING:,})")
    if not isinstance(node, (dict, list)):
        return 1
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = MAX_NODES + 1  # a node reached again while being sized is a cycle: as good as infinite
    total = 1
    if isinstance(node, dict):
        for k, value in node.items():
            child_line = node.lc.key(k)[0] + 1 if isinstance(node, CommentedMap) and k in (node.lc.data or {}) else line
            child = f"{path}.{k}" if path else str(k)
            _check_tag(k, child, child_line)
            total += _size(value, sizes, child, child_line, depth + 1)
            if total > MAX_NODES:
                break
    else:
        for index, value in enumerate(node):
            child_line = node.lc.item(index)[0] + 1 if isinstance(node, CommentedSeq) and index in (node.lc.data or {}) else line
            total += _size(value, sizes, f"{path}[{index}]", child_line, depth + 1)
            if total > MAX_NODES:
                break
    sizes[key] = total
    return total


def _check_tag(node: Any, path: str, line: int | None) -> None:
    tag = None
    if isinstance(node, TaggedScalar):
        tag = node.tag.value
    elif isinstance(node, (CommentedMap, CommentedSeq)):
        tag = getattr(node.tag, "value", None)
    if tag is not None and tag not in STANDARD_TAGS:
        raise InputLimitError(f"{path or '(top level)'}{_line(line)}: the YAML tag {tag.replace('tag:yaml.org,2002:', '!!')} is not accepted (scenario files hold plain values)")
    kinds = {bytes: "!!binary", CommentedSet: "!!set", CommentedOrderedMap: "!!omap", datetime.date: "a timestamp"}
    for kind, name in kinds.items():
        if isinstance(node, kind):
            raise InputLimitError(f"{path or '(top level)'}{_line(line)}: {name} values are not accepted (scenario files hold plain values; quote it to make it a string)")


def _line(line: int | None) -> str:
    return f" (line {line})" if line else ""
