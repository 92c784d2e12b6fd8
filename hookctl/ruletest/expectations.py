"""Compare a rendered request with a test case's expectations, and say what differs as a diff.

A body expectation is either the whole text or a subset of the parsed body: JSON as JSON, XML
as nested mappings (`item` children as a list, the inverse of the XML encoder), form fields by
name (nested keys flattened to `parent[child]`, as the form encoder does). XML and form values
are text, so they compare with the text a YAML scalar would be sent as.
"""

from __future__ import annotations

import difflib
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from hookctl.render.encoding import form_pairs, scalar
from hookctl.ruletest.explain import show


def differ(what: str, expected: str, got: str | None) -> str:
    """A mismatch as a diff: -/+ lines, or a unified diff for multi-line text."""
    if got is not None and ("\n" in expected or "\n" in got):
        diff = difflib.unified_diff(
            expected.splitlines(), got.splitlines(), "expected", "got", lineterm="", n=2
        )
        return f"{what}:\n" + "\n".join("  " + line for line in diff)
    return _mismatch(what, expected, got)


def _mismatch(what: str, expected: Any, got: Any) -> str:
    return f"{what}:\n  - expected {show(expected, None)}\n  + got      {show(got, None)}"


def header_problems(
    expected: Mapping[str, str | None], actual: Sequence[tuple[str, str]]
) -> list[str]:
    """Each expected header that is missing, present when it must not be, or different."""
    have: dict[str, str] = {}
    for header, text in actual:
        have.setdefault(header.lower(), text)
    problems = []
    for name, value in expected.items():
        got = have.get(name.lower())
        if value is None:
            if got is not None:
                problems.append(f"headers.{name}: expected no such header, got {show(got)}")
        elif got is None:
            problems.append(f"headers.{name}: missing (expected {show(value)})")
        elif got != value:
            problems.append(differ(f"headers.{name}", value, got))
    return problems


def body_problems(expected: Any, body: str | None, fmt: str) -> list[str]:
    """What differs between the expected body (text, or a subset of fields) and the actual one."""
    if body is None:
        return ["body: expected a body, the request has none"]
    if isinstance(expected, str):
        return [] if expected == body else [differ("body", expected, body)]
    try:
        parsed = _parse_body(body, fmt)
    except ValueError as exc:
        return [f"body: cannot parse the {fmt} body to compare fields: {exc}"]
    problems: list[str] = []
    if fmt == "form":
        _form_subset(expected, parsed, problems)
    else:
        _subset(expected, parsed, "body", problems, loose=fmt == "xml")
    return problems


def _parse_body(body: str, fmt: str) -> Any:
    if fmt == "json":
        return json.loads(body)
    if fmt == "form":
        pairs: dict[str, list[str]] = {}
        for key, value in parse_qsl(body, keep_blank_values=True):
            pairs.setdefault(key, []).append(value)
        return pairs
    if "<!DOCTYPE" in body or "<!ENTITY" in body:
        raise ValueError("a body with a DOCTYPE is not parsed")
    try:
        return _xml_value(ET.fromstring(body))
    except ET.ParseError as exc:
        raise ValueError(str(exc)) from None


def _xml_value(element: ET.Element) -> Any:
    """An element as data, the inverse of the XML encoder: children by tag, `item`s as a list."""
    children = list(element)
    if not children:
        return element.text or ""
    if all(child.tag == "item" for child in children):
        return [_xml_value(child) for child in children]
    data: dict[str, Any] = {}
    for child in children:
        value = _xml_value(child)
        if child.tag in data:
            previous = data[child.tag]
            data[child.tag] = (
                [*previous, value] if isinstance(previous, list) else [previous, value]
            )
        else:
            data[child.tag] = value
    return data


def _subset(expected: Any, actual: Any, path: str, problems: list[str], *, loose: bool) -> None:
    """Every key and value in `expected` is in `actual`; lists match item by item."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            problems.append(f"{path}: expected an object, got {show(actual)}")
            return
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing (expected {show(value)})")
            else:
                _subset(value, actual[key], f"{path}.{key}", problems, loose=loose)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            problems.append(_mismatch(path, expected, actual))
            return
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            _subset(want, got, f"{path}[{index}]", problems, loose=loose)
    elif not _same(expected, actual, loose):
        if isinstance(expected, str) and isinstance(actual, str):
            problems.append(differ(path, expected, actual))
        else:
            problems.append(_mismatch(path, expected, actual))


def _same(expected: Any, actual: Any, loose: bool) -> bool:
    if loose:
        # XML and form fields are text: compare the text a YAML scalar would be sent as.
        return isinstance(actual, str) and scalar(expected) == actual
    if type(expected) is bool or type(actual) is bool:
        return expected is actual
    return bool(expected == actual)


def _form_subset(expected: Any, actual: Mapping[str, list[str]], problems: list[str]) -> None:
    if not isinstance(expected, Mapping):
        problems.append("body: a form body is compared against a mapping of fields")
        return
    wanted: dict[str, list[str]] = {}
    for key, value in form_pairs(expected):
        wanted.setdefault(key, []).append(scalar(value))
    for key, values in wanted.items():
        got = actual.get(key)
        if got is None:
            problems.append(
                f"body.{key}: missing (expected {show(values[0] if len(values) == 1 else values)})"
            )
        elif got != values:
            want, have = (values[0], got[0]) if len(values) == len(got) == 1 else (values, got)
            if isinstance(want, str) and isinstance(have, str):
                problems.append(differ(f"body.{key}", want, have))
            else:
                problems.append(_mismatch(f"body.{key}", want, have))
