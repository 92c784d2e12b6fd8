"""Field paths and `when:` conditions: compile a rule's spec once, then test many events fast.

A path is dotted keys with list indexes in brackets: `ticket.actions[-1].author.type`; a key
with dots or spaces goes in quoted brackets: `ticket.custom["Due date"]`. A path that does not
resolve (missing key, index out of range, wrong type on the way) is *absent*.

A group is `all:` (every item true; empty is true), `any:` (at least one; empty is false) or
`none:` (no item true); groups nest, and a bare list means `all:`.

Operators and how they compare:

- Absent field: every op is false except `ne`, `not_in` and `not_contains` (true), and
  `exists: false` (true). Nothing ever raises.
- `eq`, `ne`, `in`, `not_in`: numbers compare numerically (1 == 1.0), and a numeric string on
  one side equals the number on the other ("5" == 5); two strings compare exactly
  (case-sensitive, "5" != "5.0"); booleans only equal booleans (true != 1); null equals null.
  A YAML date in the rule equals an ISO-8601 string in the event for the same instant.
- `gt`, `gte`, `lt`, `lte`: numbers (or numeric strings) on both sides compare as numbers; else
  ISO-8601 dates/datetimes on both sides compare as instants (a trailing Z is UTC, naive is
  UTC, a date is its midnight); else two strings compare as strings; anything else is false.
- `contains`: a list holds an element `eq` the value; a string holds the value (or a
  number's text) as a substring; an object has it as a key. `not_contains` is the negation.
- `starts_with`, `ends_with`: string prefix/suffix; a number is tested as its text.
- `matches`: `re.search` of the regex against a string (or a number's text).
- `exists`: `value: true` (the default) when the field resolves, even to null; `value: false`
  when it is absent. To test for null use `eq: null`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import operator
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

__all__ = [
    "ABSENT",
    "OPERATORS",
    "Condition",
    "ConditionError",
    "Group",
    "Trace",
    "compile_when",
    "evaluate",
    "parse_path",
    "resolve",
    "trace",
]


class _Absent(enum.Enum):
    """The type of ABSENT; an enum so the sentinel survives copy and pickle."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "absent"

    def __bool__(self) -> bool:
        return False


ABSENT: Final = _Absent.ABSENT

FieldPath = tuple[str | int, ...]
Test = Callable[[Any], bool]

