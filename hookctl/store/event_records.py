"""Stored events (issue 17: `fire` and `serve` keep what they read, for `plan`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class NewEvent:
    """An event as read, to keep in the store with the deliveries it led to (same transaction).

    `id` comes from new_event_id(received_at); a delivery made for this event names it in
    NewDelivery.event_ref. `source` is where it came from: a file path, `<stdin>`, or
    for `serve`, `http` (POST /events) or the name in POST /events/{source}.
    """

    id: str
    received_at: float
    source: str
    line: int | None
    event_id: str | None  # the event's own `id` (or Movidesk's `Id`)
    event_name: str | None
    ticket: str | None
    data: dict[str, Any]


@dataclass
class StoredEvent:
    """An event read back from the store.

    `data` is None when the event was larger than the stored-event limit: then `text` holds
    its first bytes of JSON and `truncated` is True (it cannot be replayed). `deliveries`
    maps each rule that matched it to the delivery on record for it (for a duplicate, the
    earlier delivery that the event was recognised as).
    """

    id: str
    received_at: float
    source: str
    line: int | None
    event_id: str | None
    event_name: str | None
    ticket: str | None
    size: int  # bytes of the event's compact JSON
    truncated: bool
    data: dict[str, Any] | None
    deliveries: dict[str, str]
    text: str | None = None  # the stored prefix of a truncated event


@dataclass
class RecordedRequest:
    """What a delivery on record sent (or would send): its request as stored, placeholders kept."""

    id: str
    rule: str
    status: Literal["pending", "succeeded", "failed"]
    ticket: str | None
    request: dict[str, Any]
    unrendered: bool
