"""Deliveries as SQLite rows and back: the queue's SQL, the JSON columns, the body kept apart.

Store (writes) and history (log reads) share these, so a row is encoded and decoded in one place.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from hookctl.store.endpoint import endpoint_of
from hookctl.store.records import NewDelivery
from hookctl.store.sqlite.ordering import IN_TURN

_JSON_COLUMNS = ("request", "policy", "on_failure", "event", "response_headers")

INSERT_DELIVERY = """
INSERT INTO deliveries (
    id, rule, event_id, event_name, ticket, dedupe_key, status, attempts, url, method, request,
    body, policy, timeout, accept, on_failure, event, created_at, updated_at, next_attempt_at,
    lease_token, lease_expires_at, fence, unrendered, lease_holder, event_ref, endpoint
) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# A follow-up whose (rule, dedupe_key) exists already was enqueued by someone else: skip it.
INSERT_DELIVERY_ONCE = INSERT_DELIVERY.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
CLAIM_COLUMNS = (
    "id, rule, ticket, url, method, request, body, policy, timeout, accept, attempts, "
    "first_attempt_at, on_failure, event, event_id, unrendered, replays, attempts_at_replay, "
    "order_key"
)
# INDEXED BY because, without statistics, the planner prefers the equality on
# deliveries_status and then sorts every pending row.
# A paused endpoint's deliveries are not ready: held, their attempts and schedule untouched;
# nor are those of an endpoint whose rate schedule is full or that a Retry-After slowed
# (claim_after, m011_rate), nor an open one's (its breaker, store/breaker.py): claim()
# hands out its one probe apart. NOT EXISTS, not NOT IN: a row with no endpoint must stay
# claimable. An ordered delivery waits for its turn (ordering.py: none of its key pending
# before it).
READY = (
    "status = 'pending' AND next_attempt_at <= :due "
    "AND (lease_expires_at IS NULL OR lease_expires_at <= :now) "
    "AND NOT EXISTS (SELECT 1 FROM endpoints WHERE endpoints.endpoint = deliveries.endpoint "
    "AND (endpoints.paused_since IS NOT NULL OR endpoints.opened_at IS NOT NULL "
    "OR endpoints.claim_after > :now)) "
    f"AND {IN_TURN}"
)
DUE = f"deliveries INDEXED BY deliveries_due WHERE {READY}"
# The attempt is recorded even when the lease was lost: the request did happen. Numbers run
# over the delivery's whole life (replays included), so they stay unique in the log. A result
# with :sent = 0 (nothing went out) is no attempt: not logged, not counted.
INSERT_ATTEMPT = """
INSERT INTO attempts (
    delivery_id, number, started_at, duration_ms, status_code, error, response_headers,
    response_body
)
SELECT :id, COALESCE((SELECT MAX(number) FROM attempts WHERE delivery_id = :id), 0) + 1,
    :started_at, :duration_ms, :status_code, :error, :response_headers, :response_body
WHERE :sent AND EXISTS (SELECT 1 FROM deliveries WHERE id = :id)
"""
# A :free attempt (a failed probe, a 410 that paused its endpoint) is logged and counted
# over the delivery's life, but not by its retry policy: attempts_at_replay moves with it, and
# it does not start the retry window.
APPLY_RESULT = """
UPDATE deliveries SET
    attempts = attempts + :sent, status = :status, next_attempt_at = :next_attempt_at,
    attempts_at_replay = attempts_at_replay + :free,
    last_status_code = CASE WHEN :sent THEN :status_code ELSE last_status_code END,
    error = :error, updated_at = :now,
    first_attempt_at = CASE WHEN :sent AND NOT :free THEN COALESCE(first_attempt_at, :started_at)
        ELSE first_attempt_at END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_token = :token
"""


# One encoder, built once: json.dumps builds a new one per call when given separators.
# ensure_ascii (the default) keeps lone surrogates from an event's JSON storable as text.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dumps(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


def dumps_shared(value: Any, memo: dict[int, str | None]) -> str | None:
    """Encode once per object: a batch's deliveries share their rule's policy and event."""
    key = id(value)
    if key not in memo:
        memo[key] = dumps(value)
    return memo[key]


# A replay of a delivery whose request could not be rendered: the request rendered anew.
REPLACE_REQUEST = """
UPDATE deliveries SET
    url = ?, method = ?, request = ?, body = ?, policy = ?, timeout = ?, accept = ?,
    on_failure = ?, event = ?, ticket = ?, unrendered = 0, endpoint = ?
WHERE id = ?
"""


def _request_and_body(request: dict[str, Any]) -> tuple[str, str | None]:
    """The request's JSON without a string body, and that body (kept in a column of its own)."""
    body = request.get("body")
    if isinstance(body, str):  # kept apart: dicts() puts it back
        return _ENCODER.encode({k: v for k, v in request.items() if k != "body"}), body
    return _ENCODER.encode(request), None


def request_columns(
    d: NewDelivery, delivery_id: str, shared: dict[int, str | None]
) -> tuple[Any, ...]:
    """The REPLACE_REQUEST parameters: `d`'s request and policy for the delivery `delivery_id`."""
    request, body = _request_and_body(d.request)
    return (
        d.url, d.method, request, body, dumps_shared(d.policy, shared), d.timeout, d.accept,
        dumps_shared(d.on_failure, shared), dumps_shared(d.event, shared), d.ticket,
        endpoint_of(d.url), delivery_id,
    )  # fmt: skip


def delivery_row(
    d: NewDelivery,
    now: float,
    claim_token: str | None,
    lease_until: float | None,
    shared: dict[int, str | None],
    holder: str | None = None,
) -> tuple[Any, ...]:
    """The INSERT_DELIVERY parameters for one delivery (claimed by `holder` when claim_token
    is given)."""
    fence = 1 if claim_token is not None else 0
    request, body = _request_and_body(d.request)
    return (
        d.id, d.rule, d.event_id, d.event_name, d.ticket, d.dedupe_key, d.url, d.method,
        request, body, dumps_shared(d.policy, shared), d.timeout, d.accept,
        dumps_shared(d.on_failure, shared), dumps_shared(d.event, shared), now, now,
        now, claim_token, lease_until, fence, int(d.unrendered),
        holder if claim_token is not None else None, d.event_ref, endpoint_of(d.url),
    )  # fmt: skip


def dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """Rows as dicts, with the JSON columns parsed and a request's body back in its request."""
    names = [c[0] for c in cursor.description]
    rows = []
    for row in cursor:
        item = dict(zip(names, row, strict=True))
        for column in _JSON_COLUMNS:
            if item.get(column) is not None:
                item[column] = json.loads(item[column])
        # A request's body is stored in a column of its own (migration m002): put it back.
        body = item.pop("body", None)
        if body is not None and isinstance(item.get("request"), dict):
            item["request"]["body"] = body
        rows.append(item)
    return rows
