"""What a pipeline run tells whoever listens: typed events, and the seam they go out through.

The pipeline knows nothing of terminals, progress bars, metrics or endpoint health: it calls
`observer.notify(event)` with one of the dataclasses below, and each subscriber (cli/output.py's
printer and cli/progress.py's bar today; a Prometheus exporter or a circuit breaker later) takes the
events it cares about and ignores the rest. `Fanout` hands each event to several observers.

Cheap on the hot path: an event is one small slotted dataclass, made once per attempt, and
`notify` is a plain method call per subscriber. Events are read-only by convention, not
frozen: a frozen dataclass's __init__ costs about four times as much (measured). A subscriber must not block or raise: it runs on
the event loop, between attempts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from hookctl.delivery.reports import Report
from hookctl.events.event import BadEvent, Event


@dataclass(slots=True)
class Started:
    """The service loop runs: SIGINT/SIGTERM now stop it cleanly. `every`: seconds between
    passes (None: one pass); `pid`: whom to signal."""

    every: float | None
    pid: int


@dataclass(slots=True)
class Due:
    """A one-off pass over the queue begins, with `count` deliveries due (a progress bar's total)."""

    count: int


@dataclass(slots=True)
class Claimed:
    """Deliveries leased to this worker: `count` claimed from the queue (or enqueued by fire)."""

    count: int


@dataclass(slots=True)
class AttemptStarted:
    """A request is about to go on the wire (its lease confirmed, its slot taken)."""

    delivery_id: str
    rule: str
    host: str  # scheme://host:port, what per-host limits and endpoint health count by


@dataclass(slots=True)
class AttemptFinished:
    """A request's HTTP exchange ended: its status (None: no answer) and how long it took."""

    delivery_id: str
    rule: str
    host: str
    status_code: int | None
    error: str | None
    duration_ms: float  # the HTTP exchange's own duration, not time spent waiting on the store


@dataclass(slots=True)
class Reported:
    """A delivery's outcome, on record (or a duplicate, a dry run): what `fire` prints a line for."""

    report: Report


@dataclass(slots=True)
class FailedForGood:
    """A delivery failed for good (also sent as a Reported)."""

    report: Report


@dataclass(slots=True)
class Held:
    """A delivery waits with nothing sent, for a setting this process lacks (also a Reported)."""

    report: Report


@dataclass(slots=True)
class Flushed:
    """A batch of outcomes written to the store in one transaction."""

    count: int
    seconds: float


@dataclass(slots=True)
class HandedBack:
    """Claims released unattempted when the run was stopped: due again, for any worker."""

    count: int


@dataclass(slots=True)
class LeaseLost:
    """Claims whose lease ran out and another worker took: this one drops them unsent."""

    count: int


@dataclass(slots=True)
class StoreRetry:
    """A store write failed and will be tried again (the outcomes wait in memory)."""

    error: str
    attempt: int


@dataclass(slots=True)
class Committed:
    """A batch of fire's events is in the store: `serve` answers their requests (202) now.

    `deliveries`: each one stored for them, as (the event's line, delivery id, inserted);
    inserted False is a duplicate, found already stored for that event.
    """

    events: list[Event | BadEvent]
    deliveries: list[tuple[int | None, str, bool]]


@dataclass(slots=True)
class Unreadable:
    """An event that could not be read (bad JSON, not an object); every other one goes on."""

    bad: BadEvent


PipelineEvent = (
    Started
    | Due
    | Claimed
    | AttemptStarted
    | AttemptFinished
    | Reported
    | FailedForGood
    | Held
    | Flushed
    | HandedBack
    | LeaseLost
    | StoreRetry
    | Committed
    | Unreadable
)


class Observer(Protocol):
    """Anything that wants to hear what a pipeline does."""

    def notify(self, event: PipelineEvent) -> None:
        """Take one event; ignore the kinds it does not care about. Must not block."""


class Fanout:
    """One observer that hands each event to several, in the order given."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers = tuple(observers)

    def notify(self, event: PipelineEvent) -> None:
        """Pass `event` to every subscriber."""
        for observer in self._observers:
            observer.notify(event)


class Nobody:
    """The observer that listens to nothing (a pipeline run for its summary alone)."""

    def notify(self, event: PipelineEvent) -> None:
        """Drop `event`."""
