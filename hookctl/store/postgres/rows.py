"""Records as PostgreSQL values and back: the one place SQL rows become hookctl's records.

Reads hand back the records of hookctl/store/*records.py, as the SQLite store does (JSON parsed,
a request's body back in its request), so the CLI and the contract see no difference. Text
PostgreSQL cannot hold (NUL characters) is kept apart: request and response bodies are bytea
(UTF-8), and the few free-text columns have NUL replaced by U+FFFD.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from hookctl.store.endpoint import endpoint_of
from hookctl.store.event_records import NewEvent, RecordedRequest, StoredEvent
from hookctl.store.log_records import Attempt, Delivery, DeliveryDetail, Unrendered
from hookctl.store.records import AttemptResult, Claim, NewDelivery

_JSON_COLUMNS = ("request", "policy", "on_failure", "event", "response_headers")
_BYTES_COLUMNS = ("body", "response_body")

# What the log lists (a Delivery): the row without its request, event or policy.
DELIVERY_COLUMNS = (
    "id, rule, status, attempts, replays, method, url, last_status_code, error, ticket, "
    "event_id, event_name, dedupe_key, created_at, updated_at, first_attempt_at, "
    "next_attempt_at, lease_expires_at, unrendered, endpoint, order_key"
)
# The rest of a DeliveryDetail.
DETAIL_COLUMNS = "request, body, policy, timeout, accept, on_failure, event, event_ref"
ATTEMPT_COLUMNS = (
    "delivery_id, number, started_at, duration_ms, status_code, error, response_headers, "
    "response_body"
)
CLAIM_FIELDS = (
    "id", "rule", "ticket", "url", "method", "request", "body", "policy", "timeout", "accept",
    "attempts", "first_attempt_at", "on_failure", "event", "event_id", "unrendered", "replays",
    "attempts_at_replay", "order_key",
)  # fmt: skip
CLAIM_COLUMNS = ", ".join(f"d.{name}" for name in CLAIM_FIELDS)

INSERT_DELIVERY = """
INSERT INTO deliveries (
    id, rule, event_id, event_name, ticket, dedupe_key, status, attempts, url, method, request,
    body, policy, timeout, accept, on_failure, event, created_at, updated_at, next_attempt_at,
    lease_token, lease_expires_at, fence, unrendered, lease_holder, event_ref, endpoint
) VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
    %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
RETURNING id
"""

REPLACE_REQUEST = """
UPDATE deliveries SET
    url = %s, method = %s, request = %s, body = %s, policy = %s, timeout = %s, accept = %s,
    on_failure = %s, event = %s, ticket = %s, unrendered = false, endpoint = %s
WHERE id = %s
"""

_ENCODER = json.JSONEncoder(separators=(",", ":"))  # ensure_ascii: lone surrogates stay storable


def dumps(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


def dumps_shared(value: Any, memo: dict[int, str | None]) -> str | None:
    """Encode once per object: a batch's deliveries share their rule's policy and event."""
    key = id(value)
    if key not in memo:
        memo[key] = dumps(value)
    return memo[key]


def text(value: str | None) -> str | None:
    """A string PostgreSQL's text type accepts: NUL (which it cannot store) becomes U+FFFD."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def blob(value: str | None) -> bytes | None:
    """A body as bytea: every character kept, NUL included."""
    return None if value is None else value.encode("utf-8", "surrogatepass")


def _request_and_body(request: dict[str, Any]) -> tuple[str, bytes | None]:
    """The request's JSON without a string body, and that body (kept in a column of its own)."""
    body = request.get("body")
    if isinstance(body, str):
        return _ENCODER.encode({k: v for k, v in request.items() if k != "body"}), blob(body)
    return _ENCODER.encode(request), None


def delivery_params(
    d: NewDelivery,
    now: float,
    claim_token: str | None,
    lease_until: float | None,
    shared: dict[int, str | None],
    holder: str | None = None,
) -> tuple[Any, ...]:
    """The INSERT_DELIVERY parameters for one delivery (claimed by `holder` when claim_token
    is given)."""
    request, body = _request_and_body(d.request)
    return (
        d.id, text(d.rule), text(d.event_id), text(d.event_name), text(d.ticket),
        text(d.dedupe_key), text(d.url), d.method, request, body, dumps_shared(d.policy, shared),
        d.timeout, d.accept, dumps_shared(d.on_failure, shared), dumps_shared(d.event, shared),
        now, now, now, claim_token, lease_until, 1 if claim_token is not None else 0,
        d.unrendered, holder if claim_token is not None else None, d.event_ref,
        endpoint_of(d.url),
    )  # fmt: skip


def request_params(
    d: NewDelivery, delivery_id: str, shared: dict[int, str | None]
) -> tuple[Any, ...]:
    """The REPLACE_REQUEST parameters: `d`'s request and policy for the delivery `delivery_id`."""
    request, body = _request_and_body(d.request)
    return (
        text(d.url), d.method, request, body, dumps_shared(d.policy, shared), d.timeout, d.accept,
        dumps_shared(d.on_failure, shared), dumps_shared(d.event, shared), text(d.ticket),
        endpoint_of(d.url), delivery_id,
    )  # fmt: skip


