"""Load YAML rules and validate them strictly into plain dataclasses."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateError, meta

from hookctl.conditions import ConditionError, Group, compile_when, evaluate
from hookctl.errors import RuleError, RuleErrors
from hookctl.policy import (
    DEFAULT_POLICY,
    RetryPolicy,
    format_duration,
    parse_duration,
    parse_policy,
)
from hookctl.render import (
    CONTENT_TYPES,
    MAX_BODY_BYTES,
    WebhookTemplate,
    environment,
    is_template,
    valid_header_name,
    valid_xml_name,
)
from hookctl.rulechecks import (
    LITERAL_HINT,
    expansion_problem,
    literal_secrets,
    parse_size,
    sign_secrets,
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FORMATS = tuple(CONTENT_TYPES)
ACCEPTS = ("2xx-3xx", "2xx")
DEFAULT_TIMEOUT = 3.0  # Movidesk: a webhook must answer within 3 seconds
MAX_TIMEOUT = 120.0  # Movidesk's hard cap: "The operation was cancelled" after 2 minutes
RULE_KEYS = (
    "name",
    "description",
    "enabled",
    "on",
    "when",
    "webhook",
    "timeout",
    "retry",
    "ticket",
    "on_failure",
    "tests",
    "allow_literal_secrets",
)
WEBHOOK_KEYS = (
    "method",
    "url",
    "format",
    "headers",
    "auth",
    "body",
    "accept",
    "xml_root",
    "sign",
    "max_body",
)
AUTH_KEYS = {
    "basic": ("username", "password"),
    "api_key": ("header", "query", "value"),
    "bearer": ("token",),
}
# Names every template may use besides the event's own keys; near-misses are typos.
KNOWN_NAMES = ("env", "rule", "event", "ticket", "id", "delivery")
SIGNING_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True)
class Rule:
    """One validated rule: which events, which conditions, which request."""

    name: str
    source: str
    line: int
    webhook: WebhookTemplate
    on: tuple[str, ...] = ()
    when: Group | None = None
    accept: str = "2xx-3xx"
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = DEFAULT_POLICY
    ticket: str | None = None
    on_failure: WebhookTemplate | None = None
    enabled: bool = True
    description: str | None = None
    tests: tuple[Any, ...] = ()

    def handles(self, event_name: str | None) -> bool:
        """True when the rule listens for this event name (`on:` omitted = every event)."""
        if not self.on:
            return True
        if event_name is None:
            return False
        return any(fnmatch.fnmatchcase(event_name, pattern) for pattern in self.on)

    def matches(self, event_name: str | None, data: Mapping[str, Any]) -> bool:
        """True when this enabled rule fires for the event."""
        return (
            self.enabled
            and self.handles(event_name)
            and (self.when is None or evaluate(self.when, data))
        )

    def describe_timeout(self) -> str:
        """The timeout as written in rules, e.g. `3s`."""
        return format_duration(self.timeout)


def webhook_to_dict(webhook: WebhookTemplate) -> dict[str, Any]:
    """The JSON-able form of a webhook template (stored for `on_failure`)."""
    data = asdict(webhook)
    data["headers"] = [list(h) for h in webhook.headers]
    data["auth"] = dict(webhook.auth) if webhook.auth else None
    return data


def webhook_from_dict(data: Mapping[str, Any]) -> WebhookTemplate:
    """Rebuild a webhook template from its stored form."""
    fields = dict(data)
    fields["headers"] = tuple((k, v) for k, v in fields.get("headers") or ())
    fields["sign"] = tuple(fields.get("sign") or ())
    return WebhookTemplate(**fields)


# --- YAML with line numbers and no silent duplicates ------------------------------------------


class _Mapping(dict[str, Any]):
    """A YAML mapping that remembers the line of each key."""

    lines: dict[str, int]
    line: int


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    mapping = _Mapping()
    mapping.lines = {}
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        # YAML 1.1 reads a bare `on` as True; in a rule it can only mean the `on:` key.
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


# --- loading -------------------------------------------------------------------------------


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to the *.yaml / *.yml files directly inside them, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            )
        else:
            files.append(path)
    return files


def load_rules(paths: Iterable[Path]) -> list[Rule]:
    """Load and validate every rule; raise RuleErrors listing every problem found."""
    rules: list[Rule] = []
    errors: list[RuleError] = []
    files = rule_files(paths)
    if not files:
        raise RuleErrors([RuleError("no rule files found (use --rules PATH or HOOKCTL_RULES)")])
    for file in files:
        try:
            rules.extend(load_file(file))
        except RuleErrors as exc:
            errors.extend(exc.errors)
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.name in seen:
            first = seen[rule.name]
            errors.append(
                RuleError(
                    f"duplicate rule name (also in {first.source}:{first.line})",
                    file=f"{rule.source}:{rule.line}",
                    rule=rule.name,
                    field="name",
                )
            )
        seen.setdefault(rule.name, rule)
    if errors:
        raise RuleErrors(errors)
    return rules


def load_file(path: Path) -> list[Rule]:
    """Load the rule or list of rules in one YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleErrors([RuleError(f"cannot read: {exc}", file=str(path))]) from None
    try:
        doc = yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise RuleErrors([RuleError("invalid YAML: nested too deeply", file=str(path))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleErrors([RuleError(f"invalid YAML: {problem}", file=where)]) from None
    if doc is None:
        raise RuleErrors([RuleError("the file is empty", file=str(path))])
    problem = expansion_problem(doc)
    if problem:
        raise RuleErrors([RuleError(f"invalid YAML: {problem}", file=str(path))])
    items = doc if isinstance(doc, list) else [doc]
    rules, errors = [], []
    for index, item in enumerate(items):
        try:
            rules.append(_build_rule(item, path, index if isinstance(doc, list) else None))
        except RuleErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise RuleErrors(errors)
    return rules


class _RuleBuilder:
    """Validates one rule mapping, collecting every error with its location."""

    def __init__(self, data: _Mapping, path: Path, name: str | None) -> None:
        self.data = data
        self.path = path
        self.name = name
        self.errors: list[RuleError] = []
        self.allow_literal = data.get("allow_literal_secrets") is True

    def error(self, field: str, message: str, node: Any = None, key: str | None = None) -> None:
        line = getattr(node, "line", None)
        lines = getattr(node, "lines", None)
        if lines and key is not None and key in lines:
            line = lines[key]
        where = f"{self.path}:{line}" if line else str(self.path)
        self.errors.append(RuleError(message, file=where, rule=self.name, field=field))

    def unknown_keys(self, mapping: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
        allowed = tuple(allowed)
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(
                    f"{prefix}{key}",
                    f"unknown key{hint}; allowed: {', '.join(allowed)}",
                    mapping,
                    str(key),
                )

    def template(
        self, value: Any, field: str, node: Any, key: str | None, names: tuple[str, ...]
    ) -> None:
        """Compile a template now so syntax errors and typos surface at load, not at send."""
        if not isinstance(value, str) or not is_template(value):
            return
        try:
            ast = environment().parse(value)
            environment().compile(ast)
        except TemplateError as exc:
            self.error(field, f"template error: {getattr(exc, 'message', None) or exc}", node, key)
            return
        for variable in sorted(meta.find_undeclared_variables(ast)):
            if variable in names:
                continue
            close = difflib.get_close_matches(variable, names, n=1, cutoff=0.75)
            if close:
                self.error(
                    field, f"unknown variable {variable!r} (did you mean {close[0]!r}?)", node, key
                )

    def templates_in(
        self, value: Any, field: str, node: Any, key: str | None, names: tuple[str, ...]
    ) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                self.templates_in(v, f"{field}.{k}", value, k, names)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.templates_in(v, f"{field}[{i}]", node, key, names)
        else:
            self.template(value, field, node, key, names)

    def webhook(self, spec: Any, prefix: str, names: tuple[str, ...]) -> WebhookTemplate | None:
        if not isinstance(spec, Mapping):
            self.error(prefix, "expected a mapping with at least method and url", self.data, prefix)
            return None
        p = prefix + "."
        self.unknown_keys(spec, WEBHOOK_KEYS, p)
        method = str(spec.get("method", "POST")).upper()
        if method not in METHODS:
            self.error(
                f"{p}method",
                f"expected one of {', '.join(METHODS)}, got {spec.get('method')!r}",
                spec,
                "method",
            )
        fmt = spec.get("format", "json")
        if fmt not in FORMATS:
            self.error(f"{p}format", f"expected json, xml or form, got {fmt!r}", spec, "format")
            fmt = "json"
        url = spec.get("url")
        if not isinstance(url, str) or not url.strip():
            self.error(f"{p}url", "required: the URL to send to (a template)", spec, "url")
            url = ""
        elif not url.strip().startswith(("http://", "https://", "{{", "{%")):
            self.error(f"{p}url", f"expected an http:// or https:// URL, got {url!r}", spec, "url")
        self.template(url, f"{p}url", spec, "url", names)

        headers: list[tuple[str, str]] = []
        raw_headers = spec.get("headers") or {}
        if not isinstance(raw_headers, Mapping):
            self.error(
                f"{p}headers", "expected a mapping of header names to values", spec, "headers"
            )
            raw_headers = {}
        for hname, hvalue in raw_headers.items():
            if not valid_header_name(str(hname)):
                self.error(
                    f"{p}headers.{hname}", "not a valid HTTP header name", raw_headers, hname
                )
            if not isinstance(hvalue, str | int | float) or isinstance(hvalue, bool):
                self.error(f"{p}headers.{hname}", "expected a string value", raw_headers, hname)
                continue
            if any(c in str(hvalue) for c in "\r\n\0"):
                self.error(f"{p}headers.{hname}", "value contains a line break", raw_headers, hname)
            self.template(str(hvalue), f"{p}headers.{hname}", raw_headers, hname, names)
            headers.append((str(hname), str(hvalue)))

        auth = self.auth(spec.get("auth"), f"{p}auth", spec, names)
        body = spec.get("body")
        if body is not None and not isinstance(body, str | Mapping | list):
            self.error(f"{p}body", "expected a mapping, a list or a template string", spec, "body")
            body = None
        if isinstance(body, Mapping | list):
            self.templates_in(body, f"{p}body", spec, "body", names)
            if fmt == "xml":
                self.xml_names(body, f"{p}body", spec)
            if fmt == "form" and not isinstance(body, Mapping):
                self.error(
                    f"{p}body",
                    "a form body must be a mapping of field names to values",
                    spec,
                    "body",
                )
        elif isinstance(body, str):
            self.template(body, f"{p}body", spec, "body", names)
        accept = spec.get("accept", "2xx-3xx")
        if accept not in ACCEPTS:
            self.error(f"{p}accept", f"expected '2xx-3xx' or '2xx', got {accept!r}", spec, "accept")
        xml_root = spec.get("xml_root", "payload")
        if not isinstance(xml_root, str) or not valid_xml_name(xml_root):
            self.error(
                f"{p}xml_root", f"not a valid XML element name: {xml_root!r}", spec, "xml_root"
            )
            xml_root = "payload"
        sign, max_body = self.trust(spec, prefix, names)
        return WebhookTemplate(
            method=method,
            url=url.strip(),
            format=fmt,
            headers=tuple(headers),
            body=_plain(body),
            auth=auth,
            xml_root=xml_root,
            sign=sign,
            max_body=max_body,
        )

    def trust(
        self, spec: Mapping[str, Any], prefix: str, names: tuple[str, ...]
    ) -> tuple[tuple[str, ...], int]:
        """Check signing, the body cap, headers hookctl sets itself, and literal secrets."""
        sign: tuple[str, ...] = ()
        if spec.get("sign") is not None:
            try:
                sign = sign_secrets(spec["sign"])
            except ValueError as exc:
                self.error(f"{prefix}.sign", str(exc), spec, "sign")
            for secret in sign:
                self.template(secret, f"{prefix}.sign.secret", spec, "sign", names)
        max_body = MAX_BODY_BYTES
        if "max_body" in spec:
            try:
                max_body = parse_size(spec["max_body"])
            except ValueError as exc:
                self.error(f"{prefix}.max_body", str(exc), spec, "max_body")
        headers = spec.get("headers")
        for name in headers if isinstance(headers, Mapping) else ():
            if str(name).lower() in SIGNING_HEADERS:
                self.error(
                    f"{prefix}.headers.{name}",
                    "set by hookctl (the delivery id; see webhook.sign)",
                    headers,
                    name,
                )
        if not self.allow_literal:
            for field, node, key in literal_secrets(spec, prefix):
                self.error(field, LITERAL_HINT, node, key)
        return sign, max_body

    def xml_names(self, body: Any, field: str, node: Any) -> None:
        if isinstance(body, Mapping):
            for k, v in body.items():
                if not valid_xml_name(str(k)):
                    self.error(f"{field}.{k}", "not a valid XML element name", body, k)
                self.xml_names(v, f"{field}.{k}", body)
        elif isinstance(body, list):
            for i, v in enumerate(body):
                self.xml_names(v, f"{field}[{i}]", node)

    def auth(
        self, spec: Any, field: str, parent: Any, names: tuple[str, ...]
    ) -> dict[str, str] | None:
        if spec is None:
            return None
        if not isinstance(spec, Mapping) or spec.get("type") not in AUTH_KEYS:
            got = spec.get("type") if isinstance(spec, Mapping) else spec
            self.error(
                f"{field}.type", f"expected basic, api_key or bearer, got {got!r}", parent, "auth"
            )
            return None
        kind = spec["type"]
        allowed = AUTH_KEYS[kind]
        self.unknown_keys(spec, ("type", *allowed), f"{field}.")
        required = {"basic": ("username", "password"), "api_key": ("value",), "bearer": ("token",)}[
            kind
        ]
        for key in required:
            if not isinstance(spec.get(key), str | int) or spec.get(key) == "":
                self.error(f"{field}.{key}", f"required for {kind} auth", spec, key)
        if kind == "api_key" and spec.get("header") and spec.get("query"):
            self.error(f"{field}", "give either header or query, not both", parent, "auth")
        if kind == "api_key" and spec.get("header") and not valid_header_name(str(spec["header"])):
            self.error(f"{field}.header", "not a valid HTTP header name", spec, "header")
        result = {k: str(v) for k, v in spec.items() if v is not None}
        for key in allowed:
            if key in result:
                self.template(result[key], f"{field}.{key}", spec, key, names)
        return result

    def build(self, index: int | None) -> Rule | None:
        data = self.data
        self.unknown_keys(data, RULE_KEYS, "")
        if not isinstance(data.get("allow_literal_secrets", False), bool):
            self.error(
                "allow_literal_secrets", "expected true or false", data, "allow_literal_secrets"
            )
        names = KNOWN_NAMES
        on_raw = data.get("on")
        on: tuple[str, ...] = ()
        if isinstance(on_raw, str):
            on = (on_raw,)
        elif isinstance(on_raw, list) and all(isinstance(x, str) and x for x in on_raw):
            on = tuple(on_raw)
        elif on_raw is not None:
            self.error(
                "on",
                "expected an event name or a list of them (globs like ticket.* work)",
                data,
                "on",
            )

        when = None
        if data.get("when") is not None:
            try:
                when = compile_when(data["when"])
            except ConditionError as exc:
                self.error(exc.field, exc.message, data, "when")

        webhook = self.webhook(data.get("webhook"), "webhook", names)
        on_failure = None
        if data.get("on_failure") is not None:
            on_failure = self.webhook(data["on_failure"], "on_failure", names)

        timeout = DEFAULT_TIMEOUT
        if "timeout" in data:
            try:
                timeout = parse_duration(data["timeout"])
            except ValueError as exc:
                self.error("timeout", str(exc), data, "timeout")
            else:
                if timeout <= 0 or timeout > MAX_TIMEOUT:
                    self.error(
                        "timeout",
                        "must be more than 0s and at most 2m (the hard cap)",
                        data,
                        "timeout",
                    )

        retry = DEFAULT_POLICY
        if data.get("retry") is not None:
            try:
                retry = parse_policy(data["retry"])
            except ValueError as exc:
                self.error("retry", str(exc), data, "retry")

        ticket = data.get("ticket")
        if ticket is not None:
            if not isinstance(ticket, str | int):
                self.error(
                    "ticket",
                    "expected a template string such as '{{ ticket.parent_id }}'",
                    data,
                    "ticket",
                )
                ticket = None
            else:
                ticket = str(ticket)
                self.template(ticket, "ticket", data, "ticket", names)

        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            self.error("enabled", "expected true or false", data, "enabled")
        tests = data.get("tests") or []
        if not isinstance(tests, list):
            self.error("tests", "expected a list of test cases", data, "tests")
            tests = []
        description = data.get("description")

        if self.errors or webhook is None:
            return None
        return Rule(
            name=self.name or "",
            source=str(self.path),
            line=data.line,
            webhook=webhook,
            on=on,
            when=when,
            accept=webhook_accept(data.get("webhook")),
            timeout=timeout,
            retry=retry,
            ticket=ticket,
            on_failure=on_failure,
            enabled=bool(enabled),
            description=str(description) if description is not None else None,
            tests=tuple(_plain(tests)),
        )


def webhook_accept(spec: Any) -> str:
    """Which status codes count as success for this webhook."""
    return spec.get("accept", "2xx-3xx") if isinstance(spec, Mapping) else "2xx-3xx"


def _plain(value: Any) -> Any:
    """Drop the line-number mapping type so rules hold ordinary data."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _build_rule(item: Any, path: Path, index: int | None) -> Rule:
    where = f"rule #{index + 1}" if index is not None else "the rule"
    if not isinstance(item, _Mapping):
        raise RuleErrors(
            [RuleError(f"{where} is not a mapping (got {type(item).__name__})", file=str(path))]
        )
    name = item.get("name")
    if name is None and index is None:
        name = path.stem
    builder = _RuleBuilder(item, path, str(name) if name is not None else None)
    if name is None:
        builder.error(
            "name", f"{where} needs a name (required when a file holds a list of rules)", item
        )
    elif not isinstance(name, str) or not _NAME.match(name):
        builder.error(
            "name",
            "use letters, digits and . _ : - (starting with a letter or digit)",
            item,
            "name",
        )
    rule = builder.build(index)
    if builder.errors or rule is None:
        raise RuleErrors(builder.errors)
    return rule
