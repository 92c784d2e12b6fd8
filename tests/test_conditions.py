"""Tests for hookctl.rules.conditions: paths, operators, groups, compile errors and traces."""

from __future__ import annotations

import copy
import pickle
import re
from datetime import UTC, date, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hookctl.rules.conditions import (
    ABSENT,
    OPERATORS,
    Condition,
    ConditionError,
    Group,
    Trace,
    compile_when,
    evaluate,
    parse_path,
    resolve,
    trace,
)

TICKET: dict[str, Any] = {
    "event": "ticket.updated",
    "ticket": {
        "id": 42,
        "subject": "Printer on fire",
        "urgency": "High",
        "tags": ["vip", "printer"],
        "custom": {"Due date": "2024-05-01", "a.b": 1},
        "owner": None,
        "actions": [
            {"author": {"type": "agent"}},
            {"author": {"type": "end_user"}},
        ],
    },
}


def check(op: str, value: Any, actual: Any) -> bool:
    """Compile one condition on field `x` and test it against {"x": actual}."""
    return evaluate(compile_when({"field": "x", "op": op, "value": value}), {"x": actual})


# Paths.


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("ticket", ("ticket",)),
        ("ticket.status", ("ticket", "status")),
        ("ticket.actions[-1].author.type", ("ticket", "actions", -1, "author", "type")),
        ("a[0][12]", ("a", 0, 12)),
        ('a["x.y"].b', ("a", "x.y", "b")),
        ("a['my key']", ("a", "my key")),
        ('a["say \\"hi\\""]', ("a", 'say "hi"')),
        ('["top"][0]', ("top", 0)),
        ("Ticket.Custom-Field_1", ("Ticket", "Custom-Field_1")),
        ("a.0", ("a", "0")),
    ],
)
def test_parse_path(path: str, parts: tuple[str | int, ...]) -> None:
    assert parse_path(path) == parts


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "empty field path"),
        (".a", "empty key between dots"),
        ("a.", "ends with '.'"),
        ("a..b", "empty key between dots"),
        ("a[", "expected [index]"),
        ("a[x]", "expected [index]"),
        ("a[]", "expected [index]"),
        ("a[1.5]", "expected [index]"),
        ('a["x]', "expected [index]"),
        ("a]", "unexpected ']'"),
        ("a b", "quoted brackets"),
        ("a[0]b", "unexpected 'b'"),
        ("a.[0]", "expected [index]"),
    ],
)
def test_parse_path_errors(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_path(path)


def test_parse_path_is_cached() -> None:
    parse_path("cached.path[3]")
    hits = parse_path.cache_info().hits
    parse_path("cached.path[3]")
    assert parse_path.cache_info().hits == hits + 1


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("ticket.subject", "Printer on fire"),
        ("ticket.actions[-1].author.type", "end_user"),
        ("ticket.actions[0].author.type", "agent"),
        ("ticket.actions[-2].author.type", "agent"),
        ("ticket.tags[1]", "printer"),
        ('ticket.custom["Due date"]', "2024-05-01"),
        ('ticket.custom["a.b"]', 1),
        ("ticket.owner", None),
        ("ticket.missing", ABSENT),
        ("ticket.actions[2]", ABSENT),
        ("ticket.actions[-3]", ABSENT),
        ("ticket.tags.first", ABSENT),
        ("ticket[0]", ABSENT),
        ("ticket.subject.length", ABSENT),
        ("ticket.subject[0]", ABSENT),
        ("ticket.owner.name", ABSENT),
        ("ticket.id.value", ABSENT),
    ],
)
def test_resolve(path: str, expected: Any) -> None:
    assert resolve(TICKET, path) == expected
    assert resolve(TICKET, parse_path(path)) == expected


@pytest.mark.parametrize("data", [None, 5, "text", [1, 2], {"a": [1]}, ABSENT])
def test_resolve_never_raises_on_odd_data(data: Any) -> None:
    assert resolve(data, "a.b[0].c") is ABSENT


