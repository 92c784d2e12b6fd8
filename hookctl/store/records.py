"""What the store takes and returns: delivery ids (time-sortable ULIDs) and plain dataclasses.

Every backend returns these, with one name per field: `attempts` is always the count over a
delivery's life, `status_code` the last one received, `attempt_log` the attempts themselves.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pending", "succeeded", "failed"]
# The one list of delivery statuses: the CLI's --status, completion and stats read it.
STATUSES: tuple[Status, ...] = ("pending", "succeeded", "failed")

ID_PREFIX = "msg_"
# Ids carry their creation time so `since` filters can seek the id indexes; enqueue refuses ids
# minted further than this from its clock, which keeps that shortcut exact.
ID_CLOCK_SLACK = 3600.0
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # ASCII-ordered, so string order is numeric order
ID_PATTERN = re.compile(rf"^{ID_PREFIX}[0-7][{_CROCKFORD}]{{25}}$")


def new_delivery_id(now: float) -> str:
    """A new "msg_" + 26-char ULID (48-bit milliseconds, 80 random bits): ids sort by time."""
    millis = math.floor(now * 1000)
    if not 0 <= millis < 1 << 48:
        raise ValueError(f"cannot make a delivery id for time {now!r}")
    return ID_PREFIX + _encode((millis << 80) | int.from_bytes(os.urandom(10), "big"))


def id_floor(when: float) -> str:
    """The smallest id that could have been minted at `when`."""
    millis = min(max(math.floor(when * 1000), 0), (1 << 48) - 1)
    return ID_PREFIX + _encode(millis << 80)


# Two digits per lookup: 13 table reads instead of 26 divisions.
_DIGIT_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_PAIR_SHIFTS = tuple(range(120, -1, -10))


def _encode(value: int) -> str:
    """`value` (< 2**130) as 26 Crockford base32 digits, most significant first."""
    return "".join([_DIGIT_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


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


@dataclass(frozen=True)
class Breaker:
    """A rule's circuit breaker settings (`breaker:`); every field has the documented default.

    `failures` consecutive failures open the endpoint; the first probe goes `probe` seconds
    after, each failed probe doubles the wait up to `probe_max`; an endpoint with no success for
    `disable_after` seconds (None: never) is paused; `on_gone` says what a 410 does ("pause"
    the endpoint, or "fail" the delivery). `enabled` False: the rule's attempts are not counted.
    """

    failures: int = 5
    probe: float = 30.0
    probe_max: float = 300.0
    disable_after: float | None = 86400.0
    on_gone: Literal["pause", "fail"] = "fail"
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form stored with each delivery (in its policy, as "breaker")."""
        return {
            "failures": self.failures,
            "probe": self.probe,
            "probe_max": self.probe_max,
            "disable_after": self.disable_after,
            "on_gone": self.on_gone,
            "enabled": self.enabled,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Breaker:
        """Back from to_dict (None or a field left out: its default)."""
        if not data:
            return DEFAULT_BREAKER
        return cls(**{k: v for k, v in data.items() if k in _BREAKER_FIELDS})


DEFAULT_BREAKER = Breaker()
_BREAKER_FIELDS = frozenset(Breaker.__dataclass_fields__)


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
class EndpointHealth:
    """One endpoint as `hookctl endpoints` lists it: its deliveries and how its attempts went.

    Counts of deliveries are over all time (pending, failed); attempts over the window asked for.
    """

    endpoint: str
    pending: int
    failed: int
    attempts: int  # in the window
    successes: int  # attempts in the window answered with a status the rule accepts
    p95_ms: float | None  # attempt duration, in the window
    last_success_at: float | None
    paused_since: float | None
    paused_reason: str | None
    # The circuit breaker (store/breaker.py): consecutive failures, failing (no success) since,
    # open since, and when the next probe may go (None: closed).
    failures: int = 0
    failing_since: float | None = None
    open_since: float | None = None
    next_probe_at: float | None = None

    @property
    def breaker_state(self) -> str:
        """ "closed" (deliveries go) or "open" (they wait for a probe to close it)."""
        return "closed" if self.open_since is None else "open"

    @property
    def success_rate(self) -> float | None:
        """Successful attempts / attempts in the window (None: no attempts)."""
        return self.successes / self.attempts if self.attempts else None


@dataclass(frozen=True)
class BreakerView:
    """An endpoint's breaker as a worker needs it: is it open, until when, failing since when."""

    failures: int
    failing_since: float | None
    open_since: float | None
    next_probe_at: float | None
    paused: bool


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


# --- stored events (issue 17: `fire` and `serve` keep what they read, for `plan`) ------------

EVENT_ID_PREFIX = "evt_"
EVENT_ID_PATTERN = re.compile(rf"^{EVENT_ID_PREFIX}[0-7][{_CROCKFORD}]{{25}}$")


def new_event_id(now: float) -> str:
    """A new "evt_" + ULID for a stored event: time-sortable like delivery ids."""
    return EVENT_ID_PREFIX + new_delivery_id(now).removeprefix(ID_PREFIX)


class EventIds:
    """Monotonic stored-event ids: within one millisecond each is the last one plus one, so
    events read in the same millisecond keep the order they were read in."""

    def __init__(self) -> None:
        self._last = 0

    def next(self, now: float) -> str:
        """The next id for an event received at `now`."""
        millis = math.floor(now * 1000)
        if not 0 <= millis < 1 << 48:
            raise ValueError(f"cannot make an event id for time {now!r}")
        value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
        if value >> 80 <= self._last >> 80 and self._last + 1 < 1 << 128:
            value = self._last + 1  # same (or an earlier) millisecond: just after the last
        self._last = value
        return EVENT_ID_PREFIX + _encode(value)


def event_id_floor(when: float) -> str:
    """The smallest stored-event id that could have been minted at `when`."""
    return EVENT_ID_PREFIX + id_floor(when).removeprefix(ID_PREFIX)


@dataclass
class NewEvent:
    """An event as read, to keep in the store with the deliveries it led to (same transaction).

    `id` comes from new_event_id(received_at); a delivery made for this event names it in
    NewDelivery.event_ref. `source` is where it came from: a file path, `<stdin>`, or
    `http:<source>` for `serve`.
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


# --- rate limits per endpoint (issue 15) ------------------------------------------------------

# A rule's rate binds its endpoint (every delivery to it, of any rule) for this long after the
# last slot that rule reserved there; the strictest rate seen in that time applies.
RATE_MEMORY = 3600.0


@dataclass
class Reservation:
    """Send slots `reserve_slots` handed out for one endpoint, and where its schedule stands."""

    slots: list[float]  # send times, ascending, spaced by `interval`; fewer than asked when full
    next_slot: float  # the first time not yet handed out (the schedule's end)
    interval: float  # the spacing used: the strictest rate recently named for the endpoint
    rate: str  # that rate as written in its rule, e.g. "5/s"


@dataclass
class EndpointLimit:
    """What slows an endpoint, shared by every worker: its rate and any Retry-After hold."""

    endpoint: str
    rate: str | None  # the strictest rate named for it recently (None: no rate)
    interval: float  # seconds between sends under that rate (0: none)
    next_slot: float | None  # its schedule's end: the next free send slot
    not_before: float | None  # slowed by a Retry-After: nothing is sent to it before this
    not_before_reason: str | None  # e.g. "HTTP 429, Retry-After 30s"
