"""Every read `serve` makes of the store, turned into the plain records its pages and metrics use.

The one module of `serve` that knows the store's records (Delivery, DeliveryDetail, StoredEvent); the
server runs these functions on the store's own thread (`StoreThread.call`), never on the loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hookctl.delivery.prepare import reveal
from hookctl.render.request import MaskedRequest, Request
from hookctl.store.records import STATUSES

if TYPE_CHECKING:
    from hookctl.store.contract import Store
    from hookctl.store.event_records import StoredEvent
    from hookctl.store.log_records import Delivery, QueueLevels

__all__ = ["STATUSES", "AttemptView", "DeliveryView", "EndpointFigures", "LogRow", "QueueFigures"]
__all__ += ["EventRow", "EventView", "Firing"]


@dataclass(frozen=True, slots=True)
class LogRow:
    """One line of the execution log."""

    id: str
    updated_at: float
    created_at: float
    status: str
    attempts: int
    url: str
    method: str
    error: str | None
    rule: str
    ticket: str | None
    event_id: str | None
    status_code: int | None


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One attempt of a delivery, as the page shows it."""

    number: int
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One delivery with its request (secrets masked) and every attempt."""

    row: LogRow
    request: MaskedRequest | None
    unrendered: bool
    next_attempt_at: float | None
    replays: int
    attempts: tuple[AttemptView, ...]
    event_ref: str | None = None  # the stored event it was made for, if kept


@dataclass(frozen=True, slots=True)
class EventRow:
    """One line of the events page: a stored event and the deliveries it matched, by rule."""

    ref: str
    received_at: float
    source: str
    event_name: str | None
    event_id: str | None
    ticket: str | None
    size: int
    truncated: bool
    matched: tuple[tuple[str, str], ...]  # (rule, delivery id) of its first firing


@dataclass(frozen=True, slots=True)
class EventView:
    """One stored event: its metadata, its JSON pretty-printed, every delivery made for it."""

    row: EventRow
    line: int | None
    json: str  # indented; a truncated event's stored prefix as it is
    deliveries: tuple[LogRow, ...]


@dataclass(frozen=True, slots=True)
class Firing:
    """What firing a stored event again needs; `problem` says why it cannot be (else None)."""

    ref: str
    source: str
    line: int
    data: dict[str, Any] | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class EndpointFigures:
    """One endpoint with health state (issue 15): its breaker, pause, Retry-After hold, rate."""

    endpoint: str
    breaker_open: bool
    failures: int  # consecutive failed attempts (0 once one succeeds)
    paused: bool
    held_for: float  # seconds until a Retry-After hold ends (0: none)
    rate_interval: float  # seconds between sends under its rate (0: no rate)


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """What the store holds now, for gauges: by rule and status, and the queue's state."""

    by_rule: dict[str, dict[str, int]]
    pending: int
    due: int
    oldest_due_age: float  # seconds the longest-waiting due delivery has been due; 0 if none
    endpoints: tuple[EndpointFigures, ...] = ()  # only those with any state: failing, paused...


def _row(d: Delivery) -> LogRow:
    return LogRow(
        id=d.id,
        updated_at=d.updated_at,
        created_at=d.created_at,
        status=d.status,
        attempts=d.attempts,
        url=d.url,
        method=d.method,
        error=d.error,
        rule=d.rule,
        ticket=d.ticket,
        event_id=d.event_id,
        status_code=d.status_code,
    )