def test_absent_sentinel() -> None:
    assert repr(ABSENT) == "absent"
    assert not ABSENT
    assert ABSENT is not None
    assert copy.deepcopy(ABSENT) is ABSENT
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT


# Operators: true and false cases.


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("eq", "High", "High", True),
        ("eq", "High", "high", False),
        ("eq", "High", ["High"], False),
        ("eq", 5, 5, True),
        ("eq", 5, 5.0, True),
        ("eq", 5, "5", True),
        ("eq", "5", 5, True),
        ("eq", 5, "5.0", True),
        ("eq", 5, "6", False),
        ("eq", "5", "5.0", False),
        ("eq", "5", "5", True),
        ("eq", 1, True, False),
        ("eq", True, 1, False),
        ("eq", True, True, True),
        ("eq", False, False, True),
        ("eq", False, 0, False),
        ("eq", None, None, True),
        ("eq", None, "", False),
        ("eq", [1, 2], [1, 2], True),
        ("eq", {"a": 1}, {"a": 1}, True),
        ("ne", "High", "Low", True),
        ("ne", "High", "High", False),
        ("ne", 5, "5", False),
        ("ne", True, 1, True),
        ("in", ["High", "Urgent"], "Urgent", True),
        ("in", ["High", "Urgent"], "Low", False),
        ("in", ["High", "Urgent"], "high", False),
        ("in", [1, 2, 3], "2", True),
        ("in", ["1", "2"], 2, True),
        ("in", [1, 2], 2.0, True),
        ("in", [1, 2], True, False),
        ("in", [True], True, True),
        ("in", [None, "x"], None, True),
        ("in", [], "x", False),
        ("not_in", ["High", "Urgent"], "Low", True),
        ("not_in", ["High", "Urgent"], "High", False),
        ("not_in", [1], "1", False),
        ("contains", "vip", ["vip", "x"], True),
        ("contains", "vip", ["VIP"], False),
        ("contains", 5, [1, "5"], True),
        ("contains", "5", [5], True),
        ("contains", 1, [True], False),
        ("contains", None, [None], True),
        ("contains", "fire", "Printer on fire", True),
        ("contains", "Fire", "Printer on fire", False),
        ("contains", 5, "room 5", True),
        ("contains", "key", {"key": 1}, True),
        ("contains", "nokey", {"key": 1}, False),
        ("contains", "x", 5, False),
        ("contains", "x", None, False),
        ("not_contains", "vip", ["x"], True),
        ("not_contains", "vip", ["vip"], False),
        ("not_contains", "fire", "on fire", False),
        ("starts_with", "Print", "Printer", True),
        ("starts_with", "print", "Printer", False),
        ("starts_with", "12", 123, True),
        ("starts_with", 12, "123", True),
        ("starts_with", "x", ["x"], False),
        ("starts_with", "T", True, False),
        ("ends_with", "fire", "on fire", True),
        ("ends_with", "Fire", "on fire", False),
        ("ends_with", ".5", 2.5, True),
        ("ends_with", "x", None, False),
        ("matches", "(?i)^test", "TEST ticket", True),
        ("matches", "^test", "a test", False),
        ("matches", "fire", "on fire!", True),
        ("matches", r"^\d+$", 123, True),
        ("matches", "True", True, False),
        ("matches", "x", ["x"], False),
        ("exists", True, None, True),
        ("exists", True, "", True),
        ("exists", False, None, False),
        ("exists", False, 0, False),
    ],
)
def test_operator(op: str, value: Any, actual: Any, expected: bool) -> None:
    assert check(op, value, actual) is expected


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("gt", 5, 6, True),
        ("gt", 5, 5, False),
        ("gte", 5, 5.0, True),
        ("gte", 5, 4.9, False),
        ("lt", 5, 4, True),
        ("lt", 5, 5, False),
        ("lte", 5, 5, True),
        ("lte", 5, 6, False),
        # Numeric strings compare as numbers, on either side: "10" > "9" though "10" < "9" as text.
        ("gt", 9, "10", True),
        ("gt", "9", 10, True),
        ("gt", "9", "10", True),
        ("lt", "1e3", "999.5", True),
        ("gt", -1, "-0.5", True),
        # ISO-8601 dates and datetimes compare as instants.
        ("gt", "2024-01-01", "2024-01-02", True),
        ("gt", "2024-01-01", "2023-12-31", False),
        ("gt", "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", True),
        ("lt", "2024-01-01T12:00:00Z", "2024-01-01T13:00:00+02:00", True),
        ("gt", "2024-01-01T12:00:00Z", "2024-01-01T09:00:00-04:00", True),
        ("gte", "2024-01-01T12:00:00", "2024-01-01T12:00:00Z", True),
        ("lte", "2024-01-01T12:00:00+00:00", "2024-01-01T12:00:00", True),
        ("gt", "2024-01-01", "2024-01-01T00:00:01Z", True),
        ("gte", "2024-01-01T00:00:00Z", "2024-01-01", True),
        ("lt", "2024-01-01", "2023-12-31T23:59:59.999+00:00", True),
        ("gt", date(2024, 1, 1), "2024-01-01T10:00:00Z", True),
        ("gt", datetime(2024, 1, 1, 12, tzinfo=UTC), "2024-01-01T13:00:00+02:00", False),
        # Strings otherwise compare as strings.
        ("gt", "b", "c", True),
        ("gt", "b", "a", False),
        ("lt", "b", "c", False),
        ("lt", "b", "B", True),
        ("gt", "2024-01-01", "not a date", True),
        # Mixed types are never an error, just false.
        ("gt", 5, "five", False),
        ("lt", 5, "five", False),
        ("gt", "abc", 5, False),
        ("gt", 0, True, False),
        ("gt", 0, None, False),
        ("gt", 0, [1], False),
        ("gt", 0, {"a": 1}, False),
        ("gt", "2024-01-01", 20240102, False),
        ("lt", date(2024, 1, 1), 5, False),
        ("gt", 0, float("nan"), False),
        ("gt", 1, "9" * 5000, False),
    ],
)
def test_ordering(op: str, value: Any, actual: Any, expected: bool) -> None:
    assert check(op, value, actual) is expected


