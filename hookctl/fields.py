"""Field paths into events: `ticket.actions[-1].author.type`, parsed once, resolved safely.

A path is dotted keys with list indexes in brackets; a key with dots or spaces goes in quoted
brackets: `ticket.custom["Due date"]`. A path that does not resolve (missing key, index out of
range, wrong type on the way) is ABSENT, never an error.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["ABSENT", "FieldPath", "parse_path", "resolve"]


class _Absent(enum.Enum):
    """The type of ABSENT; an enum so the sentinel survives copy and pickle."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "absent"

    def __bool__(self) -> bool:
        return False


ABSENT: Final = _Absent.ABSENT

FieldPath = tuple[str | int, ...]

_SEGMENT = re.compile(
    r"""(?P<key>[^.\[\]"'\s]+)
      | \[(?P<index>-?[0-9]+)\]
      | \["(?P<double>(?:[^"\\]|\\.)*)"\]
      | \['(?P<single>(?:[^'\\]|\\.)*)'\]""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> FieldPath:
    """Split "ticket.actions[-1].author" into ("ticket", "actions", -1, "author")."""
    if not isinstance(path, str) or not path:
        raise ValueError("empty field path")
    parts: list[str | int] = []
    pos = 0
    after_dot = False
    while pos < len(path):
        match = _SEGMENT.match(path, pos)
        # A bare key starts the path or follows a dot; only a bracket follows a key or bracket,
        # and only a key follows a dot.
        if match is None or (pos and (match["key"] is not None) != after_dot):
            raise ValueError(_path_problem(path, pos))
        if match["key"] is not None:
            parts.append(match["key"])
        elif match["index"] is not None:
            parts.append(int(match["index"]))
        else:
            quoted = match["double"] if match["double"] is not None else match["single"]
            parts.append(_ESCAPE.sub(r"\1", quoted))
        pos = match.end()
        after_dot = pos < len(path) and path[pos] == "."
        if after_dot:
            pos += 1
            if pos == len(path):
                raise ValueError(f"field path {path!r} ends with '.'")
    return tuple(parts)


def _path_problem(path: str, pos: int) -> str:
    """Explain why the path cannot be parsed at pos."""
    char = path[pos]
    where = f"field path {path!r}, column {pos + 1}"
    if char == "[":
        return f'{where}: expected [index] with an integer or ["key"] with a quoted key'
    if char == ".":
        return f"{where}: empty key between dots"
    if char.isspace():
        return f'{where}: keys with spaces go in quoted brackets, e.g. a["my key"]'
    return f"{where}: unexpected {char!r}"


def resolve(data: Any, path: str | FieldPath) -> Any:
    """The value at path in data, or ABSENT if any step is missing or of the wrong type."""
    return walk(data, parse_path(path) if isinstance(path, str) else path)


def walk(data: Any, path: FieldPath) -> Any:
    for part in path:
        if type(part) is int:
            if not isinstance(data, list | tuple):
                return ABSENT
            try:
                data = data[part]
            except IndexError:
                return ABSENT
        elif isinstance(data, dict):
            data = data.get(part, ABSENT)
        elif isinstance(data, Mapping):
            try:
                data = data[part]
            except (KeyError, TypeError):
                return ABSENT
        else:
            return ABSENT
    return data


# Comparison helpers shared by the operators.