_SEGMENT = re.compile(
    r"""(?P<key>[^.\[\]"'\s]+)
      | \[(?P<index>-?[0-9]+)\]
      | \["(?P<double>(?:[^"\\]|\\.)*)"\]
      | \['(?P<single>(?:[^'\\]|\\.)*)'\]""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class ConditionError(ValueError):
    """A `when:` spec that cannot be compiled, located by field (e.g. "when.all[1].op")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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
    return _walk(data, parse_path(path) if isinstance(path, str) else path)


def _walk(data: Any, path: FieldPath) -> Any:
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


def _starts_with(value: Any) -> Test:
    prefix = _text(value) or ""

    def test(actual: Any) -> bool:
        text = _text(actual)
        return text is not None and text.startswith(prefix)

    return test


def _ends_with(value: Any) -> Test:
    suffix = _text(value) or ""

    def test(actual: Any) -> bool:
        text = _text(actual)
        return text is not None and text.endswith(suffix)

    return test


def _matches(regex: re.Pattern[str]) -> Test:
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


_BUILDERS: dict[str, Callable[[Any], Test]] = {
    "eq": _eq,
    "ne": lambda value: _negate(_eq(value)),
    "in": _in,
    "not_in": lambda value: _negate(_in(value)),
    "contains": _contains,
    "not_contains": lambda value: _negate(_contains(value)),
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "gt": functools.partial(_ordered, operator.gt),
    "gte": functools.partial(_ordered, operator.ge),
    "lt": functools.partial(_ordered, operator.lt),
    "lte": functools.partial(_ordered, operator.le),
    "exists": _exists,
}
OPERATORS: Final = frozenset([*_BUILDERS, "matches"])
_ORDERED = frozenset({"gt", "gte", "lt", "lte"})
# Spellings from other languages that difflib would not connect to ours.
_OP_HINTS = {
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


def _value_problem(op: str, value: Any) -> str | None:
    """Why value cannot go with op, or None if it can."""
    if op in ("in", "not_in") and not isinstance(value, list | tuple):
        return f"op {op!r} needs a list, e.g. [High, Urgent]; got {_kind(value)}"
    if op in _ORDERED and (value is None or isinstance(value, bool | list | tuple | Mapping)):
        return f"op {op!r} needs a number, date or string; got {_kind(value)}"
    if op in ("contains", "not_contains") and isinstance(value, list | tuple | Mapping):
        return f"op {op!r} needs a single value (use any: to test several); got {_kind(value)}"
    if op in ("starts_with", "ends_with") and _text(value) is None:
        return f"op {op!r} needs a string; got {_kind(value)}"
    if op == "matches" and not isinstance(value, str):
        return f"op 'matches' needs a regular expression string; got {_kind(value)}"
    if op == "exists" and not isinstance(value, bool):
        return f"op 'exists' takes true or false; got {_kind(value)}"
    return None


def _kind(value: Any) -> str:
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


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """One test: the event's value at `field`, compared with `value` by `op`."""

    field: str
    op: str
    value: Any
    path: FieldPath = ()
    regex: re.Pattern[str] | None = dataclasses.field(default=None, repr=False, compare=False)
    _test: Test = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}")
        problem = _value_problem(self.op, self.value)
        if problem:
            raise ValueError(problem)
        if not self.path:
            object.__setattr__(self, "path", parse_path(self.field))
        if self.op == "matches":
            regex = self.regex or re.compile(self.value)
            object.__setattr__(self, "regex", regex)
            object.__setattr__(self, "_test", _matches(regex))
        else:
            object.__setattr__(self, "_test", _BUILDERS[self.op](self.value))


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """Conditions combined: all (every one), any (at least one) or none (not one)."""

    kind: Literal["all", "any", "none"]
    items: tuple[Condition | Group, ...]
    _eval: Callable[[Any], bool] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _GROUP_KINDS:
            raise ValueError(f"unknown group kind {self.kind!r}")
        object.__setattr__(
            self, "_eval", _group_eval(self.kind, tuple(map(_evaluator, self.items)))
        )


_GROUP_KINDS = ("all", "any", "none")
_CONDITION_KEYS = ("field", "op", "value")


def _evaluator(node: Condition | Group) -> Callable[[Any], bool]:
    """A function of the event data, built once so evaluation does no lookups by name."""
    if isinstance(node, Group):
        return node._eval
    path, test = node.path, node._test
    return lambda data: test(_walk(data, path))


def _group_eval(kind: str, items: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
    if kind == "all":
        return lambda data: all(item(data) for item in items)
    if kind == "any":
        return lambda data: any(item(data) for item in items)
    return lambda data: not any(item(data) for item in items)


def compile_when(spec: Any, where: str = "when") -> Group:
    """Validate a rule's `when:` spec and compile it; raise ConditionError naming the field."""
    node = _compile_node(spec, where)
    return node if isinstance(node, Group) else Group("all", (node,))


def _compile_node(spec: Any, where: str) -> Condition | Group:
    if isinstance(spec, list):
        return Group("all", _compile_items(spec, where))
    if not isinstance(spec, Mapping):
        raise ConditionError(
            where, f"expected a condition or a list of conditions, got {_kind(spec)}"
        )
    keys = list(spec)
    kinds = [key for key in keys if key in _GROUP_KINDS]
    if kinds:
        if len(keys) > 1:
            found = ", ".join(map(str, keys))
            raise ConditionError(
                where, f"a group has exactly one key, all, any or none; got {found}"
            )
        kind = kinds[0]
        items = spec[kind]
        if not isinstance(items, list):
            raise ConditionError(f"{where}.{kind}", f"expected a list, got {_kind(items)}")
        return Group(kind, _compile_items(items, f"{where}.{kind}"))
    if not any(key in _CONDITION_KEYS for key in keys):
        found = ", ".join(map(str, keys)) or "nothing"
        hint = _did_you_mean(keys[0], (*_GROUP_KINDS, *_CONDITION_KEYS)) if keys else ""
        raise ConditionError(
            where,
            f"expected a condition (field, op, value) or a group (all, any, none); "
            f"got {found}{hint}",
        )
    return _compile_condition(spec, where)


def _compile_items(items: list[Any], where: str) -> tuple[Condition | Group, ...]:
    return tuple(_compile_node(item, f"{where}[{i}]") for i, item in enumerate(items))


def _compile_condition(spec: Mapping[Any, Any], where: str) -> Condition:
    for key in spec:
        if key not in _CONDITION_KEYS:
            hint = _did_you_mean(key, _CONDITION_KEYS)
            raise ConditionError(
                f"{where}.{key}", f"unknown key; a condition takes field, op and value{hint}"
            )
    if "field" not in spec:
        raise ConditionError(f"{where}.field", "missing; name the event field, e.g. ticket.status")
    field = spec["field"]
    if not isinstance(field, str):
        raise ConditionError(f"{where}.field", f"expected a path string, got {_kind(field)}")
    try:
        path = parse_path(field)
    except ValueError as exc:
        raise ConditionError(f"{where}.field", str(exc)) from None
    valid = ", ".join(sorted(OPERATORS))
    if "op" not in spec:
        raise ConditionError(f"{where}.op", f"missing; expected one of {valid}")
    op = spec["op"]
    if not isinstance(op, str) or op not in OPERATORS:
        hint = _did_you_mean(op, OPERATORS, _OP_HINTS)
        raise ConditionError(
            f"{where}.op", f"unknown operator {op!r}; expected one of {valid}{hint}"
        )
    if "value" in spec:
        value = spec["value"]
    elif op == "exists":
        value = True
    else:
        raise ConditionError(f"{where}.value", f"missing; op {op!r} needs a value")
    problem = _value_problem(op, value)
    if problem:
        raise ConditionError(f"{where}.value", problem)
    regex = None
    if op == "matches":
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise ConditionError(f"{where}.value", f"invalid regular expression: {exc}") from None
    return Condition(field, op, value, path, regex)


def _did_you_mean(
    word: Any, choices: tuple[str, ...] | frozenset[str], hints: Mapping[str, str] | None = None
) -> str:
    """A " (did you mean 'x'?)" suffix for the closest choice, or ""."""
    if not isinstance(word, str):
        return ""
    close = hints.get(word) if hints else None
    if close is None:
        matches = difflib.get_close_matches(word, sorted(choices), n=1)
        close = matches[0] if matches else None
    return f" (did you mean {close!r}?)" if close else ""


def evaluate(node: Condition | Group, data: Mapping[str, Any]) -> bool:
    """True if the event data satisfies the compiled condition or group."""
    if isinstance(node, Group):
        return node._eval(data)
    return node._test(_walk(data, node.path))


@dataclasses.dataclass(frozen=True, slots=True)
class Trace:
    """How one node fared against an event: the value it saw (ABSENT if none) and its children."""

    node: Condition | Group
    passed: bool
    actual: Any = None
    children: tuple[Trace, ...] = ()


def trace(node: Condition | Group, data: Mapping[str, Any]) -> Trace:
    """Evaluate like evaluate(), but visit every node and record what each one saw."""
    if isinstance(node, Condition):
        actual = _walk(data, node.path)
        return Trace(node, node._test(actual), actual)
    children = tuple(trace(item, data) for item in node.items)
    passed = [child.passed for child in children]
    if node.kind == "all":
        return Trace(node, all(passed), None, children)
    if node.kind == "any":
        return Trace(node, any(passed), None, children)
    return Trace(node, not any(passed), None, children)
