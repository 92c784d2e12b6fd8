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
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from hookctl.events.fields import ABSENT, FieldPath, parse_path, resolve, walk
from hookctl.rules.operators import (
    BUILDERS,
    OP_HINTS,
    OPERATORS,
    Test,
    kind_of,
    matches_test,
    value_problem,
)

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


class ConditionError(ValueError):
    """A `when:` spec that cannot be compiled, located by field (e.g. "when.all[1].op") and,
    when the spec came from YAML that remembers lines, by the line of the part at fault."""

    def __init__(self, field: str, message: str, node: Any = None, key: Any = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.line = _line_of(node, key)


def _line_of(node: Any, key: Any) -> int | None:
    """The line of `key` in a line-remembering mapping, else of the mapping itself."""
    lines = getattr(node, "lines", None)
    if lines and key is not None and str(key) in lines:
        return int(lines[str(key)])
    line = getattr(node, "line", None)
    return int(line) if line else None


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
        problem = value_problem(self.op, self.value)
        if problem:
            raise ValueError(problem)
        if not self.path:
            object.__setattr__(self, "path", parse_path(self.field))
        if self.op == "matches":
            regex = self.regex or re.compile(self.value)
            object.__setattr__(self, "regex", regex)
            object.__setattr__(self, "_test", matches_test(regex))
        else:
            object.__setattr__(self, "_test", BUILDERS[self.op](self.value))


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """Conditions combined: all (every one), any (at least one) or none (not one).

    `combined` marks the `all` a mapping with several of all/any/none side by side becomes
    (`{all: [...], none: [...]}`, as Zendesk writes trigger conditions): each must hold.
    """

    kind: Literal["all", "any", "none"]
    items: tuple[Condition | Group, ...]
    combined: bool = False
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
    return lambda data: test(walk(data, path))


def _group_eval(kind: str, items: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
    if kind == "all":
        return lambda data: all(item(data) for item in items)
    if kind == "any":
        return lambda data: any(item(data) for item in items)
    return lambda data: not any(item(data) for item in items)


def compile_when(spec: Any, where: str = "when", node: Any = None) -> Group:
    """Validate a rule's `when:` spec and compile it; raise ConditionError naming the field.

    `node` is the mapping holding `when:` (for the line of an error in a bare item).
    """
    compiled = _compile_node(spec, where, node, "when")
    return compiled if isinstance(compiled, Group) else Group("all", (compiled,))


def _compile_node(spec: Any, where: str, parent: Any, key: Any) -> Condition | Group:
    if isinstance(spec, list):
        return Group("all", _compile_items(spec, where, parent, key))
    if not isinstance(spec, Mapping):
        raise ConditionError(
            where, f"expected a condition or a list of conditions, got {kind_of(spec)}", parent, key
        )
    keys = list(spec)
    kinds = [k for k in keys if k in _GROUP_KINDS]
    if kinds:
        others = [k for k in keys if k not in _GROUP_KINDS]
        if others:
            raise ConditionError(
                f"{where}.{others[0]}",
                "a group's keys are all, any and none (several side by side all must hold); "
                f"a condition (field, op, value) goes in their lists{_did_you_mean(others[0], _GROUP_KINDS)}",
                spec,
                others[0],
            )
        groups = []
        for kind in kinds:
            items = spec[kind]
            if not isinstance(items, list):
                raise ConditionError(
                    f"{where}.{kind}", f"expected a list, got {kind_of(items)}", spec, kind
                )
            groups.append(Group(kind, _compile_items(items, f"{where}.{kind}", spec, kind)))
        # Side by side, as Zendesk writes them: all of these, and none of those.
        return groups[0] if len(groups) == 1 else Group("all", tuple(groups), combined=True)
    if not any(k in _CONDITION_KEYS for k in keys):
        found = ", ".join(map(str, keys)) or "nothing"
        hint = _did_you_mean(keys[0], (*_GROUP_KINDS, *_CONDITION_KEYS)) if keys else ""
        raise ConditionError(
            where,
            f"expected a condition (field, op, value) or a group (all, any, none); "
            f"got {found}{hint}",
            spec if keys else parent,
            keys[0] if keys else key,
        )
    return _compile_condition(spec, where)


def _compile_items(
    items: list[Any], where: str, parent: Any, key: Any
) -> tuple[Condition | Group, ...]:
    # A scalar item has no line of its own: errors in it point at the key holding the list.
    return tuple(_compile_node(item, f"{where}[{i}]", parent, key) for i, item in enumerate(items))


def _compile_condition(spec: Mapping[Any, Any], where: str) -> Condition:
    for key in spec:
        if key not in _CONDITION_KEYS:
            hint = _did_you_mean(key, _CONDITION_KEYS)
            raise ConditionError(
                f"{where}.{key}",
                f"unknown key; a condition takes field, op and value{hint}",
                spec,
                key,
            )
    if "field" not in spec:
        raise ConditionError(
            f"{where}.field", "missing; name the event field, e.g. ticket.status", spec
        )
    field = spec["field"]
    if not isinstance(field, str):
        raise ConditionError(
            f"{where}.field", f"expected a path string, got {kind_of(field)}", spec, "field"
        )
    try:
        path = parse_path(field)
    except ValueError as exc:
        raise ConditionError(f"{where}.field", str(exc), spec, "field") from None
    valid = ", ".join(sorted(OPERATORS))
    if "op" not in spec:
        raise ConditionError(f"{where}.op", f"missing; expected one of {valid}", spec)
    op = spec["op"]
    if not isinstance(op, str) or op not in OPERATORS:
        hint = _did_you_mean(op, OPERATORS, OP_HINTS)
        raise ConditionError(
            f"{where}.op", f"unknown operator {op!r}; expected one of {valid}{hint}", spec, "op"
        )
    if "value" in spec:
        value = spec["value"]
    elif op == "exists":
        value = True
    else:
        raise ConditionError(f"{where}.value", f"missing; op {op!r} needs a value", spec)
    problem = value_problem(op, value)
    if problem:
        raise ConditionError(f"{where}.value", problem, spec, "value")
    regex = None
    if op == "matches":
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise ConditionError(
                f"{where}.value", f"invalid regular expression: {exc}", spec, "value"
            ) from None
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
    return node._test(walk(data, node.path))


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
        actual = walk(data, node.path)
        return Trace(node, node._test(actual), actual)
    children = tuple(trace(item, data) for item in node.items)
    passed = [child.passed for child in children]
    if node.kind == "all":
        return Trace(node, all(passed), None, children)
    if node.kind == "any":
        return Trace(node, any(passed), None, children)
    return Trace(node, not any(passed), None, children)