@pytest.mark.parametrize(
    ("value", "actual", "expected"),
    [
        (date(2024, 5, 1), "2024-05-01", True),
        (date(2024, 5, 1), "2024-05-01T00:00:00Z", True),
        (date(2024, 5, 1), "2024-05-02", False),
        (date(2024, 5, 1), "May 1", False),
        (date(2024, 5, 1), 20240501, False),
        (datetime(2024, 5, 1, 10, tzinfo=UTC), "2024-05-01T12:00:00+02:00", True),
    ],
)
def test_yaml_dates_in_the_rule_equal_iso_strings(value: Any, actual: Any, expected: bool) -> None:
    assert check("eq", value, actual) is expected
    assert check("in", [value], actual) is expected


# Absent fields.

ABSENT_CASES = [
    ("eq", "x", False),
    ("eq", None, False),
    ("ne", "x", True),
    ("ne", None, True),
    ("in", ["x", None], False),
    ("not_in", ["x"], True),
    ("contains", "x", False),
    ("not_contains", "x", True),
    ("starts_with", "", False),
    ("ends_with", "", False),
    ("matches", ".*", False),
    ("gt", 0, False),
    ("gte", "2024-01-01", False),
    ("lt", "z", False),
    ("lte", 0, False),
    ("exists", True, False),
    ("exists", False, True),
]


def test_absent_cases_cover_every_operator() -> None:
    assert {op for op, _, _ in ABSENT_CASES} == OPERATORS


