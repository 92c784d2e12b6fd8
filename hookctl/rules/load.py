"""Load YAML rules and validate them strictly into plain dataclasses."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookctl.durations import format_duration, parse_duration
from hookctl.errors import RuleError, RuleErrors, UsageError
from hookctl.render.webhook import WebhookTemplate
from hookctl.rules.breaker import BreakerError, parse_breaker
from hookctl.rules.conditions import ConditionError, Group, compile_when, evaluate
from hookctl.rules.policy import DEFAULT_POLICY, RetryPolicy, parse_policy
from hookctl.rules.rate import Rate, parse_rate
from hookctl.rules.trust import (
    ENV_NAME,
    credential_templates,
    env_reference,
    secret_name,
)
from hookctl.rules.webhook import (
    KNOWN_NAMES,
    SpecChecker,
    plain,
)
from hookctl.rules.yamlfile import LineMapping, read_yaml
from hookctl.store.endpoint_records import DEFAULT_BREAKER, Breaker

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
    "rate",
    "retry",
    "ticket",
    "on_failure",
    "breaker",
    "tests",
    "allow_literal_secrets",
    "public_env",
    "order_by",
)
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
    rate: Rate | None = None  # at most this many requests to the endpoint (issue 15)
    retry: RetryPolicy = DEFAULT_POLICY
    ticket: str | None = None
    on_failure: WebhookTemplate | None = None
    enabled: bool = True
    description: str | None = None
    tests: tuple[Any, ...] = ()
    public_env: frozenset[str] = frozenset()  # env variables that are not secret: shown in logs
    # A template (e.g. '{{ ticket.id }}'): deliveries with the same rendered key go in fire order.
    order_by: str | None = None
    breaker: Breaker = DEFAULT_BREAKER  # its endpoint's circuit breaker (rules/breaker.py)

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
    """Load and validate every rule; raise RuleErrors listing every problem found.

    Nothing to load (a path that does not exist, directories without rule files) is a
    UsageError naming the paths: no rules were given, as when none are named at all.
    """
    paths = list(paths)
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{missing[0]}: no such rule file or directory")
    rules: list[Rule] = []
    errors: list[RuleError] = []
    files = rule_files(paths)
    if not files:
        where = ", ".join(str(p) for p in paths) or "<rules>"
        raise UsageError(f"{where}: no rule files (*.yaml, *.yml) in this directory")
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
    doc = read_yaml(path)
    if doc is None:
        raise RuleErrors([RuleError("the file is empty", file=str(path))])
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


class _RuleBuilder(SpecChecker):
    """Validates one rule mapping, collecting every error with its location."""

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
                when = compile_when(data["when"], node=data)
            except ConditionError as exc:
                self.error(exc.field, exc.message, data, "when", line=exc.line)

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

        rate = None
        if "rate" in data:
            try:
                rate = parse_rate(data["rate"])
            except ValueError as exc:
                self.error("rate", str(exc), data, "rate")

        retry = DEFAULT_POLICY
        if data.get("retry") is not None:
            try:
                retry = parse_policy(data["retry"])
            except ValueError as exc:
                self.error("retry", str(exc), data, "retry")

        breaker = DEFAULT_BREAKER
        if data.get("breaker") is not None:
            try:
                breaker = parse_breaker(data["breaker"])
            except BreakerError as exc:
                spec = data["breaker"]
                if exc.key is None:
                    self.error("breaker", str(exc), data, "breaker")
                else:
                    self.error(f"breaker.{exc.key}", str(exc), spec, exc.key)

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

        order_by = self.order_by(data, names)

        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            self.error("enabled", "expected true or false", data, "enabled")
        tests = data.get("tests") or []
        if not isinstance(tests, list):
            self.error("tests", "expected a list of test cases", data, "tests")
            tests = []
        description = data.get("description")
        public_env = self.public_env(data, on_failure)

        if self.errors or webhook is None:
            return None
        return Rule(
            name=self.name or "",
            source=str(self.path),
            line=getattr(data, "line", 0),  # the YAML loader records it
            webhook=webhook,
            on=on,
            when=when,
            accept=webhook_accept(data.get("webhook")),
            timeout=timeout,
            rate=rate,
            retry=retry,
            ticket=ticket,
            on_failure=on_failure,
            enabled=bool(enabled),
            description=str(description) if description is not None else None,
            tests=tuple(plain(tests)),
            public_env=public_env,
            order_by=order_by,
            breaker=breaker,
        )

    def order_by(self, data: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
        """`order_by:`, the key whose deliveries go one at a time, in the order fired."""
        raw = data.get("order_by")
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw.strip():
            self.error(
                "order_by",
                "expected a template string such as '{{ ticket.id }}' (the key deliveries "
                "are ordered by)",
                data,
                "order_by",
            )
            return None
        self.template(raw, "order_by", data, "order_by", names)
        return raw

    def public_env(self, data: Mapping[str, Any], on_failure: Any) -> frozenset[str]:
        """`public_env:`, the variables whose values may be shown; credentials never are."""
        raw = data.get("public_env")
        if raw is None:
            return frozenset()
        if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
            self.error("public_env", "expected a list of variable names", data, "public_env")
            return frozenset()
        names = set()
        for name in raw:
            if not ENV_NAME.match(name):
                self.error("public_env", f"{name!r} is not a variable name", data, "public_env")
            elif secret_name(name):
                self.error(
                    "public_env",
                    f"{name} looks like a secret (by its name), and secrets are always masked; "
                    "leave it out",
                    data,
                    "public_env",
                )
            else:
                names.add(name)
        for prefix in ("webhook", "on_failure"):
            spec = data.get(prefix)
            for field, value in credential_templates(spec, prefix):
                for name in sorted(names):
                    if env_reference(name).search(value):
                        self.error(
                            "public_env",
                            f"{name} is used in {field}, a credential, which is always masked",
                            data,
                            "public_env",
                        )
        return frozenset(names)


def webhook_accept(spec: Any) -> str:
    """Which status codes count as success for this webhook."""
    return spec.get("accept", "2xx-3xx") if isinstance(spec, Mapping) else "2xx-3xx"


def _build_rule(item: Any, path: Path, index: int | None) -> Rule:
    where = f"rule #{index + 1}" if index is not None else "the rule"
    if not isinstance(item, LineMapping):
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
