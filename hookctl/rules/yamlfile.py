"""Read a YAML file of rules or test cases: line numbers kept, no silent duplicates, no bombs.

Rule files and the test-case files beside them are read the same way, so an error in either
names `file:line`: every mapping remembers its own line and the line of each key, a key given
twice is an error (YAML would keep the last one silently), and a document whose aliases
expand past a bound or refer to themselves is refused before anything walks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hookctl.errors import RuleError, RuleErrors
from hookctl.rules.trust import expansion_problem


class LineMapping(dict[str, Any]):
    """A YAML mapping with the line of the mapping and of each key (1-based)."""

    line: int
    lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMapping:
    mapping = LineMapping()
    mapping.lines = {}
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        # YAML 1.1 reads a bare `on` as True; in a rule or an event it can only be the key "on".
        if key is True and key_node.value in ("on", "On", "ON"):
            key = "on"
        if key in mapping:
            raise yaml.MarkedYAMLError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[str(key)] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> Any:
    """The document in `path` (None when empty); RuleErrors with `file:line` when it is not valid."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleErrors([RuleError(f"cannot read: {exc}", file=str(path))]) from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except RecursionError:
        raise RuleErrors([RuleError("invalid YAML: nested too deeply", file=str(path))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        # The problem only, never str(exc): that quotes the lines around the error.
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise RuleErrors([RuleError(f"invalid YAML: {problem}", file=where)]) from None
    problem = expansion_problem(doc) if doc is not None else None
    if problem:
        raise RuleErrors([RuleError(f"invalid YAML: {problem}", file=str(path))])
    return doc
