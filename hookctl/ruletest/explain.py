"""Why a rule fired or not for an event: the `on:` check, the condition trace, the request."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hookctl.delivery.prepare import order_key, reveal, shown_values
from hookctl.errors import RenderError
from hookctl.events.event import Event
from hookctl.render.request import MaskedRequest, Request, placeholder
from hookctl.render.webhook import render_request
from hookctl.rules.breaker import describe_breaker
from hookctl.rules.conditions import ABSENT, Condition, Trace, trace
from hookctl.rules.load import Rule

SHOW_LIMIT = 80  # characters of a value shown in human output before it is cut


@dataclass(frozen=True, slots=True)
class Explanation:
    """How one rule fared against one event."""

    rule: Rule
    event: Event
    on_passed: bool
    trace: Trace | None  # None when the rule has no `when:`
    request: Request | None = None  # rendered (secrets as placeholders) when the rule matched
    error: str | None = None  # the render error of a matched rule
    shown: Mapping[str, str] = field(default_factory=dict)  # public_env values, for showing
    unset: tuple[str, ...] = ()  # variables the request reads that are not set here
    order_key: str | None = None  # the rule's order_by rendered for this event

    def masked(self) -> MaskedRequest | None:
        """The request as it may be shown: secrets as ${NAME}, public variables as values."""
        return reveal(self.request, self.shown) if self.request is not None else None

    def needs(self) -> list[tuple[str, bool]]:
        """Each variable a real send reads from the environment, and whether it is set here."""
        if self.request is None:
            return []
        return [(n, n not in self.unset) for n in self.request.secrets if n not in self.shown]

    @property
    def when_passed(self) -> bool:
        """True when the rule has no conditions or they all hold."""
        return self.trace is None or self.trace.passed

    @property
    def matched(self) -> bool:
        """True when the rule would fire for the event."""
        return self.rule.enabled and self.on_passed and self.when_passed

    def on_reason(self) -> str:
        """One line saying why `on:` let the event through or not."""
        patterns = ", ".join(self.rule.on)
        if not self.rule.on:
            return "on: (any event)"
        name = self.event.name
        if name is None:
            return f"on: [{patterns}] needs an event name, and this event has no `event` field"
        verb = "matches" if self.on_passed else "does not match"
        return f"on: {name!r} {verb} [{patterns}]"


def explain_rule(rule: Rule, event: Event, environ: Mapping[str, str]) -> Explanation:
    """Evaluate one rule against one event, rendering the request when it matches."""
    on_passed = rule.handles(event.name)
    steps = trace(rule.when, event.data) if rule.when is not None else None
    result = Explanation(rule, event, on_passed, steps)
    if not result.matched:
        return result
    try:
        request = render_request(
            rule.webhook, event.data, environ=environ, extra={"rule": {"name": rule.name}}
        )
        key = order_key(rule, event.data)
    except RenderError as exc:
        return Explanation(rule, event, on_passed, steps, error=f"cannot render: {exc}")
    unset = tuple(n for n in request.secrets if n not in environ)
    shown = shown_values(rule, request, environ)
    return Explanation(
        rule, event, on_passed, steps, request=request, shown=shown, unset=unset, order_key=key
    )


def explain(rules: Iterable[Rule], event: Event, environ: Mapping[str, str]) -> list[Explanation]:
    """Evaluate every rule against one event."""
    return [explain_rule(rule, event, environ) for rule in rules]


# --- presenting a trace --------------------------------------------------------------------


def show(value: Any, limit: int | None = SHOW_LIMIT) -> str:
    """A value as compact JSON for people, cut at `limit` characters; ABSENT is `absent`."""
    if value is ABSENT:
        return "absent"
    text = json.dumps(plain(value), ensure_ascii=False, separators=(", ", ": "))
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def trace_label(step: Trace) -> str:
    """One node of a trace without its verdict: `ticket.urgency in ["High"] (actual "Urgent")`."""
    node = step.node
    if isinstance(node, Condition):
        expected = "" if node.op == "exists" and node.value is True else f" {show(node.value)}"
        if node.op == "exists" and node.value is False:
            expected = " false"
        return f"{node.field} {node.op}{expected} (actual {show(step.actual)})"
    if node.combined:
        # `{all: [...], none: [...]}` side by side: shown as the AND it is.
        kinds = " + ".join(item.kind for item in node.items if isinstance(item, type(node)))
        return f"{kinds} (side by side: each must hold):"
    return f"{node.kind}:"


def trace_lines(step: Trace, indent: str = "") -> list[str]:
    """The trace as indented plain text, one node a line, each with `pass` or `FAIL`."""
    lines = [f"{indent}{'pass' if step.passed else 'FAIL'}  {trace_label(step)}"]
    for child in step.children:
        lines.extend(trace_lines(child, indent + "  "))
    return lines


def trace_dict(step: Trace) -> dict[str, Any]:
    """The trace as JSON: conditions with field/op/expected/actual, groups with items."""
    node = step.node
    if isinstance(node, Condition):
        return {
            "field": node.field,
            "op": node.op,
            "expected": plain(node.value),
            "actual": None if step.actual is ABSENT else plain(step.actual),
            "absent": step.actual is ABSENT,
            "passed": step.passed,
        }
    data = {
        "group": node.kind,
        "passed": step.passed,
        "items": [trace_dict(c) for c in step.children],
    }
    if node.combined:
        data["side_by_side"] = True  # all/any/none written side by side, combined with AND
    return data


def plain(value: Any) -> Any:
    """YAML values made JSON-able: dates become ISO strings."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# --- curl ----------------------------------------------------------------------------------


