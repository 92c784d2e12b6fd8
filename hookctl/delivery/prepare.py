"""A matched event and rule become a delivery for the outbox: its request, ticket and policy.

Only `fire` plans, so the pipeline imports this (and with it jinja) when `fire` runs, never
for a `retry-loop`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hookctl.errors import RenderError
from hookctl.events.event import Event
from hookctl.events.intake import event_ticket
from hookctl.render.request import MaskedRequest, Request, placeholder
from hookctl.render.templates import render_text
from hookctl.render.webhook import render_request, unrendered_request
from hookctl.rules.policy import PRESETS, RetryPolicy
from hookctl.rules.webhook import webhook_to_dict
from hookctl.store.endpoint_records import DEFAULT_BREAKER, Breaker
from hookctl.store.ids import new_delivery_id
from hookctl.store.records import NewDelivery

if TYPE_CHECKING:
    from hookctl.rules.load import Rule


class Planner:
    """Renders a rule's request for an event, and makes the delivery that will carry it."""

    def __init__(self, environ: Mapping[str, str], clock: Callable[[], float]) -> None:
        self.environ = environ
        self.clock = clock
        # One dict per rule, not per delivery: the store encodes a batch's shared ones once.
        self._policies: dict[tuple[RetryPolicy, Breaker], dict[str, Any]] = {}

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
            if rule.order_by is not None:
                # Checked here so a key that cannot be rendered fails like the request would
                # (never sent unordered); delivery() renders it again, cheaply.
                order_key(rule, data)
            return request, event_ticket(data, self._rule_ticket(rule, data)), None
        except RenderError as exc:
            return unrendered_request(rule.webhook), event_ticket(data), f"cannot render: {exc}"

    def delivery(
        self,
        rule: Rule,
        event: Event,
        key: str | None,
        request: Request,
        ticket: str | None,
        render_error: str | None,
    ) -> NewDelivery:
        """The delivery to enqueue; one whose request could not be rendered is never retried.

        That one is marked `unrendered` (its stored request is the bare template, never sent)
        and keeps its event, so a replay can render it again from the rule as it is then.
        """
        shown = self.shown(rule, request)
        stored = request.to_dict()
        if shown:
            stored["shown"] = shown  # the values of the rule's public_env, for the log
        if rule.rate is not None:
            stored["rate"] = str(rule.rate)  # the pipeline's rate limit reads it (ratelimit.py)
        return NewDelivery(
            id=new_delivery_id(self.clock()),
            rule=rule.name,
            event_id=event.event_id,
            event_name=event.name,
            ticket=ticket,
            dedupe_key=key,
            method=request.method,
            url=reveal(request, shown).url,
            request=stored,
            policy=self._policy(PRESETS["none"] if render_error else rule.retry, rule.breaker),
            timeout=rule.timeout,
            accept=rule.accept,
            on_failure=webhook_to_dict(rule.on_failure) if rule.on_failure else None,
            event=dict(event.data) if rule.on_failure or render_error else None,
            unrendered=render_error is not None,
            order_key=order_key(rule, event.data) if rule.order_by and not render_error else None,
        )

    def shown(self, rule: Rule, request: Request) -> dict[str, str]:
        """The variables of the rule's `public_env` this request uses, with their values."""
        return shown_values(rule, request, self.environ)

    def masked(self, rule: Rule, request: Request) -> MaskedRequest:
        """The request as it may be shown: secrets masked, public variables as their values."""
        return reveal(request, self.shown(rule, request))

    def _policy(self, policy: RetryPolicy, breaker: Breaker = DEFAULT_BREAKER) -> dict[str, Any]:
        """The stored policy: the retry policy, and the rule's breaker unless it is the default."""
        key = (policy, breaker)
        if key not in self._policies:
            data = policy.to_dict()
            if breaker != DEFAULT_BREAKER:
                data["breaker"] = breaker.to_dict()
            self._policies[key] = data
        return self._policies[key]

    def _rule_ticket(self, rule: Rule, data: Mapping[str, Any]) -> str | None:
        if rule.ticket is None:
            return None
        value = render_text(rule.ticket, {**data, "rule": {"name": rule.name}}, where="ticket")
        return value or None


def order_key(rule: Rule, data: Mapping[str, Any]) -> str | None:
    """The rule's `order_by:` rendered for the event (None: the rule has none). Raises
    RenderError when it cannot be rendered or renders empty: such a delivery could not be put
    in order, so it is not sent (a replay renders it again)."""
    if rule.order_by is None:
        return None
    key = render_text(rule.order_by, {**data, "rule": {"name": rule.name}}, where="order_by")
    if not key.strip():
        raise RenderError("order_by: rendered an empty key (is the field missing or null?)")
    return key


def shown_values(rule: Rule, request: Request, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of the rule's `public_env` the request uses and the environment sets."""
    return {n: environ[n] for n in request.secrets if n in rule.public_env and n in environ}


def reveal(request: Request, shown: Mapping[str, str] | None) -> MaskedRequest:
    """`request.masked()`, except that the variables in `shown` appear as their values.

    Only for showing: the request that is sent reads every variable when it is sent. Auth and
    signing secrets are never in `shown` (rules refuse a public variable there).
    """
    if not shown:
        return request.masked()

    def show(text: str) -> str:
        for name, value in shown.items():
            text = text.replace(placeholder(request.nonce, name), value)
        return text

    return dataclasses.replace(
        request,
        url=show(request.url),
        headers=tuple((k, show(v)) for k, v in request.headers),
        body=show(request.body) if request.body is not None else None,
        secrets=tuple(n for n in request.secrets if n not in shown),
    ).masked()
