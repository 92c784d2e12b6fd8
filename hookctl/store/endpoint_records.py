"""What the store keeps per endpoint: circuit breaker settings and state, health, rate limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


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