def log_rows(
    store: Store,
    *,
    status: str | None = None,
    rule: str | None = None,
    ticket: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[LogRow]:
    """The newest deliveries that pass the filters."""
    found = store.query(status=status, rule=rule, ticket=ticket, since=since, limit=limit)
    return [_row(d) for d in found]


def _event_row(e: StoredEvent) -> EventRow:
    return EventRow(
        ref=e.id,
        received_at=e.received_at,
        source=e.source,
        event_name=e.event_name,
        event_id=e.event_id,
        ticket=e.ticket,
        size=e.size,
        truncated=e.truncated,
        matched=tuple(sorted(e.deliveries.items())),
    )


def event_rows(
    store: Store,
    *,
    source: str | None = None,
    event_name: str | None = None,
    ticket: str | None = None,
    event_id: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[EventRow]:
    """The newest stored events that pass the filters (one indexed read)."""
    found = store.find_events(
        source=source,
        event_name=event_name,
        ticket=ticket,
        event_id=event_id,
        since=since,
        limit=limit,
    )
    return [_event_row(e) for e in found]


def event(store: Store, event_ref: str) -> EventView | None:
    """One stored event with every delivery on record for it; None if there is none."""
    stored = store.stored_event(event_ref)
    if stored is None:
        return None
    shown = (
        (stored.text or "")
        if stored.truncated
        else json.dumps(stored.data, indent=2, ensure_ascii=False)
    )
    return EventView(
        row=_event_row(stored),
        line=stored.line,
        json=shown,
        deliveries=tuple(_row(d) for d in store.event_deliveries(event_ref)),
    )


def firing(store: Store, event_ref: str) -> Firing | None:
    """A stored event to fire again, or why it cannot be; None if there is no such event."""
    stored = store.stored_event(event_ref)
    if stored is None:
        return None
    problem = None
    if stored.truncated or stored.data is None:
        problem = (
            f"it was larger than the stored-event limit ({stored.size} bytes): only its "
            "first bytes were kept, so it cannot be fired again"
        )
    return Firing(stored.id, stored.source, stored.line or 0, stored.data, problem)


def delivery(store: Store, delivery_id: str) -> DeliveryView | None:
    """One delivery by id, its request masked as `hookctl log ID` shows it; None if absent."""
    detail = store.get(delivery_id)
    if detail is None:
        return None
    stored = detail.request or {}
    masked = (
        reveal(Request.from_dict(stored), stored.get("shown")) if stored.get("method") else None
    )
    attempts = tuple(
        AttemptView(
            number=a.number,
            started_at=a.started_at,
            duration_ms=a.duration_ms,
            status_code=a.status_code,
            error=a.error,
            response_body=a.response_body,
        )
        for a in detail.attempt_log
    )
    d = detail.delivery
    return DeliveryView(
        row=_row(d),
        request=masked,
        unrendered=d.unrendered,
        next_attempt_at=d.next_attempt_at,
        replays=d.replays,
        attempts=attempts,
        event_ref=detail.event_ref,
    )


def queue_figures(store: Store, now: float) -> QueueFigures:
    """Counts by rule and status, pending and due now, and how long the oldest due one waits.

    From the store's index-only reads (queue_levels, rule_counts): no walk over the rows, so
    a scrape costs about the same at a million deliveries as at a thousand.
    """
    return figures_of(
        store.rule_counts(), store.queue_levels(now), now, endpoint_figures(store, now)
    )


def endpoint_figures(store: Store, now: float) -> tuple[EndpointFigures, ...]:
    """Every endpoint that is failing, open, paused, held or rate-limited, by name: three reads
    of small tables (one row per such endpoint), never of the deliveries."""
    breakers = store.breaker_states()
    paused = store.paused_endpoints()
    limits = store.endpoint_limits(now=now)
    figures = []
    for name in sorted(set(breakers) | set(paused) | set(limits)):
        breaker = breakers.get(name)
        limit = limits.get(name)
        hold = limit.not_before if limit is not None else None
        figures.append(
            EndpointFigures(
                endpoint=name,
                breaker_open=breaker is not None and breaker.open_since is not None,
                failures=breaker.failures if breaker is not None else 0,
                paused=name in paused,
                held_for=max(0.0, hold - now) if hold is not None else 0.0,
                rate_interval=limit.interval if limit is not None and limit.rate else 0.0,
            )
        )
    return tuple(figures)


def queue_levels(store: Store, now: float) -> QueueLevels:
    """Pending, due now and the oldest due time: index reads, about a millisecond."""
    return store.queue_levels(now)


def rule_counts(store: Store) -> dict[str, dict[str, int]]:
    """Deliveries by rule and status (a pass over two indexes: tens of ms at 100k)."""
    return store.rule_counts()


def figures_of(
    by_rule: dict[str, dict[str, int]],
    levels: QueueLevels,
    now: float,
    endpoints: tuple[EndpointFigures, ...] = (),
) -> QueueFigures:
    """The gauges from what the store said (read at different times, perhaps: see metrics)."""
    oldest = levels.oldest_due_at
    return QueueFigures(
        by_rule={
            rule: {str(status): int(counts.get(status, 0)) for status in STATUSES}
            for rule, counts in by_rule.items()
        },
        pending=levels.pending,
        due=levels.due,
        oldest_due_age=0.0 if oldest is None else max(0.0, now - oldest),
        endpoints=endpoints,
    )


def replay(store: Store, delivery_id: str, now: float) -> str | None:
    """Queue one delivery again, due now; None when done, else why not."""
    view = delivery(store, delivery_id)
    if view is None:
        return "no such delivery"
    if view.unrendered:
        # Rendering it again needs the rules as they are now: `hookctl replay` does that.
        return "its request was never rendered: replay it with `hookctl replay ID`"
    if store.requeue(ids=[view.row.id], now=now):
        return None
    return "not queued again (it may be being sent right now)"


def due_count(store: Store, now: float) -> int:
    """Deliveries a claim could take now (a read that proves the store answers)."""
    return store.due_count(now)