@pytest.mark.parametrize(("op", "value", "expected"), ABSENT_CASES)
@pytest.mark.parametrize("field", ["nope", "x.deeper", "x[5]", "list.key"])
def test_absent_field(op: str, value: Any, expected: bool, field: str) -> None:
    node = compile_when({"field": field, "op": op, "value": value})
    assert evaluate(node, {"x": "scalar", "list": [1]}) is expected


def test_exists_defaults_to_true() -> None:
    node = compile_when({"field": "ticket.owner", "op": "exists"})
    assert evaluate(node, TICKET)
    assert not evaluate(node, {"ticket": {}})


# Groups.


def cond(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


YES = cond("ticket.urgency", "eq", "High")
NO = cond("ticket.urgency", "eq", "Low")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"all": [YES, YES]}, True),
        ({"all": [YES, NO]}, False),
        ({"all": []}, True),
        ({"any": [NO, YES]}, True),
        ({"any": [NO, NO]}, False),
        ({"any": []}, False),
        ({"none": [NO, NO]}, True),
        ({"none": [NO, YES]}, False),
        ({"none": []}, True),
        ([YES, YES], True),
        ([YES, NO], False),
        ([], True),
        (YES, True),
        (NO, False),
        ({"all": [YES, {"any": [NO, {"none": [NO]}]}]}, True),
        ({"all": [YES, {"any": [NO, {"none": [YES]}]}]}, False),
        ({"any": [[YES, NO], [YES, YES]]}, True),
        ({"none": [{"any": [NO]}, {"all": [YES, NO]}]}, True),
    ],
)
def test_groups(spec: Any, expected: bool) -> None:
    assert evaluate(compile_when(spec), TICKET) is expected


def test_bare_list_and_bare_condition_compile_to_all() -> None:
    group = compile_when([YES])
    assert isinstance(group, Group)
    assert group.kind == "all"
    assert [type(i) for i in group.items] == [Condition]
    assert compile_when(YES).kind == "all"


def test_example_rule_from_yaml() -> None:
    spec = yaml.safe_load(
        """
        all:
          - {field: ticket.urgency, op: in, value: [High, Urgent]}
          - {field: "ticket.actions[-1].author.type", op: eq, value: end_user}
          - any:
              - {field: ticket.tags, op: contains, value: vip}
              - none:
                  - {field: ticket.subject, op: matches, value: "(?i)test"}
          - {field: 'ticket.custom["Due date"]', op: lt, value: 2024-06-01}
        """
    )
    when = compile_when(spec)
    assert evaluate(when, TICKET)
    not_vip = {"ticket": {**TICKET["ticket"], "tags": [], "subject": "TEST please ignore"}}
    assert not evaluate(when, not_vip)
    by_agent = {"ticket": {**TICKET["ticket"], "actions": [{"author": {"type": "agent"}}]}}
    assert not evaluate(when, by_agent)
    assert not evaluate(when, {})


def test_condition_built_directly() -> None:
    node = Condition("ticket.subject", "matches", "fire$")
    assert node.path == ("ticket", "subject")
    assert node.regex is not None
    assert node.regex.pattern == "fire$"
    assert evaluate(node, TICKET)
    assert evaluate(Group("none", (node,)), {"ticket": {"subject": "ok"}})
    with pytest.raises(ValueError, match="unknown operator"):
        Condition("x", "equals", 1)
    with pytest.raises(ValueError, match="needs a list"):
        Condition("x", "in", "a")


def test_compiled_nodes_compare_by_spec() -> None:
    assert compile_when([YES]) == compile_when({"all": [YES]})
    assert compile_when([YES]) != compile_when([NO])


