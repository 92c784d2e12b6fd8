"""`on_failure`: the notice a rule sends once when one of its deliveries fails for good, or
when the endpoint it goes to is paused for failing too long (auto-disable, issue 15)."""

from __future__ import annotations

from collections.abc import Mapping

from hookctl.errors import RenderError
from hookctl.render.webhook import render_request, unrendered_request
from hookctl.rules.policy import PRESETS
from hookctl.rules.webhook import webhook_from_dict
from hookctl.store.ids import new_delivery_id
from hookctl.store.records import AttemptResult, Claim, NewDelivery


def failure_notice(
    claim: Claim,
    result: AttemptResult,
    *,
    environ: Mapping[str, str],
    now: float,
    endpoint: str | None = None,
    reason: str | None = None,
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
        "status": result.status if endpoint is None else "disabled",
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
            extra={
                "delivery": delivery,
                "rule": {"name": claim.rule},
                # Only for an endpoint's notice: an event's own `endpoint` key is not shadowed.
                **({"endpoint": {"name": endpoint, "reason": reason}} if endpoint else {}),
            },
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


def endpoint_notice(
    claim: Claim,
    result: AttemptResult,
    *,
    endpoint: str,
    reason: str,
    environ: Mapping[str, str],
    now: float,
) -> tuple[NewDelivery, str | None]:
    """The rule's `on_failure` webhook for an endpoint auto-disabled: `endpoint.name` and
    `endpoint.reason` in its context, beside the delivery whose failure tipped it over
    (`delivery.status` is "disabled"). Enqueued by the store only in the transaction that
    pauses the endpoint, so once; the dedupe key makes a second copy impossible too."""
    new, error = failure_notice(claim, result, environ=environ, now=now, endpoint=endpoint,
                                reason=reason)  # fmt: skip
    new.event_name = "endpoint.disabled"
    new.dedupe_key = f"endpoint_disabled:{endpoint}:{reason}"
    return new, error
