"""`on_failure`: the notice a rule sends once when one of its deliveries fails for good."""

from __future__ import annotations

from collections.abc import Mapping

from hookctl.errors import RenderError
from hookctl.render.templates import render_request, unrendered_request
from hookctl.rules.policy import PRESETS
from hookctl.rules.webhook import webhook_from_dict
from hookctl.store.records import AttemptResult, Claim, NewDelivery, new_delivery_id


def failure_notice(
    claim: Claim, result: AttemptResult, *, environ: Mapping[str, str], now: float
) -> tuple[NewDelivery, str | None]:
    """The rule's `on_failure` webhook as a new delivery, with the failed one in its context.

    Returns the delivery and, when its request could not be rendered, why (it then fails at once).
    """
    assert claim.on_failure is not None
    webhook = webhook_from_dict(claim.on_failure)
    event = claim.event or {}
    delivery = {
        "id": claim.id,
        "rule": claim.rule,
        "url": claim.url,
        "method": claim.method,
        "status": result.status,
        "attempts": claim.attempts + int(result.sent),  # over the delivery's life, as the log
        "error": result.error,
        "status_code": result.status_code,
        "ticket": claim.ticket,
    }
    error = None
    try:
        request = render_request(
            webhook,
            event,
            environ=environ,
            extra={"delivery": delivery, "rule": {"name": claim.rule}},
        )
    except RenderError as exc:
        error = f"cannot render: {exc}"
        request = unrendered_request(webhook)
    new = NewDelivery(
        id=new_delivery_id(now),
        rule=f"{claim.rule}:on_failure",
        event_id=claim.event_id,
        event_name="delivery.failed",
        ticket=claim.ticket,
        # Once per run of the retry policy (keyed by its first attempt): a second process
        # cannot notify again, but a replay that fails again is news and does.
        dedupe_key=f"on_failure:{claim.id}:{round((claim.first_attempt_at or result.started_at) * 1000)}",
        method=request.method,
        url=request.masked().url,
        request=request.to_dict(),
        policy=PRESETS["none"].to_dict(),
        timeout=claim.timeout,
        accept="2xx-3xx",
        unrendered=error is not None,
    )
    return new, error
