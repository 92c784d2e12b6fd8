"""What the queue takes and hands out: deliveries to enqueue, claims, attempt outcomes.

The store's records are split by who reads them: these (the queue), log_records.py (the log
and its reads), endpoint_records.py (breakers, health, rate limits) and event_records.py
(stored events); ids.py mints the ids. Every backend returns these, with one name per field:
`attempts` is always the count over a delivery's life, `status_code` the last one received,
`attempt_log` the attempts themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hookctl.store.endpoint_records import Breaker

Status = Literal["pending", "succeeded", "failed"]
# The one list of delivery statuses: the CLI's --status, completion and stats read it.
STATUSES: tuple[Status, ...] = ("pending", "succeeded", "failed")

# Where a delivery waiting its turn behind an earlier one of its order_by key is parked (its
# next attempt, far beyond any claim), its own time kept apart; the log shows its own time.
ORDER_PARKED_AT = 1e15


@dataclass
class NewDelivery:
    """A delivery to put in the outbox."""

    id: str
    rule: str
    event_id: str | None
    event_name: str | None
    ticket: str | None
    dedupe_key: str | None
    method: str
    url: str  # for display: secrets already masked
    request: dict[str, Any]
    policy: dict[str, Any]
    timeout: float
    accept: str
    on_failure: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    unrendered: bool = False  # the request could not be rendered: stored bare, never sent
    event_ref: str | None = None  # the stored event (NewEvent.id) this delivery was made for
    # The rule's `order_by:` rendered for the event: deliveries of one rule with the same key
    # are claimed one at a time, in the order they were enqueued (issue 15).
    order_key: str | None = None


@dataclass
class Claim:
    """A delivery this process may now attempt, while `token` holds its lease."""

    id: str
    token: str
    rule: str
    ticket: str | None
    url: str
    method: str
    request: dict[str, Any]
    policy: dict[str, Any]
    timeout: float
    accept: str
    attempts: int
    first_attempt_at: float | None
    on_failure: dict[str, Any] | None
    event: dict[str, Any] | None
    event_id: str | None
    unrendered: bool = False
    replays: int = 0
    attempts_at_replay: int = 0  # `attempts` when the latest replay began: its policy counts on
    order_key: str | None = None  # its rule's order_by key: the next of its key waits for it
    probe: bool = False  # its endpoint's breaker is open: this is the one probe sent to it

    @property
    def run_attempts(self) -> int:
        """Attempts since the latest replay (or ever): what the retry policy counts."""
        return self.attempts - self.attempts_at_replay


@dataclass
class AttemptResult:
    """The outcome of one attempt, and the delivery's new state as the caller decided it."""

    delivery_id: str
    token: str
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    response_headers: dict[str, Any] | None
    response_body: str | None
    status: Status
    next_attempt_at: float | None
    # False: nothing was sent (the request could not be rendered, or a setting this process
    # lacks held it back). Not an attempt: not logged as one, not counted, no policy consumed.
    sent: bool = True
    # The circuit breaker's reading of the attempt (store/breaker.py), for `endpoint`: "up"
    # (the receiver answered), "down" (no answer, a timeout, 5xx, 408, 429), "gone" (410 with
    # `on_gone: pause`); None: nothing for the breaker (not sent, or the rule's breaker is off).
    endpoint: str | None = None
    health: Literal["up", "down", "gone"] | None = None
    breaker: Breaker | None = None  # the rule's breaker settings (None: the defaults)
    # Logged as an attempt but not counted against the retry policy (a failed probe, a 410
    # that paused its endpoint): neither its retries nor the start of its retry window.
    free: bool = False
