"""A matched event and rule become a delivery for the outbox: its request, ticket and policy.

Only `fire` plans, so the pipeline imports this (and with it jinja) when `fire` runs, never
for a `retry-loop`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hookctl.errors import RenderError
from hookctl.events import Event
from hookctl.intake import event_ticket
from hookctl.policy import PRESETS, RetryPolicy
from hookctl.records import NewDelivery, new_delivery_id
from hookctl.render import render_request, render_text
from hookctl.request import Request
from hookctl.webhookspec import webhook_to_dict

if TYPE_CHECKING:
    from hookctl.rules import Rule


class Planner:
    """Renders a rule's request for an event, and makes the delivery that will carry it."""

    def __init__(self, environ: Mapping[str, str], clock: Callable[[], float]) -> None:
        self.environ = environ
        self.clock = clock
        # One dict per rule, not per delivery: the store encodes a batch's shared ones once.
        self._policies: dict[RetryPolicy, dict[str, Any]] = {}

    def render(self, rule: Rule, event: Event) -> tuple[Request, str | None, str | None]:
        """The request, the ticket for the log, and why the request could not be rendered.

        A request that cannot be rendered comes back bare (method and URL template), to be
        recorded as failed and never sent.
        """
        data = event.data
        try:
            request = render_request(
                rule.webhook, data, environ=self.environ, extra={"rule": {"name": rule.name}}
            )
            return request, event_ticket(data, self._rule_ticket(rule, data)), None
        except RenderError as exc:
            bare = Request(rule.webhook.method, rule.webhook.url, (), None, rule.webhook.format)
            return bare, event_ticket(data), f"cannot render the request: {exc}"

    def delivery(
        self,
        rule: Rule,
        event: Event,
        key: str | None,
        request: Request,
        ticket: str | None,
        render_error: str | None,
    ) -> NewDelivery:
        """The delivery to enqueue; one whose request could not be rendered is never retried."""
        return NewDelivery(
            id=new_delivery_id(self.clock()),
            rule=rule.name,
            event_id=event.event_id,
            event_name=event.name,
            ticket=ticket,
            dedupe_key=key,
            method=request.method,
            url=request.masked_url(),
            request=request.to_dict(),
            policy=self._policy(PRESETS["none"] if render_error else rule.retry),
            timeout=rule.timeout,
            accept=rule.accept,
            on_failure=webhook_to_dict(rule.on_failure) if rule.on_failure else None,
            event=dict(event.data) if rule.on_failure else None,
        )

    def _policy(self, policy: RetryPolicy) -> dict[str, Any]:
        if policy not in self._policies:
            self._policies[policy] = policy.to_dict()
        return self._policies[policy]

    def _rule_ticket(self, rule: Rule, data: Mapping[str, Any]) -> str | None:
        if rule.ticket is None:
            return None
        value = render_text(rule.ticket, {**data, "rule": {"name": rule.name}}, where="ticket")
        return value or None