def result_columns(results: Sequence[AttemptResult]) -> dict[str, list[Any]]:
    """Outcomes as one array per column, for a batch applied in a single unnest() statement."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "id", "token", "started_at", "duration_ms", "status_code", "error", "headers",
            "body", "status", "next_at", "sent", "free",
        )
    }  # fmt: skip
    for r in results:
        columns["id"].append(r.delivery_id)
        columns["token"].append(r.token)
        columns["started_at"].append(r.started_at)
        columns["duration_ms"].append(r.duration_ms)
        columns["status_code"].append(r.status_code)
        columns["error"].append(text(r.error))
        columns["headers"].append(dumps(r.response_headers))
        columns["body"].append(blob(r.response_body))
        columns["status"].append(r.status)
        columns["next_at"].append(r.next_attempt_at if r.status == "pending" else None)
        columns["sent"].append(bool(r.sent))
        columns["free"].append(bool(r.sent and r.free))
    return columns


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    for column in _JSON_COLUMNS:
        if item.get(column) is not None:
            item[column] = json.loads(item[column])
    for column in _BYTES_COLUMNS:
        value = item.get(column)
        if value is not None:
            item[column] = bytes(value).decode("utf-8", "surrogatepass")
    # A request's body is stored in a column of its own: put it back, as SQLite's rows.dicts does.
    if "body" in item:
        body = item.pop("body")
        if body is not None and isinstance(item.get("request"), dict):
            item["request"]["body"] = body
    return item


def dicts(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as the dicts SQLite's store returns: JSON parsed, bodies decoded and put back."""
    return [_decode(dict(zip(names, row, strict=True))) for row in rows]


def claims(token: str, rows: Iterable[Sequence[Any]]) -> list[Claim]:
    """Claim rows (CLAIM_FIELDS, next_attempt_at, seq) as Claims, oldest due first."""
    ordered = sorted(rows, key=lambda row: (row[-2], row[-1]))
    found = []
    for item in dicts(CLAIM_FIELDS, (row[:-2] for row in ordered)):
        item["unrendered"] = bool(item["unrendered"])
        found.append(Claim(token=token, **item))
    return found


DELIVERY_NAMES = [c.strip() for c in DELIVERY_COLUMNS.split(",")]
DETAIL_NAMES = [c.strip() for c in DETAIL_COLUMNS.split(",")]
ATTEMPT_NAMES = [c.strip() for c in ATTEMPT_COLUMNS.split(",")]
UNRENDERED_NAMES = ["id", "rule", "status", "ticket", "event_id", "event_name", "event", "error"]


def delivery(
    row: Sequence[Any],
    paused: dict[str, tuple[float, str | None]],
    opened: dict[str, tuple[float, float | None]] | None = None,
) -> Delivery:
    """A row of DELIVERY_COLUMNS as a Delivery; `paused` (endpoints.paused) says if it is held,
    `opened` (endpoints.opened) if its endpoint's breaker is open."""
    item = dict(zip(DELIVERY_NAMES, row, strict=True))
    item["status_code"] = item.pop("last_status_code")
    item["unrendered"] = bool(item["unrendered"])
    held = paused.get(item["endpoint"]) if item["endpoint"] is not None else None
    open_ = (opened or {}).get(item["endpoint"]) if item["endpoint"] is not None else None
    return Delivery(
        **item,
        paused_since=held[0] if held else None,
        open_since=open_[0] if open_ else None,
        next_probe_at=open_[1] if open_ else None,
    )


def detail(
    summary: Delivery, stored: Sequence[Any], attempts: Iterable[Sequence[Any]]
) -> DeliveryDetail:
    """A DeliveryDetail from its Delivery, a DETAIL_COLUMNS row and ATTEMPT_COLUMNS rows."""
    (fields,) = dicts(DETAIL_NAMES, [stored])
    log = [Attempt(**a) for a in dicts(ATTEMPT_NAMES, attempts)]
    return DeliveryDetail(delivery=summary, **fields, attempt_log=log)


def unrendered(rows: Iterable[Sequence[Any]]) -> list[Unrendered]:
    """Rows of UNRENDERED_NAMES as Unrendered records."""
    return [Unrendered(**item) for item in dicts(UNRENDERED_NAMES, rows)]


def recorded(rows: Iterable[Sequence[Any]]) -> dict[str, RecordedRequest]:
    """Rows of (id, rule, status, ticket, request, body, unrendered) as RecordedRequests by id."""
    names = ["id", "rule", "status", "ticket", "request", "body", "unrendered"]
    found = {}
    for item in dicts(names, rows):
        found[item["id"]] = RecordedRequest(
            id=item["id"],
            rule=item["rule"],
            status=item["status"],
            ticket=item["ticket"],
            request=item["request"],
            unrendered=bool(item["unrendered"]),
        )
    return found


EVENT_COLUMNS = (
    "id, received_at, source, line, event_id, event_name, ticket, size, truncated, data, deliveries"
)


def event_params(event: NewEvent, max_bytes: int) -> list[Any]:
    """An event's row without its `deliveries` (known only inside the transaction)."""
    data = dumps(event.data) or "{}"
    size = len(data)  # ASCII (the encoder escapes the rest), so characters are bytes
    truncated = size > max_bytes
    if truncated:
        data = data[:max_bytes]
    return [
        event.id, event.received_at, text(event.source), event.line, text(event.event_id),
        text(event.event_name), text(event.ticket), size, truncated, data,
    ]  # fmt: skip


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """A row of EVENT_COLUMNS as a StoredEvent."""
    id_, received_at, source, line, event_id, name, ticket, size, truncated, data, links = row
    return StoredEvent(
        id=id_,
        received_at=received_at,
        source=source,
        line=line,
        event_id=event_id,
        event_name=name,
        ticket=ticket,
        size=size,
        truncated=bool(truncated),
        data=None if truncated else json.loads(data),
        deliveries=json.loads(links) if links else {},
        text=data if truncated else None,
    )