def to_curl(request: Request) -> str:
    """A runnable curl command for a rendered request, each secret as a "${NAME}" shell variable.

    It works from the unmasked Request, not a MaskedRequest: only the placeholders (with their
    nonce) mark secrets for sure, while a literal `${HOME}` in ticket text must stay literal.
    The shell inserts a secret as is, where hookctl would encode it for the URL or the body, so
    a token with reserved characters may need quoting by hand.
    """
    q = _quoter(request)
    parts = [f"curl -X {request.method} {q(request.url)}"]
    if request.basic_auth:
        parts.append(f"--user {q(request.basic_auth[0] + ':' + request.basic_auth[1])}")
    parts += [f"-H {q(f'{name}: {value}')}" for name, value in request.headers]
    stdin = ""
    if request.body is not None and request.body.startswith("@"):
        # curl would read a file named by the rest of the body; send it through stdin instead.
        stdin = f"printf '%s' {q(request.body)} | "
        parts.append("--data-binary @-")
    elif request.body is not None:
        parts.append(f"--data-binary {q(request.body)}")
    command = stdin + " \\\n  ".join(parts)
    if request.sign:
        # A signature covers a fresh id and timestamp per attempt: curl can only send it unsigned.
        return (
            "# hookctl signs this request when it sends it; this command sends it unsigned\n"
            + command
        )
    return command


def _quoter(request: Request) -> Any:
    if not request.secrets:
        return lambda text: shlex.quote(text)
    tokens = {placeholder(request.nonce, name): name for name in request.secrets}
    split = re.compile("(" + "|".join(map(re.escape, tokens)) + ")")

    def quote(text: str) -> str:
        pieces = [
            f'"${{{tokens[piece]}}}"' if piece in tokens else shlex.quote(piece)
            for piece in split.split(text)
            if piece
        ]
        return "".join(pieces) or "''"

    return quote


def explanation_dict(explanation: Explanation, *, curl: bool = False) -> dict[str, Any]:
    """An explanation as the JSON object `explain --json` prints (secrets masked)."""
    rule, event = explanation.rule, explanation.event
    data: dict[str, Any] = {
        "rule": rule.name,
        "rule_source": f"{rule.source}:{rule.line}",
        "event": event.name,
        "event_id": event.event_id,
        "event_source": f"{event.source}:{event.line}",
        "enabled": rule.enabled,
        "on": list(rule.on),
        "on_passed": explanation.on_passed,
        "when_passed": explanation.when_passed,
        "matched": explanation.matched,
        "conditions": trace_dict(explanation.trace) if explanation.trace is not None else None,
        "request": masked.to_dict() if (masked := explanation.masked()) else None,
        "needs_env": [{"name": n, "set": ok} for n, ok in explanation.needs()],
        "rate": str(rule.rate) if rule.rate else None,
        "error": explanation.error,
        "order_by": rule.order_by,
        "order_key": explanation.order_key,
        "breaker": describe_breaker(rule.breaker),  # its endpoint's circuit breaker
    }
    if curl:
        data["curl"] = to_curl(explanation.request) if explanation.request else None
    return data
