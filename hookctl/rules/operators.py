"""The comparison operators of `when:` conditions, type-aware and never raising."""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from hookctl.events.fields import ABSENT

Test = Callable[[Any], bool]

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(value: Any) -> int | float | None:
    """The value as a number if it is one or a numeric string; booleans are not numbers."""
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[no-any-return]
    if kind is str and value and value[0] in "+-.0123456789":
        try:
            if _INTEGER.fullmatch(value):
                return int(value)
            if _DECIMAL.fullmatch(value):
                return float(value)
        except ValueError:  # more digits than int() accepts
            return None
    return None


def _moment(value: Any) -> datetime | None:
    """The value as an aware datetime if it is a date, datetime or ISO-8601 string."""
    kind = type(value)
    if kind is str:
        if len(value) < 8 or not value[:4].isdigit():
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif kind is datetime:
        moment = value
    elif kind is date:
        moment = datetime(value.year, value.month, value.day)
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_plain_string(value: Any) -> bool:
    """A string that equals only the very same string (so == alone decides)."""
    return type(value) is str and _number(value) is None


def _equal(actual: Any, expected: Any) -> bool:
    """Type-aware equality shared by eq, ne, in, not_in and contains."""
    if type(actual) is bool or type(expected) is bool:
        return actual is expected
    if type(actual) is str and type(expected) is str:
        return actual == expected
    if isinstance(expected, date):
        moment = _moment(actual)
        return moment is not None and moment == _moment(expected)
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return left == right
    return actual is not ABSENT and bool(actual == expected)


def _text(value: Any) -> str | None:
    """A string, or a number's text, for the string operators; None for anything else."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return str(value)
    return None


# Operators: each builder turns the rule's value into a test of the event's value.


def _eq(value: Any) -> Test:
    if _is_plain_string(value):
        return lambda actual: actual == value
    return lambda actual: _equal(actual, value)


def _in(values: list[Any]) -> Test:
    plain = frozenset(v for v in values if _is_plain_string(v))
    others = tuple(v for v in values if not _is_plain_string(v))

    def test(actual: Any) -> bool:
        if type(actual) is str and actual in plain:
            return True
        return any(_equal(actual, v) for v in others)

    return test


def _contains(value: Any) -> Test:
    needle = _text(value)
    plain = _is_plain_string(value)

    def test(actual: Any) -> bool:
        kind = type(actual)
        if kind is list:
            return value in actual if plain else any(_equal(item, value) for item in actual)
        if kind is str or kind is dict:
            return needle is not None and needle in actual
        return False

    return test


def _affix(method: str) -> Callable[[Any], Test]:
    """starts_with / ends_with: the string method of that name, on the text of both sides."""

    check = getattr(str, method)

    def build(value: Any) -> Test:
        affix = _text(value) or ""

        def test(actual: Any) -> bool:
            text = _text(actual)
            return text is not None and check(text, affix)

        return test

    return build


def matches_test(regex: re.Pattern[str]) -> Test:
    search = regex.search

    def test(actual: Any) -> bool:
        text = _text(actual)
        return text is not None and search(text) is not None

    return test


def _ordered(compare: Callable[[Any, Any], bool], value: Any) -> Test:
    number, moment = _number(value), _moment(value)
    text = value if type(value) is str else None

    def test(actual: Any) -> bool:
        if number is not None:
            other = _number(actual)
            if other is not None:
                return compare(other, number)
        if moment is not None:
            when = _moment(actual)
            if when is not None:
                return compare(when, moment)
        return text is not None and type(actual) is str and compare(actual, text)

    return test


def _exists(value: Any) -> Test:
    if value:
        return lambda actual: actual is not ABSENT
    return lambda actual: actual is ABSENT


def _negate(test: Test) -> Test:
    return lambda actual: not test(actual)


BUILDERS: dict[str, Callable[[Any], Test]] = {
    "eq": _eq,
    "ne": lambda value: _negate(_eq(value)),
    "in": _in,
    "not_in": lambda value: _negate(_in(value)),
    "contains": _contains,
    "not_contains": lambda value: _negate(_contains(value)),
    "starts_with": _affix("startswith"),
    "ends_with": _affix("endswith"),
    "gt": functools.partial(_ordered, operator.gt),
    "gte": functools.partial(_ordered, operator.ge),
    "lt": functools.partial(_ordered, operator.lt),
    "lte": functools.partial(_ordered, operator.le),
    "exists": _exists,
}
OPERATORS: Final = frozenset([*BUILDERS, "matches"])
_ORDERED = frozenset({"gt", "gte", "lt", "lte"})
# Spellings from other languages that difflib would not connect to ours.
OP_HINTS = {
    "==": "eq",
    "=": "eq",
    "equals": "eq",
    "!=": "ne",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "regex": "matches",
    "~": "matches",
}


def value_problem(op: str, value: Any) -> str | None:
    """Why value cannot go with op, or None if it can."""
    if op in ("in", "not_in") and not isinstance(value, list | tuple):
        return f"op {op!r} needs a list, e.g. [High, Urgent]; got {kind_of(value)}"
    if op in _ORDERED and (value is None or isinstance(value, bool | list | tuple | Mapping)):
        return f"op {op!r} needs a number, date or string; got {kind_of(value)}"
    if op in ("contains", "not_contains") and isinstance(value, list | tuple | Mapping):
        return f"op {op!r} needs a single value (use any: to test several); got {kind_of(value)}"
    if op in ("starts_with", "ends_with") and _text(value) is None:
        return f"op {op!r} needs a string; got {kind_of(value)}"
    if op == "matches" and not isinstance(value, str):
        return f"op 'matches' needs a regular expression string; got {kind_of(value)}"
    if op == "exists" and not isinstance(value, bool):
        return f"op 'exists' takes true or false; got {kind_of(value)}"
    return None


def kind_of(value: Any) -> str:
    """A YAML-flavoured name for the type of value, for error messages."""
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
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, date):
        return "a date"
    return type(value).__name__
