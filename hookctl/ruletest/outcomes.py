"""What one side of a plan sends for an event and rule, as shown, and the diff between two.

A side is a rule set (matched and rendered exactly as `fire` would, secrets as placeholders:
no value is read or needed) or the deliveries on record. Requests are compared as they would
be shown (every environment variable as `${NAME}`, public ones too: the environment is not
the rules), so comparing never needs a secret and never prints one.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hookctl.errors import RenderError
from hookctl.render.request import MaskedRequest, Request
from hookctl.render.webhook import render_request
from hookctl.rules.load import Rule
from hookctl.store.event_records import RecordedRequest


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one side sends for one event and rule: the request as shown, or why none."""

    request: MaskedRequest | None
    error: str | None = None  # could not render (the old side: the record says it was not)


class Side:
    """One rule set as the plan sees it: which rules fire for an event, and what they send."""

    def __init__(self, rules: Sequence[Rule], environ: Mapping[str, str]) -> None:
        self.rules = list(rules)
        self.by_name = {r.name: r for r in self.rules}
        self.environ = environ

    def matched(self, data: Mapping[str, Any], name: str | None) -> dict[str, Rule]:
        """The rules of this side that fire for the event, by name."""
        return {r.name: r for r in self.rules if r.matches(name, data)}

    def outcome(self, rule: Rule, data: Mapping[str, Any]) -> Outcome:
        """What the rule sends for the event, as shown, or why it cannot render."""
        try:
            request = render_request(
                rule.webhook, data, environ=self.environ, extra={"rule": {"name": rule.name}}
            )
        except RenderError as exc:
            return Outcome(None, f"cannot render: {exc}")
        return Outcome(request.masked())


def recorded_outcome(recorded: RecordedRequest | None) -> Outcome:
    """What a delivery on record sent, as shown (every variable as `${NAME}`)."""
    if recorded is None:
        return Outcome(None, "the delivery is no longer on record (purged)")
    if recorded.unrendered or not recorded.request.get("method"):
        return Outcome(None, "its request could not be rendered (nothing was sent)")
    return Outcome(Request.from_dict(recorded.request).masked())


def request_text(request: MaskedRequest) -> list[str]:
    """A request as lines for a diff: method and URL, headers, a blank line, the body
    (JSON pretty-printed, so a diff points at the field that changed)."""
    lines = [f"{request.method} {request.url}", *(f"{k}: {v}" for k, v in request.headers)]
    if request.body is not None:
        body = request.body
        with contextlib.suppress(ValueError):
            body = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        lines += ["", *body.splitlines()]
    return lines


def request_diff(old: Outcome, new: Outcome, *, old_name: str, new_name: str) -> str:
    """The unified diff between two outcomes' requests (or their errors)."""

    def lines(o: Outcome) -> list[str]:
        return request_text(o.request) if o.request else [f"# {o.error}"]

    diff = difflib.unified_diff(
        lines(old), lines(new), fromfile=old_name, tofile=new_name, lineterm="", n=2
    )
    return "\n".join(diff)
