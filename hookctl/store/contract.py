"""The store as a contract: what the pipeline and the log need from any backend.

A backend (store/sqlite/ and store/postgres/, both opened by open_store) implements `Store` = `Queue` + `Log`, returns the
dataclasses of records.py (and log_, endpoint_, event_records.py) and raises the errors of errors.py, never its driver's. What every
backend must guarantee (tests/contract/ checks each on every backend):

- Durability: once `enqueue` or `complete` returns, what it wrote survives a crash of the
  process (and of the machine: SQLite's synchronous=FULL; PostgreSQL's fsync and
  synchronous_commit, its defaults).
- Dedupe: a (rule, dedupe_key) pair is stored once; a second enqueue returns the first id.
- Ordering: `claim` hands out due deliveries oldest due first (by next attempt time).
- Leases and fencing: a claim leases each delivery to a token until `lease_seconds` from
  now; nobody else can claim it until then (or until its holder, on this machine, is gone);
  `complete` applies an outcome only while its token still holds the lease (False
  otherwise), though the attempt itself is always logged: the request did happen.
- Attempts: `AttemptResult(sent=False)` is no attempt: not logged, not counted.
- Follow-ups: an on_failure notice is enqueued in the same transaction as the failure, once.
- Replays keep the id; purge removes only finished deliveries.
- Endpoints: every delivery belongs to the endpoint its URL names (store/endpoint.py); a
  paused endpoint's deliveries are not claimed (nor counted due), keep their attempts and
  schedule, and are claimable again once it is resumed, by every worker on the store.
- Breaker (store/breaker.py): the results' `health` advance their endpoint's breaker in the
  transaction that records them. An open endpoint's deliveries are not claimed, except one
  probe (Claim.probe) once its probe is due, across every worker; a `free` attempt is logged
  but spends neither retries nor retry window; closing gives pending deliveries back the
  window they spent while it was open. An endpoint auto-disabled is paused, and its notice
  enqueued, by exactly one transaction.
- Optional: a backend that can signal work (`WorkSignal`, PostgreSQL's LISTEN/NOTIFY) wakes a
  waiting worker whenever deliveries are made due for anyone; without it workers poll.
- Order per key: a delivery with an `order_key` takes the next place in its (rule, order_key)
  sequence at enqueue (strict within a batch and across clients). It is claimed only in its
  turn: while another of its key is pending before it (leased or not), or one of its key is in
  flight, it is not claimed (nor counted due). One that failed for good does not block. A
  replay keeps its place; a request rendered anew by a replay with a key it lacked takes the
  next place. Deliveries without a key are unaffected.
- Rate limits: `reserve_slots` hands out send slots for an endpoint atomically across every
  client, never two closer than the strictest interval any rule named for it within
  RATE_MEMORY; `slow_endpoint` (a Retry-After) pushes its schedule. Claims (and due counts)
  skip an endpoint whose schedule has no slot within the horizon of the last reservation, or
  that is slowed: it waits its turn unclaimed, attempts untouched.

Calls are synchronous and each is one transaction; a store serializes its own calls, so a
caller may run them in a worker thread to keep them off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from hookctl.store.endpoint_records import BreakerView, EndpointHealth, EndpointLimit, Reservation
from hookctl.store.event_records import NewEvent, RecordedRequest, StoredEvent
from hookctl.store.log_records import Delivery, DeliveryDetail, QueueLevels, Stats, Unrendered
from hookctl.store.records import AttemptResult, Claim, NewDelivery

T = TypeVar("T")


class Queue(Protocol):
    """What the pipeline needs: the outbox and the retry queue."""

    def enqueue(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        claim_token: str | None = None,
        lease_seconds: float = 0,
        events: Sequence[NewEvent] = (),
    ) -> list[tuple[str, bool]]:
        """Durably add deliveries as pending; (id, inserted) each, the earlier id for a
        duplicate. With claim_token they are inserted already leased to the caller, except an
        ordered one (order_key) that is not its key's turn: that one is left unleased, for a
        later claim (`extend_lease` says which the caller holds). `events` (the events they
        came from, matched or not) are stored in the same transaction."""
        ...

    def claim(
        self,
        *,
        now: float,
        limit: int,
        lease_seconds: float,
        token: str,
        due_by: float | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[Claim]:
        """Lease up to `limit` deliveries due by `due_by` (default `now`), oldest due first."""
        ...

    def complete(self, results: Sequence[AttemptResult], *, now: float) -> list[bool]:
        """Record outcomes; each applied only while its token holds the lease (else False)."""
        ...

    def complete_with_follow_ups(
        self,
        results: Sequence[AttemptResult],
        *,
        now: float,
        follow_ups: Mapping[str, NewDelivery] | None = None,
        claim_token: str | None = None,
        lease_seconds: float = 0,
        endpoint_notices: Mapping[str, NewDelivery | None] | None = None,
    ) -> tuple[list[bool], set[str]]:
        """complete(), and enqueue each applied result's follow-up in the same transaction;
        returns the applied flags and the ids of the follow-ups inserted.

        `endpoint_notices`: the endpoints this batch may auto-disable (pause as failing too
        long) and the notice each one's pause enqueues (None: none); one not named waits."""
        ...

    def extend_lease(self, ids: Sequence[str], *, token: str, until: float) -> list[str]:
        """Push out the leases `token` still holds to `until`; returns the ids it holds."""
        ...

    def release(self, ids: Sequence[str], *, token: str, until: float | None = None) -> int:
        """Hand back unattempted claims `token` holds: due again for anyone (at `until`, if
        given and later than when they were due: postponed, no attempt spent); how many."""
        ...

    def due_count(self, now: float) -> int:
        """How many deliveries a claim at `now` could take."""
        ...

    def queue_levels(self, now: float) -> QueueLevels:
        """Pending, due now, and when the oldest pending delivery due by `now` fell due;
        from indexes, never a walk over the deliveries (a scrape's cost stays flat)."""
        ...

    def rule_counts(self) -> dict[str, dict[str, int]]:
        """Deliveries in the store by rule and status (every status present, 0 if none)."""
        ...

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of `ids` that exists."""
        ...


class Log(Protocol):
    """What `log`, `replay`, `purge` and `stats` need: reading and tending the history."""

    def query(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        ticket: str | None = None,
        since: float | None = None,
        limit: int | None = 50,
    ) -> Iterator[Delivery]:
        """Deliveries newest first, filtered (`since` is creation time); limit None = all."""
        ...

    def get(self, delivery_id: str) -> DeliveryDetail | None:
        """One delivery by id or unique prefix, with its attempts; None if there is none.
        AmbiguousId when a prefix matches several."""
        ...

    def select(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
    ) -> list[str]:
        """Full ids, sorted: of `ids` (or unique prefixes; UnknownDelivery for one that
        matches nothing), or by filters; BadSelection for both or neither."""
        ...

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of `ids` that exists."""
        ...

    def unrendered(self, ids: Sequence[str]) -> list[Unrendered]:
        """Those of `ids` whose request could not be rendered, with their rule and event."""
        ...

    def requeue(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
        now: float,
        rendered: Mapping[str, NewDelivery] | None = None,
    ) -> list[str]:
        """Replay under the same ids: pending, due `now`; unrendered ones only with their
        request in `rendered`. Returns the ids requeued."""
        ...

    def purge(self, *, older_than: float) -> int:
        """Delete finished deliveries last updated before `older_than`, with their attempts."""
        ...

    def stats(self, *, since: float | None = None) -> Stats:
        """Counts, latency percentiles, slowest and failing URLs for deliveries since `since`."""
        ...


