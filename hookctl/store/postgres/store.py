"""PostgreSQL outbox and retry queue: the store contract, for many workers at once.

`PostgresStore` implements hookctl/store/contract.py as `SQLiteStore` does (the same records,
the same errors, the contract suite runs on both). What differs is underneath: claims are
`FOR NO KEY UPDATE SKIP LOCKED` (workers never wait on each other's claims), a batch of outcomes
is one transaction of a few statements, and a lost connection is got back with backoff and the
operation run again. Every write is safe to run twice: ids are the primary key, an attempt is
logged once per (delivery, lease token, start), and an outcome is applied only while its token
still holds the lease, so a retried batch never applies an outcome for a lease it lost.

This module holds the class's life: connecting and reconnecting, `_run` (one transaction,
retried after a lost connection or a serialization failure), settings, lease-holder
registration, the LISTEN connection, and the state it keeps (ids leased, holder registered).
Each contract method is a thin one that runs a topic module's function of the cursor in `_run`:
queue.py (enqueue, claim, complete, leases, requeue), history.py (the log), events.py (stored
events), endpoints.py (pauses, breakers, rates), migrations.py (schema and integrity).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from hookctl.errors import StoreError
from hookctl.store import holder as holders
from hookctl.store.endpoint_records import BreakerView, EndpointHealth, EndpointLimit, Reservation
from hookctl.store.event_records import NewEvent, RecordedRequest, StoredEvent
from hookctl.store.ids import event_id_floor
from hookctl.store.log_records import Delivery, DeliveryDetail, QueueLevels, Stats, Unrendered
from hookctl.store.postgres import connection, history, migrations, queue
from hookctl.store.postgres import endpoints as endpoint_state
from hookctl.store.postgres import events as stored_events
from hookctl.store.postgres.queue import CHANNEL
from hookctl.store.postgres.rows import (
    delivery_params,
    result_columns,
    text,
)
from hookctl.store.records import AttemptResult, Claim, NewDelivery

__all__ = ["CHANNEL", "PostgresStore"]

T = TypeVar("T")
BUSY_TIMEOUT = 30.0  # seconds the store thread retries a call that met another client's lock
_PURGE_CHUNK = 2000  # deleted per transaction, so purging a big log never stalls senders for long
_RETRY_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock: run the transaction again


class PostgresStore:
    """The delivery database on a PostgreSQL server: outbox, retry queue and execution log."""

    def __init__(
        self,
        url: str,
        *,
        reconnect_seconds: float = connection.RECONNECT_SECONDS,
        holder: holders.Holder | None = None,
    ) -> None:
        """Connect to `url` and apply any migrations the database lacks.

        `holder` is who this store's claims are recorded as held by (default: this process).
        It is recorded only: PostgreSQL waits out a dead holder's leases (see m002).
        """
        self.url = url
        self.masked_url = connection.masked_url(url)
        self.reconnect_seconds = reconnect_seconds
        self._holder = holder or holders.this_process()
        self._lock = threading.RLock()  # one transaction at a time on the one connection
        self._registered = False  # this holder is in lease_holders
        self._leased: set[str] = set()  # ids this store leased and has not completed/released
        self._lock_timeout_ms: int | None = None  # wait_when_busy; None: the server's setting
        self._listener: Any = None
        self._listened = False  # a LISTEN connection was had: a new one may have missed some
        self.conn: Any = connection.connect(url)
        try:
            self._run(lambda cur, retry: migrations.migrate(self.conn, self.masked_url))
        except BaseException:
            self.conn.close()
            raise

    @property
    def location(self) -> str:
        """The database as messages name it: the URL with any password masked."""
        return self.masked_url

    @property
    def busy_timeout(self) -> float:
        """How long a caller retrying a busy call (the store thread) keeps at it. A statement
        itself waits as the server's lock_timeout says unless wait_when_busy set one."""
        return BUSY_TIMEOUT

    def wait_when_busy(self, seconds: float | None) -> None:
        """How long a statement waits for another client's row or table lock before it fails
        DatabaseBusy (lock_timeout; the transaction is rolled back, so nothing of the call is
        done); None: the server's setting again. Claims never wait (SKIP LOCKED); 0 becomes
        1 ms, since PostgreSQL's 0 means "wait for ever". Kept across reconnects."""
        with self._lock:
            self._lock_timeout_ms = None if seconds is None else max(1, int(seconds * 1000))
            self._apply_settings(reset=seconds is None)

    def split_commit(
        self, method: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> tuple[T, Callable[[], None] | None]:
        """`method(*args, **kwargs)`, committed and durable as always (None: nothing is left).
        A PostgreSQL call waits on the network statement by statement, not only at COMMIT,
        and the server makes its own group commits, so there is nothing to take apart."""
        return method(*args, **kwargs), None

    def _apply_settings(self, *, reset: bool = False) -> None:
        if self._lock_timeout_ms is not None or reset:
            psycopg = connection.driver()
            setting = (
                "RESET lock_timeout"
                if self._lock_timeout_ms is None
                else f"SET lock_timeout = {self._lock_timeout_ms}"
            )
            try:
                self.conn.execute(setting)
            except psycopg.Error as exc:
                raise connection.error(self.url, exc) from exc

    def check_integrity(self) -> list[str]:
        """What the schema does not enforce and the store relies on: attempts that belong to
        no delivery (there is no foreign key), pending rows without a schedule; empty: healthy."""
        return self._run(migrations.integrity_problems)

    def close(self) -> None:
        """Close the connections (again: nothing); a holder that holds nothing any more
        leaves lease_holders."""
        with self._lock:
            if self._registered and not self._leased and not self.conn.closed:
                try:
                    with self.conn.transaction():
                        self.conn.execute(
                            "DELETE FROM lease_holders WHERE holder = %s", (self._holder.key,)
                        )
                except Exception:  # closing must not fail; a holder left behind is reaped later
                    pass
                self._registered = False
            for conn in (self.conn, self._listener):
                if conn is not None and not conn.closed:
                    conn.close()
            self._listener = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- transactions, errors, reconnects -----------------------------------------------------

    def _run(self, work: Callable[[Any, bool], T]) -> T:
        """Run `work(cursor, retry)` in one transaction; after a lost connection, reconnect with
        backoff and run it again (retry=True), until reconnect_seconds have passed."""
        with self._lock:
            return self._run_locked(work)

    def _run_locked(self, work: Callable[[Any, bool], T]) -> T:
        psycopg = connection.driver()
        deadline: float | None = None
        retry = False
        while True:
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    return work(cur, retry)
            except psycopg.Error as exc:
                if getattr(exc, "sqlstate", None) in _RETRY_SQLSTATES:
                    retry = True
                    continue
                if not connection.is_connection_lost(exc, self.conn):
                    raise connection.error(self.url, exc) from exc
                if deadline is None:
                    deadline = time.monotonic() + self.reconnect_seconds
                self.conn.close()
                self.conn = connection.reconnect(self.url, deadline=deadline)
                self._apply_settings()
                retry = True

    # --- lease holders (the same scheme as SQLite's) ------------------------------------------

    def _register(self, cur: Any, now: float) -> None:
        """Put this holder in lease_holders (once), inside the transaction that first leases."""
        if not self._registered:
            h = self._holder
            cur.execute(
                "INSERT INTO lease_holders (holder, machine, pid, started, since) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (holder) DO NOTHING",
                (h.key, h.machine, h.pid, h.started, now),
            )

    def _reap_gone(self, cur: Any, now: float) -> None:
        """Make the claims of holders on this machine whose process died due now, and forget
        those holders: their leases need not be waited out."""
        here = self._holder
        cur.execute(
            "SELECT holder, pid, started FROM lease_holders WHERE machine = %s AND holder != %s",
            (here.machine, here.key),
        )
        gone = [
            key
            for key, pid, started in cur.fetchall()
            if holders.is_gone(holders.Holder(here.machine, pid, started), here)
        ]
        if gone:
            cur.execute(
                "UPDATE deliveries SET lease_expires_at = %s WHERE status = 'pending' "
                "AND lease_holder = ANY(%s) AND lease_token IS NOT NULL "
                "AND lease_expires_at > %s",
                (now, gone, now),
            )
            cur.execute("DELETE FROM lease_holders WHERE holder = ANY(%s)", (gone,))

    # --- the queue (in queue.py) ------------------------------------------------------------

    def enqueue(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        claim_token: str | None = None,
        lease_seconds: float = 0,
        events: Sequence[NewEvent] = (),
    ) -> list[tuple[str, bool]]:
        """Durably add deliveries as pending, in one transaction; (id, False) for a duplicate.

        With claim_token they are inserted already leased to the caller, so a concurrent
        retry-loop leaves them alone while this process sends them. `events` (the events
        read, matched or not) are stored in the same transaction.
        """
        if claim_token is not None and lease_seconds <= 0:
            raise ValueError("claiming on enqueue needs lease_seconds greater than 0")
        if not deliveries and not events:
            return []
        queue.check_new(deliveries, now=now)
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        holder = self._holder.key
        rows = [
            delivery_params(d, now, claim_token, lease_until, shared, holder) for d in deliveries
        ]
        keys = [(text(d.rule), text(d.dedupe_key)) for d in deliveries]
        waiting: set[str] = set()  # ordered ones not in their turn: inserted unleased
        work = functools.partial(
            queue.enqueue,
            deliveries=deliveries,
            rows=rows,
            keys=keys,
            events=events,
            now=now,
            claim_token=claim_token,
            waiting=waiting,
            register=self._register,
        )
        results = self._run(work)
        if claim_token is not None:
            self._registered = True
            self._leased.update(i for i, inserted in results if inserted and i not in waiting)
        return results

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
        """Lease up to `limit` due deliveries to `token`, oldest due first.

        Due means next attempt at or before `due_by` (default `now`): a pass that fixes it at
        its start never retakes what it has just rescheduled. `ids` claims only those.
        """
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be greater than 0")
        if limit <= 0:
            return []
        bind: dict[str, Any] = {
            "now": now,
            "due": now if due_by is None else due_by,
            "limit": limit,
            "token": token,
            "until": now + lease_seconds,
            "holder": self._holder.key,
        }
        if ids is not None:
            bind["ids"] = list(ids)

        work = functools.partial(
            queue.claim,
            bind=bind,
            token=token,
            now=now,
            by_ids=ids is not None,
            register=self._register,
            reap=self._reap_gone,
        )
        taken = self._run(work)
        self._registered = True
        self._leased.update(c.id for c in taken)
        return taken

    def complete(self, results: Sequence[AttemptResult], *, now: float) -> list[bool]:
        """Record attempts and apply them where the lease still holds; False = lease was lost."""
        return self.complete_with_follow_ups(results, now=now)[0]

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
        """Like complete(), and in the same transaction enqueue a follow-up (an `on_failure`
        notice) for each applied result that has one, so a crash cannot lose it.

        The same transaction advances each endpoint's breaker (store/breaker.py) and pauses
        an endpoint failing too long, enqueuing its notice from `endpoint_notices`.
        Returns the applied flags and the ids of the follow-ups inserted (a duplicate is not).
        """
        follow_ups = follow_ups or {}
        endpoint_notices = endpoint_notices or {}
        queue.check_results(results)
        if not results:
            return [], set()
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        holder = self._holder.key
        columns = result_columns(results)

        work = functools.partial(
            queue.complete,
            results=results,
            columns=columns,
            now=now,
            follow_ups=follow_ups,
            endpoint_notices=endpoint_notices,
            claim_token=claim_token,
            lease_until=lease_until,
            shared=shared,
            holder=holder,
            register=self._register,
        )
        applied, inserted = self._run(work)
        self._leased.difference_update(r.delivery_id for r in results)
        if claim_token is not None and inserted:
            self._registered = True
            self._leased.update(inserted)
        return applied, inserted

    def extend_lease(self, ids: Sequence[str], *, token: str, until: float) -> list[str]:
        """Push out the lease on deliveries `token` still holds; returns those ids."""
        if not ids:
            return []
        held = self._run(functools.partial(queue.extend_lease, ids=ids, token=token, until=until))
        self._leased.difference_update(set(ids) - set(held))
        return held

    def release(self, ids: Sequence[str], *, token: str, until: float | None = None) -> int:
        """Give back claims `token` holds and has not attempted: due again, for any process
        (not before `until`, if given: postponed without spending an attempt)."""
        if not ids:
            return 0
        released = self._run(functools.partial(queue.release, ids=ids, token=token, until=until))
        self._leased.difference_update(ids)
        return released

    def due_count(self, now: float) -> int:
        """How many deliveries a claim at `now` could take."""
        return self._run(functools.partial(queue.due_count, now=now, reap=self._reap_gone))

    def wait_for_work(self, timeout: float) -> bool:
        """Block until deliveries may have become due (a NOTIFY on CHANNEL) or `timeout` passes
        (0: only take what has come); the contract's WorkSignal.

        True when woken by a notification, False on timeout. For `retry-loop --every`: called
        between passes instead of sleeping the whole interval; polling stays the backstop, since
        a notification is only a hint (deliveries rescheduled for later send none when due).
        The listening connection is separate from the store's and opened on first use; one
        opened again after the first was lost answers True, since what was notified while it
        was gone is unknown. It never takes the store's lock: it may run on a thread of its own.
        """
        psycopg = connection.driver()
        try:
            if self._listener is None or self._listener.closed or self._listener.broken:
                listener = connection.connect(self.url)
                listener.execute(f"LISTEN {CHANNEL}")
                self._listener = listener
                if self._listened:
                    return True
                self._listened = True
            woken = False
            # A timeout of 0 would still poll once; a short one keeps older psycopg happy too.
            for _ in self._listener.notifies(timeout=max(timeout, 0.001), stop_after=1):
                woken = True
            if woken:
                # Several NOTIFYs may be queued: take them all, one wake-up is enough. (After
                # the loop above: the generator holds the connection.)
                for _ in self._listener.notifies(timeout=0.001):
                    pass
            return woken
        except psycopg.Error:
            # The server went away: sleep out the wait (the next pass reconnects and reports).
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            time.sleep(timeout)
        except StoreError:
            time.sleep(timeout)
        return False

    def queue_levels(self, now: float) -> QueueLevels:
        """Pending (the status index), due now, and the oldest due time (the due index)."""
        return self._run(functools.partial(queue.levels, now=now, reap=self._reap_gone))

    def rule_counts(self) -> dict[str, dict[str, int]]:
        """Deliveries in the store by rule and status (one GROUP BY)."""
        return self._run(queue.rule_counts)

    # --- the log (in history.py; requeue in queue.py) ---------------------------------------

    def query(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        ticket: str | None = None,
        since: float | None = None,
        limit: int | None = 50,
    ) -> Iterator[Delivery]:
        """Deliveries newest first, filtered; `since` is creation time; limit None or 0 = all."""
        where, params = history.filters(status=status, rule=rule, ticket=ticket, since=since)
        return self._pages(where, params, limit or None)

    def _pages(
        self, where: list[str], params: list[Any], remaining: int | None
    ) -> Iterator[Delivery]:
        # Keyset pages, each its own short transaction: nothing stays open between yields, so
        # the caller may write to the store while iterating.
        before: str | None = None
        while remaining is None or remaining > 0:
            size = history.PAGE if remaining is None else min(history.PAGE, remaining)
            rows = self._run(functools.partial(_page, where, params, before, size))
            yield from rows
            if len(rows) < size:
                return
            before = rows[-1].id
            if remaining is not None:
                remaining -= len(rows)

    def get(self, delivery_id: str) -> DeliveryDetail | None:
        """One delivery by id or unique prefix, with its attempts in order; None if absent."""
        return self._run(lambda cur, retry: history.get(cur, delivery_id))

    def select(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
    ) -> list[str]:
        """The full ids a replay selects: by ids (or unique prefixes), or by filters."""
        return self._run(
            lambda cur, retry: history.select_ids(
                cur, ids=ids, status=status, rule=rule, since=since
            )
        )

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of `ids` (a duplicate's earlier delivery, say)."""
        return self._run(lambda cur, retry: history.statuses(cur, ids))

    def unrendered(self, ids: Sequence[str]) -> list[Unrendered]:
        """Those of `ids` whose request could not be rendered, with their rule and event."""
        return self._run(lambda cur, retry: history.unrendered(cur, ids))

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
        """Replay deliveries under the same id: pending again, due now, with a fresh schedule.

        The SQLite store's semantics exactly (see its docstring): finished ones restart their
        policy and count a replay, pending ones are made due now, a live lease is left alone,
        an unrendered one is requeued only with its request rendered anew in `rendered`.
        """
        rendered = rendered or {}
        return self._run(
            functools.partial(
                queue.requeue,
                ids=ids,
                status=status,
                rule=rule,
                since=since,
                now=now,
                rendered=rendered,
            )
        )

    def purge(self, *, older_than: float) -> int:
        """Delete finished deliveries last updated before `older_than`, with their attempts."""
        deleted = 0
        while True:
            count = self._run(
                functools.partial(history.purge_finished, older_than=older_than, limit=_PURGE_CHUNK)
            )
            deleted += count
            if count < _PURGE_CHUNK:
                return deleted

    def stats(self, *, since: float | None = None) -> Stats:
        """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
        return self._run(lambda cur, retry: history.stats(cur, since=since))

    # --- stored events (SQL in events.py) -----------------------------------------------------

    def stored_events(
        self, *, since: float | None = None, until: float | None = None
    ) -> Iterator[StoredEvent]:
        """Stored events received in [since, until), oldest first, one transaction per page."""
        after, before = stored_events.window_bounds(since, until)
        while True:
            rows = self._run(functools.partial(_event_page, after, before, stored_events.PAGE))
            yield from rows
            if len(rows) < stored_events.PAGE:
                return
            after = rows[-1].id

    def stored_event_rules(
        self, *, since: float | None = None, until: float | None = None
    ) -> set[str]:
        """The rules with a delivery on record for an event stored in [since, until)."""
        after, before = stored_events.window_bounds(since, until)
        return self._run(
            lambda cur, retry: stored_events.rule_names(cur, after=after, before=before)
        )

    def stored_event(self, event_ref: str) -> StoredEvent | None:
        """One stored event by its id ("evt_..."), or None."""
        return self._run(lambda cur, retry: stored_events.get(cur, event_ref))

    def event_of(self, delivery_id: str) -> StoredEvent | None:
        """The stored event a delivery was made for; None if it was not kept (or is purged)."""

        def work(cur: Any, retry: bool) -> StoredEvent | None:
            ref = stored_events.ref_of(cur, delivery_id)
            return stored_events.get(cur, ref) if ref else None

        return self._run(work)

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
        """Stored events newest first, each filter an exact match, at most `limit`."""
        filters = {"source": source, "event_name": event_name, "ticket": ticket}
        filters["event_id"] = event_id
        return self._run(
            lambda cur, retry: stored_events.search(cur, filters=filters, since=since, limit=limit)
        )

    def event_deliveries(self, event_ref: str, *, limit: int = 500) -> list[Delivery]:
        """The deliveries made for one stored event, newest first, at most `limit`."""
        return self._run(
            lambda cur, retry: stored_events.deliveries_of(cur, event_ref, limit=limit)
        )

    def recorded_requests(self, ids: Sequence[str]) -> dict[str, RecordedRequest]:
        """The stored request of each delivery in `ids` still on record, by id."""
        return self._run(lambda cur, retry: stored_events.requests(cur, ids))

    def purge_events(self, *, older_than: float) -> int:
        """Delete stored events received before `older_than`, a chunk per transaction."""
        deleted = 0
        before = event_id_floor(older_than)
        while True:
            count = len(
                self._run(
                    lambda cur, retry: stored_events.purge_ids(
                        cur, before=before, limit=_PURGE_CHUNK
                    )
                )
            )
            deleted += count
            if count < _PURGE_CHUNK:
                return deleted

    def restore_events(self, events: Sequence[StoredEvent]) -> int:
        """Store events read from another store as they were; an id already stored is kept."""
        if not events:
            return 0
        return self._run(lambda cur, retry: stored_events.restore(cur, events))

    # --- endpoints (SQL in endpoints.py) ------------------------------------------------------

    def pause_endpoint(self, endpoint: str, *, now: float, reason: str | None = None) -> bool:
        """Hold `endpoint`'s deliveries from `now` (claims skip them); False if already paused."""
        return self._run(
            lambda cur, retry: endpoint_state.pause(cur, endpoint, now=now, reason=reason)
        )

    def resume_endpoint(self, endpoint: str, *, now: float) -> bool:
        """Release a paused endpoint's deliveries; False if it was not paused."""

        def work(cur: Any, retry: bool) -> bool:
            resumed = endpoint_state.resume(cur, endpoint, now=now)
            if resumed:
                cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return resumed

        return self._run(work)

    def paused_endpoints(self) -> dict[str, tuple[float, str | None]]:
        """Every paused endpoint: (since, reason)."""
        return self._run(lambda cur, retry: endpoint_state.paused(cur))

    def breaker_states(self) -> dict[str, BreakerView]:
        """Every endpoint whose breaker is failing or open, by name."""
        return self._run(lambda cur, retry: endpoint_state.views(cur))

    def endpoint_health(self, *, since: float) -> list[EndpointHealth]:
        """Every endpoint with deliveries or state, by name; attempt figures since `since`."""
        return self._run(lambda cur, retry: endpoint_state.health(cur, since=since))

    # --- rate limits (SQL in endpoints.py) ------------------------------------------------------

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
        """Take up to `count` send slots for `endpoint` within `horizon` (the endpoint's row is
        locked for the transaction, so concurrent workers take turns). Run again after a lost
        connection, a committed first run's slots are lost: fewer sends, never closer ones."""
        return self._run(
            lambda cur, retry: endpoint_state.reserve(
                cur,
                endpoint,
                rule=rule,
                rate=rate,
                interval=interval,
                count=count,
                now=now,
                horizon=horizon,
            )
        )

    def slow_endpoint(self, endpoint: str, *, until: float, now: float, reason: str) -> None:
        """Hold `endpoint` until `until` (a Retry-After): its schedule and claims start there."""
        self._run(
            lambda cur, retry: endpoint_state.slow(
                cur, endpoint, until=until, now=now, reason=reason
            )
        )

    def endpoint_limits(self, *, now: float) -> dict[str, EndpointLimit]:
        """Endpoints with a rate recorded within RATE_MEMORY or a Retry-After hold past `now`."""
        return self._run(lambda cur, retry: endpoint_state.limits(cur, now=now))


def _page(
    where: list[str], params: list[Any], before: str | None, size: int, cur: Any, retry: bool
) -> list[Delivery]:
    return history.page(cur, where, params, before, size)


def _event_page(
    after: str, before: str | None, size: int, cur: Any, retry: bool
) -> list[StoredEvent]:
    return stored_events.page(cur, after=after, before=before, limit=size)
