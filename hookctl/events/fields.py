"""Field paths into events: `ticket.actions[-1].author.type`, parsed once, resolved safely.

A path is dotted keys with list indexes in brackets; a key with dots or spaces goes in quoted
brackets: `ticket.custom["Due date"]`. A path that does not resolve (missing key, index out of
range, wrong type on the way) is ABSENT, never an error.
"""

from __future__ import annotations

import difflib
import enum
import functools
import json
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["ABSENT", "FieldPath", "describe_missing", "parse_path", "resolve"]


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


def show_path(path: FieldPath) -> str:
    """A path written back as rules write it: `ticket.actions[-1].author`."""
    text = ""
    for step in path:
        if type(step) is int:
            text += f"[{step}]"
        elif isinstance(step, str) and _SEGMENT.fullmatch(step) and step.isidentifier():
            text += f".{step}" if text else step
        else:
            text += "[" + json.dumps(step, ensure_ascii=False) + "]"
    return text


def describe_missing(data: Any, path: FieldPath) -> tuple[str | int, str] | None:
    """The first step of `path` that `data` lacks, and a sentence saying so, or None.

    ("subjet", "ticket has no field 'subjet' (did you mean 'subject'?)") for a typo, so a
    template error can name the event's field instead of Jinja's "'dict object' has no
    attribute 'subjet'".
    """
    for depth, step in enumerate(path):
        where = show_path(path[:depth]) or "the event"
        if type(step) is int:
            if not isinstance(data, list | tuple):
                return step, f"{where} is {_kind(data)}, not a list: it has no item [{step}]"
            if not -len(data) <= step < len(data):
                count = f"{len(data)} item{'s' if len(data) != 1 else ''}"
                return step, f"{where} has no item [{step}] (it has {count})"
            data = data[step]
            continue
        if not isinstance(data, Mapping):
            return step, f"{where} is {_kind(data)}, not an object: it has no field {step!r}"
        try:
            found = step in data
        except TypeError:
            found = False
        if not found:
            keys = [k for k in data if isinstance(k, str) and not k.startswith("_")]
            close = difflib.get_close_matches(str(step), keys, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return step, f"{where} has no field {step!r}{hint}"
        data = data[step]
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


# Comparison helpers shared by the operators.