# Compile errors, each located by field.


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (None, "when", "expected a condition or a list of conditions, got null"),
        ("ticket.status", "when", "got a string"),
        ([YES, 5], "when[1]", "got a number"),
        ({"all": [YES, {"field": "x", "op": "eq", "valeu": 1}]}, "when.all[1].valeu", "unknown"),
        ({"all": [{"field": "x", "op": "eq", "valeu": 1}]}, "when.all[0].valeu", "'value'?"),
        ({"field": "x", "op": "eq", "value": 1, "note": "hi"}, "when.note", "unknown key"),
        ({"op": "eq", "value": 1}, "when.field", "missing"),
        ({"field": "x", "value": 1}, "when.op", "missing"),
        ({"field": "x", "op": "eq"}, "when.value", "missing; op 'eq' needs a value"),
        ({"field": 5, "op": "eq", "value": 1}, "when.field", "expected a path string"),
        ({"field": "a..b", "op": "eq", "value": 1}, "when.field", "empty key between dots"),
        ({"field": "a[x]", "op": "eq", "value": 1}, "when.field", "expected [index]"),
        ({"field": "x", "op": "equal", "value": 1}, "when.op", "unknown operator 'equal'"),
        ({"field": "x", "op": "==", "value": 1}, "when.op", "did you mean 'eq'?"),
        ({"field": "x", "op": "startswith", "value": "a"}, "when.op", "'starts_with'?"),
        ({"field": "x", "op": "contain", "value": "a"}, "when.op", "did you mean 'contains'?"),
        ({"field": "x", "op": "like", "value": 1}, "when.op", "expected one of contains, "),
        ({"field": "x", "op": ["eq"], "value": 1}, "when.op", "unknown operator"),
        ({"field": "x", "op": "matches", "value": "(unclosed"}, "when.value", "invalid regular"),
        ({"field": "x", "op": "matches", "value": 5}, "when.value", "regular expression string"),
        ({"field": "x", "op": "in", "value": "High"}, "when.value", "needs a list"),
        ({"field": "x", "op": "not_in", "value": None}, "when.value", "needs a list"),
        ({"field": "x", "op": "in"}, "when.value", "missing"),
        ({"field": "x", "op": "gt", "value": [1, 2]}, "when.value", "got a list"),
        ({"field": "x", "op": "lte", "value": {"a": 1}}, "when.value", "got a mapping"),
        ({"field": "x", "op": "gt", "value": None}, "when.value", "got null"),
        ({"field": "x", "op": "lt", "value": True}, "when.value", "got a boolean"),
        ({"field": "x", "op": "contains", "value": ["a", "b"]}, "when.value", "use any:"),
        ({"field": "x", "op": "starts_with", "value": None}, "when.value", "needs a string"),
        ({"field": "x", "op": "exists", "value": "yes"}, "when.value", "true or false"),
        ({"field": "x", "op": "exists", "value": None}, "when.value", "true or false"),
        ({"all": [YES], "field": "x"}, "when.field", "a group's keys are all, any and none"),
        ({"all": [YES], "any": [YES], "op": "eq"}, "when.op", "a group's keys are all, any"),
        ({"all": YES}, "when.all", "expected a list, got a mapping"),
        ({"any": None}, "when.any", "expected a list, got null"),
        ({"alll": [YES]}, "when", "did you mean 'all'?"),
        ({}, "when", "got nothing"),
        (
            {"any": [YES, {"none": [{"all": [{"field": "x", "op": "gt"}]}]}]},
            "when.any[1].none[0].all[0].value",
            "missing",
        ),
        (
            {"all": [YES, [YES, {"field": "x", "op": "nope", "value": 1}]]},
            "when.all[1][1].op",
            "unknown",
        ),
    ],
)
def test_compile_errors(spec: Any, field: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_when(spec)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"
    assert isinstance(caught.value, ValueError)


def test_unknown_operator_lists_every_valid_one() -> None:
    with pytest.raises(ConditionError) as caught:
        compile_when({"field": "x", "op": "like", "value": 1})
    for op in OPERATORS:
        assert op in caught.value.message


def test_compile_error_uses_the_given_location() -> None:
    with pytest.raises(ConditionError) as caught:
        compile_when([{"field": "x", "op": "eq"}], where="rules[2].when")
    assert caught.value.field == "rules[2].when[0].value"


# Traces.


def test_trace_records_every_condition_without_short_circuit() -> None:
    when = compile_when(
        {
            "any": [
                cond("ticket.urgency", "eq", "High"),
                cond("ticket.missing", "ne", "x"),
                {"all": [NO, cond("ticket.tags", "contains", "vip")]},
            ]
        }
    )
    result = trace(when, TICKET)
    assert isinstance(result, Trace)
    assert result.passed is True
    assert result.actual is None
    assert [(c.passed, c.actual) for c in result.children[:2]] == [(True, "High"), (True, ABSENT)]
    inner = result.children[2]
    assert inner.node.kind == "all"  # type: ignore[union-attr]
    assert inner.passed is False
    assert [(c.passed, c.actual) for c in inner.children] == [
        (False, "High"),
        (True, ["vip", "printer"]),
    ]
    assert inner.children[1].node == Condition("ticket.tags", "contains", "vip")


def test_trace_of_a_single_condition() -> None:
    node = Condition("ticket.actions[-1].author.type", "eq", "end_user")
    assert trace(node, TICKET) == Trace(node, True, "end_user", ())


@pytest.mark.parametrize("kind", ["all", "any", "none"])
def test_trace_of_empty_groups_matches_evaluate(kind: str) -> None:
    group = compile_when({kind: []})
    assert trace(group, {}).passed is evaluate(group, {})


# Properties: nothing raises, and trace agrees with evaluate.

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["5", "-2.5", "1e3", "2024-01-01", "2024-01-01T10:00:00Z", "vip"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
SCALARS = (
    st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["5", "2024-01-01", "2024-01-01T10:00:00+02:00", "vip"])
    | st.dates()
)


def valid_condition(op: str, value: Any) -> dict[str, Any]:
    if op in ("in", "not_in"):
        value = [value]
    elif op == "matches":
        value = re.escape(str(value))
    elif op == "exists":
        value = bool(value)
    elif op in ("starts_with", "ends_with") and not isinstance(value, str | int | float):
        value = str(value)
    return cond("x", op, value)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(sorted(OPERATORS)),
    value=SCALARS,
    actual=JSON,
)
def test_no_operator_ever_raises(op: str, value: Any, actual: Any) -> None:
    node = compile_when(valid_condition(op, value))
    result = evaluate(node, {"x": actual})
    assert isinstance(result, bool)
    assert trace(node, {"x": actual}).passed is result


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(sorted(OPERATORS)), SCALARS), min_size=1, max_size=4),
    kinds=st.lists(st.sampled_from(["all", "any", "none"]), min_size=1, max_size=3),
    actual=JSON,
)
def test_trace_agrees_with_evaluate(
    ops: list[tuple[str, Any]], kinds: list[str], actual: Any
) -> None:
    spec: Any = [valid_condition(op, value) for op, value in ops]
    for kind in kinds:
        spec = {kind: [spec, valid_condition(*ops[0])]}
    node = compile_when(spec)
    assert trace(node, {"x": actual}).passed is evaluate(node, {"x": actual})


@pytest.mark.parametrize("op", ["ne", "not_in", "not_contains"])
@settings(max_examples=100, deadline=None)
@given(value=SCALARS, actual=JSON)
def test_negated_operators_are_exact_negations(op: str, value: Any, actual: Any) -> None:
    positive = {"ne": "eq", "not_in": "in", "not_contains": "contains"}[op]
    negative = compile_when(valid_condition(op, value))
    plain = compile_when(valid_condition(positive, value))
    assert evaluate(negative, {"x": actual}) is not evaluate(plain, {"x": actual})
