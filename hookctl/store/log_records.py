"""What the log reads back: deliveries, their attempts and detail, queue levels and stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hookctl.store.records import Status


@dataclass
class Delivery:
    """One delivery as the log lists it: where it stands, without its request or attempts."""

    id: str
    rule: str
    status: Status
    attempts: int  # over the delivery's life, replays included
    replays: int
    method: str
    url: str  # for display: secrets already masked
    status_code: int | None  # of the latest attempt that got an answer
    error: str | None
    ticket: str | None
    event_id: str | None
    event_name: str | None
    dedupe_key: str | None
    created_at: float
    updated_at: float
    first_attempt_at: float | None
    next_attempt_at: float | None  # set exactly while pending
    lease_expires_at: float | None  # set while a process holds it
    unrendered: bool  # its request could not be rendered: never sent as stored
    endpoint: str | None = None  # scheme://host:port it goes to (hookctl/store/endpoint.py)
    paused_since: float | None = None  # its endpoint is paused (since then): not claimed
    order_key: str | None = None  # its rule's `order_by:` key: sent after the earlier ones
    # Derived when read: the earliest pending delivery of its key before it (it waits for that
    # one) and that one's attempts; and the one just before it, if that one failed for good.
    waiting_after: str | None = None
    waiting_after_attempts: int = 0
    follows_failed: str | None = None
    open_since: float | None = None  # its endpoint's breaker is open (since then): it waits
    next_probe_at: float | None = None  # ... until this probe closes it


@dataclass
class Attempt:
    """One request that was sent, and what came back."""

    delivery_id: str
    number: int  # 1, 2, ... over the delivery's life
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    response_headers: dict[str, Any] | None
    response_body: str | None


@dataclass
class DeliveryDetail:
    """One delivery in full: its stored request and event, and every attempt in order."""

    delivery: Delivery
    request: dict[str, Any]  # the stored request: secrets as placeholders, never their values
    policy: dict[str, Any]
    timeout: float
    accept: str
    on_failure: dict[str, Any] | None
    event: dict[str, Any] | None
    attempt_log: list[Attempt] = field(default_factory=list)
    event_ref: str | None = None  # the stored event ("evt_...") it was made for, if kept


@dataclass
class Unrendered:
    """A delivery whose request could not be rendered: what a replay needs to render it anew."""

    id: str
    rule: str
    status: Status
    ticket: str | None
    event_id: str | None
    event_name: str | None
    event: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True, slots=True)
class QueueLevels:
    """The queue now, cheaply (for gauges scraped every few seconds): no walk over the rows."""

    pending: int  # deliveries pending, due or scheduled
    due: int  # of those, what a claim now could take (as due_count)
    oldest_due_at: float | None  # when the longest-waiting pending delivery due now fell due


@dataclass
class UrlTiming:
    """Attempt durations to one URL."""

    url: str
    attempts: int
    avg_ms: float
    max_ms: float


@dataclass
class UrlFailures:
    """How often deliveries to one URL failed."""

    url: str
    deliveries: int
    failed: int
    failed_attempts: int


@dataclass
class Stats:
    """Counts by status and rule, attempt latency, slowest and failing URLs, over a window."""

    since: float | None
    deliveries: int
    by_status: dict[str, int]
    by_rule: dict[str, dict[str, int]]  # rule -> {status: count, "total": count}
    attempts: int
    duration_ms: dict[str, float | None]  # "p50", "p95", "p99" over every attempt
    slowest_urls: list[UrlTiming]
    failing_urls: list[UrlFailures]

    @property
    def success_rate(self) -> float | None:
        """Succeeded out of finished deliveries (None when none finished)."""
        finished = self.by_status["succeeded"] + self.by_status["failed"]
        return round(self.by_status["succeeded"] / finished, 4) if finished else None