class Events(Protocol):
    """The stored events `fire` and `serve` keep (written with enqueue's `events=`), for `plan`."""

    def stored_events(
        self, *, since: float | None = None, until: float | None = None
    ) -> Iterator[StoredEvent]:
        """Stored events received in [since, until), oldest first."""
        ...

    def stored_event_rules(
        self, *, since: float | None = None, until: float | None = None
    ) -> set[str]:
        """The rules with a delivery on record for an event stored in [since, until)."""
        ...

    def stored_event(self, event_ref: str) -> StoredEvent | None:
        """One stored event by its id ("evt_..."), or None."""
        ...

    def event_of(self, delivery_id: str) -> StoredEvent | None:
        """The stored event a delivery was made for; None if not kept (or purged)."""
        ...

    def find_events(
        self,
        *,
        source: str | None = None,
        event_name: str | None = None,
        ticket: str | None = None,
        event_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[StoredEvent]:
        """Stored events newest first, at most `limit`: each filter given is an exact match,
        `since` a time of arrival. An index seek per filter, never a walk over every event."""
        ...

    def event_deliveries(self, event_ref: str, *, limit: int = 500) -> list[Delivery]:
        """Every delivery on record made for one stored event (its `event_ref`), newest
        first, at most `limit`: those of its first firing and of any firing again."""
        ...

    def recorded_requests(self, ids: Sequence[str]) -> dict[str, RecordedRequest]:
        """The stored request of each delivery in `ids` still on record, by id."""
        ...

    def purge_events(self, *, older_than: float) -> int:
        """Delete stored events received before `older_than`."""
        ...

    def restore_events(self, events: Sequence[StoredEvent]) -> int:
        """Store events read from another store (`db copy`) as they were: id, times, source,
        size, truncation and the map of their deliveries kept; an id already stored is left
        alone. How many were added."""
        ...


class Endpoints(Protocol):
    """Per-endpoint state every worker shares (pause today), and the health `endpoints` lists."""

    def pause_endpoint(self, endpoint: str, *, now: float, reason: str | None = None) -> bool:
        """Hold `endpoint`'s deliveries (claims skip them) from `now`; False if already paused.
        `endpoint` is a canonical name (store/endpoint.py); it need not have deliveries yet."""
        ...

    def resume_endpoint(self, endpoint: str, *, now: float) -> bool:
        """Release a paused endpoint: its due deliveries are claimable again; False if not paused."""
        ...

    def paused_endpoints(self) -> dict[str, tuple[float, str | None]]:
        """Every paused endpoint: (since, reason)."""
        ...

    def breaker_states(self) -> dict[str, BreakerView]:
        """Every endpoint whose breaker is failing or open (store/breaker.py), by name."""
        ...

    def endpoint_health(self, *, since: float) -> list[EndpointHealth]:
        """Every endpoint with deliveries or state, by name; attempt figures since `since`."""
        ...

    def reserve_slots(
        self,
        endpoint: str,
        *,
        rule: str | None,
        rate: str,
        interval: float,
        count: int,
        now: float,
        horizon: float,
    ) -> Reservation:
        """Atomically take up to `count` send slots for `endpoint` within `horizon` seconds of
        `now`: the first at the schedule's end (or now, or its not-before), each next one
        `interval` later, where the interval is the largest of `rule`'s (recorded as its rate
        for the endpoint, replacing what it named before; None records nothing: a delivery
        whose rule names no rate follows the others') and every other rule's recorded within
        RATE_MEMORY. Claims skip the endpoint until its schedule's end is within `horizon`."""
        ...

    def slow_endpoint(self, endpoint: str, *, until: float, now: float, reason: str) -> None:
        """Nothing goes to `endpoint` before `until` (a Retry-After): its schedule and claims
        start there (a later hold already set stays)."""
        ...

    def endpoint_limits(self, *, now: float) -> dict[str, EndpointLimit]:
        """Every endpoint with a rate recorded within RATE_MEMORY or a hold past `now`."""
        ...


@runtime_checkable
class WorkSignal(Protocol):
    """An optional capability: a backend that can tell a waiting worker that deliveries may
    have become due (PostgreSQL: LISTEN/NOTIFY on enqueue, replay, release and resume).
    `retry-loop --every` waits on it between passes; on a backend without it (SQLite) it only
    polls. Checked with isinstance(store, WorkSignal)."""

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to `timeout` seconds (0: do not wait) until another client (or this one)
        may have made deliveries due; True if so. The first call starts listening; a signal
        that comes between calls is kept for the next. A hint only: True may find nothing due,
        and work made due otherwise (a retry's time coming) sends no signal, hence polling.
        It waits on a connection of its own, so it may run on a thread beside the store's calls."""
        ...


class Store(Queue, Log, Events, Endpoints, Protocol):
    """A whole backend: the queue and the log over one database, opened by open_store()."""

    @property
    def location(self) -> str:
        """The database as messages name it (a path; a URL with any password masked)."""
        ...

    @property
    def busy_timeout(self) -> float:
        """Seconds a call waits for another client's lock by default before DatabaseBusy."""
        ...

    def wait_when_busy(self, seconds: float | None) -> None:
        """How long a call waits for another client's lock before it raises DatabaseBusy
        (0: at once, with nothing of the call done; None: the backend's default again). The
        pipeline's store thread sets 0 so a busy database moves its calls off the event loop
        instead of stalling it."""
        ...

    def split_commit(
        self, method: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> tuple[T, Callable[[], None] | None]:
        """`method(*args, **kwargs)`, one of this store's, committed, with what makes it
        durable left for later when the backend gains by it: (the result, the call that
        makes every write committed so far durable, to be made on any thread before the
        result counts; None if nothing is left to do). Other calls may run before it is
        made. A failed call raises StoreError: the write is visible but not known to be on
        disk. SQLite: its commits skip their fsync and the returned call makes one (group
        commit); the store thread makes it off the event loop."""
        ...

    def check_integrity(self) -> list[str]:
        """What the backend's own consistency checks find wrong (empty: healthy)."""
        ...

    def close(self) -> None:
        """Release the connection; the store is not used after this."""
        ...

    def __enter__(self) -> Store: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
