"""`hookctl test`: rules as code. Run the test cases kept with rules and say what differs.

A case lives in a rule's `tests:` list, or in a YAML file under a `tests/` directory beside
the rules (a list of cases, each naming its `rule:`). A case gives an event (inline, or a path
relative to the file holding the case) and what should happen: `fires: true|false`, and for a
case that fires, optionally the `method`, `url`, `headers` and `body` of the request.

Cases never read the real environment: every `{{ env.NAME }}` renders as `${NAME}`, as a dry
run shows it, so expectations are written that way and tests need no secrets.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookctl.errors import RuleError, RuleErrors
from hookctl.events.event import BadEvent, Event
from hookctl.events.read import read_events
from hookctl.render.request import MaskedRequest
from hookctl.rules.load import Rule
from hookctl.rules.webhook import METHODS
from hookctl.rules.yamlfile import read_yaml
from hookctl.ruletest.expectations import body_problems, differ, header_problems
from hookctl.ruletest.explain import explain_rule, plain, show, trace_lines

CASE_KEYS = ("name", "event", "fires", "method", "url", "headers", "body")
FILE_CASE_KEYS = ("rule", *CASE_KEYS)
TESTS_DIR = "tests"
_NOT_GIVEN: Any = object()


class _EveryName(Mapping[str, str]):
    """An environment where every variable is set, so secrets render as `${NAME}` placeholders."""

    def __getitem__(self, key: str) -> str:
        return ""

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Case:
    """One validated test case."""

    rule: str
    name: str
    file: str
    line: int
    event: Event
    fires: bool
    method: str | None = None
    url: str | None = None
    headers: Mapping[str, str | None] | None = None
    body: Any = _NOT_GIVEN

    @property
    def where(self) -> str:
        """`file:line` of the case."""
        return f"{self.file}:{self.line}"


@dataclass
class CaseResult:
    """What running a case found: passed, or the problems (each possibly several lines)."""

    case: Case
    problems: list[str] = field(default_factory=list)
    request: MaskedRequest | None = None

    @property
    def passed(self) -> bool:
        """True when nothing differed from the expectation."""
        return not self.problems


# --- collecting cases ------------------------------------------------------------------------


def case_files(rule_paths: Iterable[Path]) -> list[Path]:
    """The case files in a `tests/` directory inside each rules directory, sorted."""
    found: list[Path] = []
    for path in rule_paths:
        folder = path / TESTS_DIR
        if path.is_dir() and folder.is_dir():
            found.extend(
                sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            )
    return found


def collect(rules: Sequence[Rule], case_files: Iterable[Path] = ()) -> list[Case]:
    """Every case of the rules and of the case files, validated; RuleErrors lists every problem."""
    by_name = {rule.name: rule for rule in rules}
    cases: list[Case] = []
    errors: list[RuleError] = []
    for rule in rules:
        if rule.tests:
            _collect(_inline_cases(rule), Path(rule.source), rule.name, by_name, cases, errors)
    for path in case_files:
        try:
            doc = read_yaml(path)
        except RuleErrors as exc:
            errors.extend(exc.errors)
            continue
        if not isinstance(doc, list):
            errors.append(
                RuleError("expected a list of test cases, each with a `rule:`", file=str(path))
            )
            continue
        _collect(doc, path, None, by_name, cases, errors)
    if errors:
        raise RuleErrors(errors)
    return cases


def _inline_cases(rule: Rule) -> list[Any]:
    """The rule's `tests:` as read again with line numbers (Rule.tests holds plain data)."""
    doc = read_yaml(Path(rule.source))
    items = doc if isinstance(doc, list) else [doc]
    for item in items:
        if isinstance(item, Mapping) and item.get("name", Path(rule.source).stem) == rule.name:
            tests = item.get("tests")
            if isinstance(tests, list):
                return tests
    return list(rule.tests)


def _collect(
    items: list[Any],
    path: Path,
    rule_name: str | None,
    rules: Mapping[str, Rule],
    cases: list[Case],
    errors: list[RuleError],
) -> None:
    for index, item in enumerate(items):
        checker = _CaseChecker(item, path, rule_name, index, rules)
        case = checker.check()
        errors.extend(checker.errors)
        if case is not None:
            cases.append(case)


class _CaseChecker:
    """Validates one case mapping, collecting every problem with its file, line, rule and field."""

    def __init__(
        self, item: Any, path: Path, rule_name: str | None, index: int, rules: Mapping[str, Rule]
    ) -> None:
        self.item = item
        self.path = path
        self.inline = rule_name is not None
        self.rule = rule_name
        self.prefix = f"tests[{index}]"
        self.rules = rules
        self.errors: list[RuleError] = []

    def error(self, key: str | None, message: str) -> None:
        line = getattr(self.item, "line", None)
        lines = getattr(self.item, "lines", {})
        if key in lines:
            line = lines[key]
        where = f"{self.path}:{line}" if line else str(self.path)
        name = f"{self.prefix}.{key}" if key else self.prefix
        self.errors.append(RuleError(message, file=where, rule=self.rule, field=name))

    def check(self) -> Case | None:
        item = self.item
        if not isinstance(item, Mapping):
            self.error(None, "a test case is a mapping with at least event and fires")
            return None
        allowed = CASE_KEYS if self.inline else FILE_CASE_KEYS
        for key in item:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(key, f"unknown key{hint}; allowed: {', '.join(allowed)}")
        if not self.inline:
            self._rule_name(item.get("rule"))
        fires = item.get("fires")
        if not isinstance(fires, bool):
            self.error("fires", f"required: true or false, got {show(fires)}")
        event = self._event(item.get("event"))
        method, url, headers = self._request_keys(item, fires)
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            self.error("name", "expected a string")
        if self.errors or event is None or self.rule is None:
            return None
        return Case(
            rule=self.rule,
            name=name or self.prefix,
            file=str(self.path),
            line=getattr(item, "line", 0),
            event=event,
            fires=bool(fires),
            method=method,
            url=url,
            headers=headers,
            body=plain(item["body"]) if "body" in item else _NOT_GIVEN,
        )

    def _rule_name(self, name: Any) -> None:
        if not isinstance(name, str):
            self.error("rule", "required in a test file: the name of the rule this case tests")
        elif name not in self.rules:
            close = difflib.get_close_matches(name, list(self.rules), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error("rule", f"no rule named {name!r} is loaded{hint}")
        else:
            self.rule = name

    def _event(self, spec: Any) -> Event | None:
        if isinstance(spec, Mapping):
            return Event(plain(spec), "<inline>", getattr(spec, "line", 0))
        if not isinstance(spec, str) or not spec:
            self.error(
                "event",
                "required: an event mapping, or the path of a JSON file (relative to this file)",
            )
            return None
        file = self.path.parent / spec
        if not file.is_file():
            self.error("event", f"no event file {str(file)!r}")
            return None
        found = list(read_events([str(file)], io.BytesIO()))
        bad = [item for item in found if isinstance(item, BadEvent)]
        if bad:
            self.error("event", f"cannot read the event: {bad[0]}")
        elif len(found) != 1:
            self.error("event", f"{file} holds {len(found)} events; a case takes exactly one")
        else:
            return found[0]  # type: ignore[return-value]
        return None

    def _request_keys(
        self, item: Mapping[str, Any], fires: Any
    ) -> tuple[str | None, str | None, dict[str, str | None] | None]:
        given = [key for key in ("method", "url", "headers", "body") if key in item]
        if given and fires is False:
            self.error(given[0], "expectations about the request need fires: true")
        method = item.get("method")
        if method is not None and (not isinstance(method, str) or method.upper() not in METHODS):
            self.error("method", f"expected one of {', '.join(METHODS)}, got {show(method)}")
            method = None
        url = item.get("url")
        if url is not None and not isinstance(url, str):
            self.error("url", "expected the URL as a string (secrets as ${NAME})")
            url = None
        headers = item.get("headers")
        if headers is not None:
            if not isinstance(headers, Mapping) or not all(
                v is None or isinstance(v, str | int | float) for v in headers.values()
            ):
                self.error(
                    "headers", "expected a mapping of header names to values (null: must be absent)"
                )
                headers = None
            else:
                headers = {str(k): None if v is None else str(v) for k, v in headers.items()}
        body = item.get("body")
        if "body" in item and not isinstance(body, str | Mapping | list):
            self.error(
                "body", "expected the body text, or a mapping/list the parsed body must contain"
            )
        return (method.upper() if isinstance(method, str) else None), url, headers


# --- running cases ---------------------------------------------------------------------------


def run(rules: Sequence[Rule], cases: Iterable[Case]) -> Iterator[CaseResult]:
    """Run each case against its rule, in order."""
    by_name = {rule.name: rule for rule in rules}
    for case in cases:
        yield run_case(by_name[case.rule], case)


def run_case(rule: Rule, case: Case) -> CaseResult:
    """Evaluate one case: does the rule fire as expected, and is the request as expected."""
    found = explain_rule(rule, case.event, _EveryName())
    result = CaseResult(case)
    if found.matched != case.fires:
        expected = "to fire" if case.fires else "not to fire"
        lines = [f"expected the rule {expected}; it {'did' if found.matched else 'did not'}:"]
        if not rule.enabled:
            lines.append("  the rule is disabled (enabled: false)")
        lines.append("  " + found.on_reason())
        if found.trace is not None:
            lines += trace_lines(found.trace, "  ")
        result.problems.append("\n".join(lines))
        return result
    if not case.fires:
        return result
    if found.request is None:
        result.problems.append(found.error or "the request could not be rendered")
        return result
    request = found.request.masked()
    result.request = request
    if case.method is not None and case.method != request.method:
        result.problems.append(differ("method", case.method, request.method))
    if case.url is not None and case.url != request.url:
        result.problems.append(differ("url", case.url, request.url))
    if case.headers is not None:
        result.problems.extend(header_problems(case.headers, request.headers))
    if case.body is not _NOT_GIVEN:
        result.problems.extend(body_problems(case.body, request.body, rule.webhook.format))
    return result
