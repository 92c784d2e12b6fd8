"""SQLite outbox and retry queue: enqueue, claim with a lease, complete, release, requeue, purge.

`SQLiteStore` implements the store contract (hookctl/store/contract.py) over one file; behind
it, database.py opens the file, migrations.py builds the schema, rows.py turns deliveries into
rows and back, and history.py holds the log's read queries. Several hookctl processes share
one file: every write is a `BEGIN IMMEDIATE` transaction, claims hand out a lease token, and a
result is applied only while its token still holds the lease. Every sqlite3 error leaves as a
StoreError (hookctl/store/errors.py), one line naming the file and what to do.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from hookctl.store import holder as holders
from hookctl.store.endpoint_records import BreakerView, EndpointHealth, EndpointLimit, Reservation
from hookctl.store.event_records import NewEvent, RecordedRequest, StoredEvent
from hookctl.store.ids import ID_CLOCK_SLACK, ID_PATTERN, event_id_floor, id_floor, new_delivery_id
from hookctl.store.log_records import Delivery, DeliveryDetail, QueueLevels, Stats, Unrendered
from hookctl.store.records import STATUSES, AttemptResult, Claim, NewDelivery
from hookctl.store.sqlite import database, history, ordering, queue
from hookctl.store.sqlite import endpoints as endpoint_state
from hookctl.store.sqlite import events as stored_events
from hookctl.store.sqlite.rows import (
    APPLY_RESULT,
    CLAIM_COLUMNS,
    DUE,
    INSERT_ATTEMPT,
    INSERT_DELIVERY,
    INSERT_DELIVERY_ONCE,
    READY,
    REPLACE_REQUEST,
    delivery_row,
    dicts,
    dumps,
    request_columns,
)

# Construct a store with hookctl.store.open_store, never by class; the contract it implements
# is hookctl.store.contract.Store (not imported here: a `retry-loop` with nothing due skips it).
__all__ = [
    "STATUSES",
    "AttemptResult",
    "Claim",
    "NewDelivery",
    "SQLiteStore",
    "new_delivery_id",
]

_PAGE = history.PAGE
_PURGE_CHUNK = 2000  # deleted per transaction, so purging a big log never stalls senders for long
_T = TypeVar("_T")


def _locked(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a store method under the store's lock, its sqlite3 errors as StoreErrors."""

    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> _T:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise database.error(self.path, exc) from exc

    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper


class SQLiteStore:
    """The delivery database: an outbox, a retry queue and an execution log in one SQLite file.

    Calls are serialized by a lock, so the store may be used from a worker thread (one call
    at a time runs; each is one transaction).
    """

    def __init__(self, path: str | Path, *, holder: holders.Holder | None = None) -> None:
        """Open (creating if needed) and migrate the database at `path`.

        `holder` is who this store's claims are recorded as held by (default: this process).
        """
        self.path = Path(path)
        self._lock = threading.RLock()
        self._holder = holder or holders.this_process()
        self._registered = False  # this holder is in lease_holders
        self._leased: set[str] = set()  # ids this store leased and has not completed/released
        self._closed = False
        self._conn = database.connect(self.path)
        self._wrote = False  # a write was committed inside split_commit

    @property
    def location(self) -> str:
        """The database, as messages name it."""
        return str(self.path)

    @property
    def busy_timeout(self) -> float:
        """Seconds a call waits for another process's write lock by default."""
        return database.BUSY_TIMEOUT

    def wait_when_busy(self, seconds: float | None) -> None:
        """How long a call waits for another process's write lock before it fails busy
        (None: database.BUSY_TIMEOUT); 0 fails at once, and nothing of the call is done."""
        wait = database.BUSY_TIMEOUT if seconds is None else seconds
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")

    def close(self) -> None:
        """Close the connection; a holder that holds nothing any more leaves lease_holders."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._registered and not self._leased:
                    with self._write() as conn:
                        conn.execute(
                            "DELETE FROM lease_holders WHERE holder = ?", (self._holder.key,)
                        )
            except Exception:  # closing must not fail; a holder left behind is reaped later
                pass
            finally:
                self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front, waiting if busy."""
        # Operational errors (busy past the timeout, disk full, read-only file) become a
        # StoreError the CLI can report; the sqlite3 error stays chained for --debug.
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
                self._wrote = True
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise database.error(self.path, exc) from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one snapshot."""
        try:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise database.error(self.path, exc) from exc

    def split_commit(
        self, method: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> tuple[_T, Callable[[], None] | None]:
        """`method(*args, **kwargs)` (this store's) committed without its fsync, and the fsync.

        Returns the result and the call that makes it durable (None: nothing was written).
        The write is committed, and seen by every client, when this returns; the returned
        call fsyncs the WAL, so that it survives a power loss too, on any thread, while other
        calls go on. That is synchronous=FULL's guarantee, taken apart: in WAL mode FULL is
        NORMAL plus one fsync of the WAL after each commit (sqlite.org/pragma.html#pragma_
        synchronous); one fsync made after several commits covers them all (group commit).
        A checkpoint in NORMAL mode syncs the WAL before it copies it, so nothing committed
        is ever left unsynced by one. A failed fsync raises StoreError: the write is in the
        database but not known to be on the disk.
        """
        with self._lock:
            self._wrote = False
            self._conn.execute("PRAGMA synchronous = NORMAL")
            try:
                result = method(*args, **kwargs)
            finally:
                self._conn.execute("PRAGMA synchronous = FULL")
            if not self._wrote:
                return result, None
            return result, self._sync_wal

    def _sync_wal(self) -> None:
        """fsync the WAL file: every write committed before this call is then on the disk."""
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            # Removed by the last connection's close, after a checkpoint that synced it all.
            return
        except OSError as exc:
            raise database.sync_error(self.path, exc) from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise database.sync_error(self.path, exc) from exc
        finally:
            os.close(fd)

    def _register(self, conn: sqlite3.Connection, now: float) -> None:
        """Put this holder in lease_holders (once), inside the transaction that first leases."""
        if not self._registered:
            h = self._holder
            conn.execute(
                "INSERT OR IGNORE INTO lease_holders (holder, machine, pid, started, since) "
                "VALUES (?, ?, ?, ?, ?)",
                (h.key, h.machine, h.pid, h.started, now),
            )

    def _gone_holders(self, conn: sqlite3.Connection) -> list[str]:
        """Holders on this machine whose process has died (their leases need not be waited out)."""
        here = self._holder
        gone = []
        for key, pid, started in conn.execute(
            "SELECT holder, pid, started FROM lease_holders WHERE machine = ? AND holder != ?",
            (here.machine, here.key),
        ):
            if holders.is_gone(holders.Holder(here.machine, pid, started), here):
                gone.append(key)
        return gone

    def _reap(self, conn: sqlite3.Connection, gone: Sequence[str], now: float) -> None:
        """Make the claims of dead holders due now, and forget the holders (in a write)."""
        for key in gone:
            conn.execute(queue.EXPIRE_HOLDER, {"holder": key, "now": now})
            conn.execute("DELETE FROM lease_holders WHERE holder = ?", (key,))

    @_locked
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
        retry-loop leaves them alone while this process sends them. `events` are the events
        read (matched or not) to keep, in the same transaction: a delivery names its event
        in `event_ref`.
        """
        if claim_token is not None and lease_seconds <= 0:
            raise ValueError("claiming on enqueue needs lease_seconds greater than 0")
        if not deliveries and not events:
            return []
        lowest, beyond = id_floor(now - ID_CLOCK_SLACK), id_floor(now + ID_CLOCK_SLACK + 0.001)
        for d in deliveries:
            if not ID_PATTERN.match(d.id):
                raise ValueError(f"delivery id {d.id!r} was not made by new_delivery_id()")
            if not lowest <= d.id < beyond:
                raise ValueError(f"delivery id {d.id!r} was minted too far from now={now!r}")
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        # Encoded before the transaction, so the write lock is held only for the inserts.
        holder = self._holder.key
        rows = [delivery_row(d, now, claim_token, lease_until, shared, holder) for d in deliveries]
        event_rows = [stored_events.encode(e) for e in events]
        results: list[tuple[str, bool]] = []
        new_rows = []
        with self._write() as conn:
            if claim_token is not None:
                self._register(conn, now)
            seen = queue.existing_dedupe(conn, deliveries)
            for d, row in zip(deliveries, rows, strict=True):
                key = (d.rule, d.dedupe_key)
                if d.dedupe_key is not None:
                    if key in seen:
                        results.append((seen[key], False))
                        continue
                    seen[key] = d.id
                results.append((d.id, True))
                new_rows.append(row)
            conn.executemany(INSERT_DELIVERY, new_rows)
            keyed = ordering.keyed(
                (i, d)
                for d, (i, inserted) in zip(deliveries, results, strict=True)
                if inserted and d.order_key is not None
            )
            waiting = (
                ordering.place(conn, keyed, now=now, leased=claim_token is not None)
                if keyed
                else set()
            )
            if event_rows:
                stored_events.insert(conn, event_rows, deliveries, results)
        if claim_token is not None:
            self._registered = True
            self._leased.update(i for i, inserted in results if inserted and i not in waiting)
        return results

    @_locked
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
        its start never retakes what it has just rescheduled. `ids` claims only those. The
        claims of a holder on this machine whose process is gone are due at once: their
        leases are not waited out.
        """
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be greater than 0")
        if limit <= 0:
            return []
        bind: dict[str, Any] = {"now": now, "due": now if due_by is None else due_by}
        with self._write() as conn:
            self._register(conn, now)
            gone = self._gone_holders(conn)
            if gone:
                self._reap(conn, gone, now)
            probes: list[str] = []
            if ids is None:
                # An open endpoint's one probe first (its breaker, store/breaker.py).
                probes = endpoint_state.take_probes(
                    conn, now=now, due=bind["due"], limit=limit, token=token,
                    until=now + lease_seconds,
                )  # fmt: skip
                rows = []
                for probe in probes:
                    rows += dicts(
                        conn.execute(
                            f"SELECT {CLAIM_COLUMNS} FROM deliveries WHERE id = ?", (probe,)
                        )
                    )
                sql = f"SELECT {CLAIM_COLUMNS} FROM {DUE} ORDER BY next_attempt_at LIMIT :limit"
                if limit > len(rows):
                    rows += dicts(conn.execute(sql, {**bind, "limit": limit - len(rows)}))
            else:
                rows = []
                for start in range(0, len(ids), _PAGE):
                    chunk = {f"id{k}": i for k, i in enumerate(ids[start : start + _PAGE])}
                    sql = (
                        f"SELECT {CLAIM_COLUMNS} FROM deliveries WHERE id IN "
                        f"({', '.join(':' + k for k in chunk)}) AND {READY} LIMIT :limit"
                    )
                    rows += dicts(conn.execute(sql, {**bind, **chunk, "limit": limit - len(rows)}))
                    if len(rows) >= limit:
                        break
            conn.executemany(
                "UPDATE deliveries SET lease_token = ?, lease_expires_at = ?, fence = fence + 1, "
                "lease_holder = ? WHERE id = ?",
                [(token, now + lease_seconds, self._holder.key, row["id"]) for row in rows],
            )
        self._registered = True
        self._leased.update(row["id"] for row in rows)
        return [Claim(token=token, **row, probe=row["id"] in probes) for row in rows]

    def complete(self, results: Sequence[AttemptResult], *, now: float) -> list[bool]:
        """Record attempts and apply them where the lease still holds; False = lease was lost."""
        return self.complete_with_follow_ups(results, now=now)[0]

    @_locked
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
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        params = []
        for r in results:
            if r.status not in STATUSES:
                raise ValueError(f"unknown delivery status {r.status!r}")
            if r.status == "pending" and r.next_attempt_at is None:
                raise ValueError(f"delivery {r.delivery_id} stays pending but has no next attempt")
            params.append(
                {
                    "id": r.delivery_id,
                    "token": r.token,
                    "started_at": r.started_at,
                    "duration_ms": r.duration_ms,
                    "status_code": r.status_code,
                    "error": r.error,
                    "response_headers": dumps(r.response_headers),
                    "response_body": r.response_body,
                    "status": r.status,
                    "next_attempt_at": r.next_attempt_at if r.status == "pending" else None,
                    "now": now,
                    "sent": int(r.sent),
                    "free": int(r.sent and r.free),
                }
            )
        if not params:
            return [], set()
        inserted: set[str] = set()
        holder = self._holder.key
        with self._write() as conn:
            if claim_token is not None and (follow_ups or endpoint_notices):
                self._register(conn, now)
            conn.executemany(INSERT_ATTEMPT, params)
            # One statement per row: executemany cannot say which rows the fence rejected.
            applied = [conn.execute(APPLY_RESULT, p).rowcount == 1 for p in params]
            # A finished ordered delivery lets the next of its key go (ordering.py).
            ordering.unpark_next(
                conn,
                [
                    str(p["id"])
                    for p, ok in zip(params, applied, strict=True)
                    if ok and p["status"] != "pending"
                ],
            )
            for p, ok in zip(params, applied, strict=True):
                follow = follow_ups.get(str(p["id"])) if ok else None
                if follow is None:
                    continue
                row = delivery_row(follow, now, claim_token, lease_until, shared, holder)
                if conn.execute(INSERT_DELIVERY_ONCE, row).rowcount == 1:
                    inserted.add(follow.id)

            def disable(endpoint: str) -> bool:
                # Called once, in the transaction that auto-pauses the endpoint: its notice.
                if endpoint not in endpoint_notices:
                    return False
                notice = endpoint_notices[endpoint]
                if notice is not None:
                    row = delivery_row(notice, now, claim_token, lease_until, shared, holder)
                    if conn.execute(INSERT_DELIVERY_ONCE, row).rowcount == 1:
                        inserted.add(notice.id)
                return True

            endpoint_state.record_outcomes(conn, results, now=now, disable=disable)
        self._leased.difference_update(r.delivery_id for r in results)
        if claim_token is not None and inserted:
            self._registered = True
            self._leased.update(inserted)
        return applied, inserted

    @_locked
    def extend_lease(self, ids: Sequence[str], *, token: str, until: float) -> list[str]:
        """Push out the lease on deliveries `token` still holds; returns those ids."""
        held = []
        with self._write() as conn:
            for delivery_id in ids:
                cursor = conn.execute(
                    "UPDATE deliveries SET lease_expires_at = ? WHERE id = ? AND lease_token = ?",
                    (until, delivery_id, token),
                )
                if cursor.rowcount == 1:
                    held.append(delivery_id)
        self._leased.difference_update(set(ids) - set(held))
        return held

    @_locked
    def release(self, ids: Sequence[str], *, token: str, until: float | None = None) -> int:
        """Give back claims `token` holds and has not attempted: due again, for any process
        (not before `until`, if given: postponed without spending an attempt)."""
        with self._write() as conn:
            released = sum(
                conn.execute(
                    "UPDATE deliveries SET lease_token = NULL, lease_expires_at = NULL, "
                    "next_attempt_at = max(next_attempt_at, coalesce(?, next_attempt_at)) "
                    "WHERE id = ? AND lease_token = ?",
                    (until, delivery_id, token),
                ).rowcount
                for delivery_id in ids
            )
            endpoint_state.drop_probes(conn, ids, token=token)
        self._leased.difference_update(ids)
        return released

    @_locked
    def due_count(self, now: float) -> int:
        """How many deliveries a claim at `now` could take (dead holders' claims included)."""
        with self._read() as conn:
            gone = self._gone_holders(conn)
        if gone:
            # Rare (after a crash): make them due, so a cron retry-loop does not say
            # "nothing due" and leave them for the lease to run out.
            with self._write() as conn:
                self._reap(conn, gone, now)
        with self._read() as conn:
            (count,) = conn.execute(
                f"SELECT count(*) FROM {DUE}", {"now": now, "due": now}
            ).fetchone()
        return int(count)

    @_locked
    def queue_levels(self, now: float) -> QueueLevels:
        """Pending (the status index), due now, and the oldest due time (the due index)."""
        due = self.due_count(now)
        with self._read() as conn:
            (pending,) = conn.execute(
                "SELECT count(*) FROM deliveries WHERE status = 'pending'"
            ).fetchone()
            # The due index in order: the first pending row found is the oldest; the walk stops.
            first = conn.execute(
                "SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_due "
                "WHERE next_attempt_at <= ? AND status = 'pending' ORDER BY next_attempt_at LIMIT 1",
                (now,),
            ).fetchone()
        return QueueLevels(pending=int(pending), due=due, oldest_due_at=first and first[0])

    @_locked
    def rule_counts(self) -> dict[str, dict[str, int]]:
        """From indexes, not the table: totals by rule (the rule index alone), the unfinished
        and failed by rule (the status index); succeeded, the bulk of a log, is the rest.
        About 25 ms at 100k deliveries where one GROUP BY over the rows took 110 ms."""
        counts: dict[str, dict[str, int]] = {}
        with self._read() as conn:
            totals = conn.execute(
                "SELECT rule, count(*) FROM deliveries INDEXED BY deliveries_rule GROUP BY rule"
            ).fetchall()
            others = conn.execute(
                "SELECT rule, status, count(*) FROM deliveries "
                "WHERE status IN ('pending', 'failed') GROUP BY rule, status"
            ).fetchall()
        for rule, total in totals:
            counts[rule] = {**dict.fromkeys(STATUSES, 0), "succeeded": int(total)}
        for rule, status, count in others:
            counts[rule][status] = int(count)
            counts[rule]["succeeded"] -= int(count)
        return counts

    def query(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        ticket: str | None = None,
        since: float | None = None,
        limit: int | None = 50,
    ) -> Iterator[Delivery]:
        """Deliveries newest first, filtered; `since` is creation time; limit None or 0 = all.

        Read a page at a time: the caller may write to the store between items.
        """
        pages = history.query(
            self._conn, status=status, rule=rule, ticket=ticket, since=since, limit=limit
        )
        while True:
            with self._lock:
                try:
                    item = next(pages)
                except StopIteration:
                    return
                except sqlite3.Error as exc:
                    raise database.error(self.path, exc) from exc
            yield item

    @_locked
    def get(self, delivery_id: str) -> DeliveryDetail | None:
        """One delivery by id or unique prefix, with its attempts in order; None if absent."""
        with self._read() as conn:
            return history.get(conn, delivery_id)

    @_locked
    def select(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
    ) -> list[str]:
        """The full ids a replay selects: by ids (or unique prefixes), or by filters."""
        with self._read() as conn:
            return history.select_ids(conn, ids=ids, status=status, rule=rule, since=since)

    @_locked
    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of `ids` (a duplicate's earlier delivery, say)."""
        with self._read() as conn:
            return history.statuses(conn, ids)

    @_locked
    def unrendered(self, ids: Sequence[str]) -> list[Unrendered]:
        """Those of `ids` whose request could not be rendered, with their rule and event."""
        with self._read() as conn:
            return history.unrendered(conn, ids)

    @_locked
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

        Select by ids (or unique prefixes) or by filters. Finished deliveries restart their
        retry policy (counted from here, first_attempt_at reset) and count one more replay;
        `attempts` and the attempt log keep counting over the delivery's life. Pending ones
        are just made due now, and a live lease is left alone. A delivery whose request could
        not be rendered is requeued only with its request rendered anew in `rendered` (keyed by
        id: the request, policy, timeout and the rest replace the stored ones); without one it
        is left as it is, never sent bare. Returns the ids requeued.
        """
        rendered = rendered or {}
        with self._write() as conn:
            selected = history.select_ids(conn, ids=ids, status=status, rule=rule, since=since)
            bare = {row.id for row in history.unrendered(conn, selected)}
            shared: dict[int, str | None] = {}
            renewed = [
                request_columns(rendered[i], i, shared)
                for i in selected
                if i in bare and i in rendered
            ]
            conn.executemany(REPLACE_REQUEST, renewed)
            # Rendered anew with a key it lacked: it takes the next place of that key.
            ordering.place(
                conn,
                ordering.keyed((i, rendered[i]) for i in selected if i in bare and i in rendered),
                now=now,
                leased=False,
            )
            selected = [i for i in selected if i not in bare or i in rendered]
            conn.executemany(
                """
                UPDATE deliveries SET
                    attempts_at_replay = CASE WHEN status = 'pending' THEN attempts_at_replay
                        ELSE attempts END,
                    replays = CASE WHEN status = 'pending' THEN replays ELSE replays + 1 END,
                    first_attempt_at = CASE WHEN status = 'pending' THEN first_attempt_at END,
                    lease_token = CASE WHEN status = 'pending' THEN lease_token END,
                    lease_expires_at = CASE WHEN status = 'pending' THEN lease_expires_at END,
                    status = 'pending', next_attempt_at = :now, updated_at = :now
                WHERE id = :id
                """,
                [{"id": i, "now": now} for i in selected],
            )
        return selected

    @_locked
    def purge(self, *, older_than: float) -> int:
        """Delete finished deliveries last updated before `older_than`, with their attempts."""
        deleted = 0
        after = ""
        while True:
            with self._write() as conn:
                ids = [
                    (row[0],)
                    for row in conn.execute(
                        "SELECT id FROM deliveries WHERE id > ? AND status != 'pending' "
                        "AND updated_at < ? ORDER BY id LIMIT ?",
                        (after, older_than, _PURGE_CHUNK),
                    )
                ]
                conn.executemany("DELETE FROM deliveries WHERE id = ?", ids)
            deleted += len(ids)
            if len(ids) < _PURGE_CHUNK:
                return deleted
            after = ids[-1][0]

    @contextmanager
    def traced(self) -> Iterator[list[str]]:
        """The SQL statements this store runs inside the block (SQLite only: bench and plan tests)."""
        statements: list[str] = []
        self._conn.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            self._conn.set_trace_callback(None)

    @_locked
    def query_plan(self, sql: str) -> list[str]:
        """The steps of EXPLAIN QUERY PLAN for one statement `traced` saw (SQLite only)."""
        return [str(row[3]) for row in self._conn.execute("EXPLAIN QUERY PLAN " + sql)]

    @_locked
    def file_settings(self) -> dict[str, Any]:
        """The file's page size, journal mode and applied migrations (SQLite only)."""
        with self._read() as conn:
            return {
                "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "migrations": [n for (n,) in conn.execute("SELECT name FROM _migrations")],
            }

    @_locked
    def check_integrity(self) -> list[str]:
        """What SQLite's integrity and foreign-key checks find wrong (empty: healthy)."""
        with self._read() as conn:
            found = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            problems = [] if found == ["ok"] else found
            problems += [
                f"{table} row {rowid} refers to a missing {parent} row"
                for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
            ]
        return problems

    # --- stored events (issue 17; SQL in events.py) --------------------------------------------

    @_locked
    def stored_events(
        self, *, since: float | None = None, until: float | None = None
    ) -> Iterator[StoredEvent]:
        """Stored events received in [since, until), oldest first, read a page at a time."""
        return stored_events.iterate(self._read, since=since, until=until)

    @_locked
    def stored_event_rules(
        self, *, since: float | None = None, until: float | None = None
    ) -> set[str]:
        """The rules with a delivery on record for an event stored in [since, until)."""
        after, before = stored_events.window_bounds(since, until)
        with self._read() as conn:
            return stored_events.rule_names(conn, after=after, before=before)

    @_locked
    def stored_event(self, event_ref: str) -> StoredEvent | None:
        """One stored event by its id ("evt_..."), or None."""
        with self._read() as conn:
            return stored_events.get(conn, event_ref)

    @_locked
    def event_of(self, delivery_id: str) -> StoredEvent | None:
        """The stored event a delivery was made for; None if it was not kept (or is purged)."""
        with self._read() as conn:
            ref = stored_events.ref_of(conn, delivery_id)
            return stored_events.get(conn, ref) if ref else None

    @_locked
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
        with self._read() as conn:
            return stored_events.search(conn, filters=filters, since=since, limit=limit)

    @_locked
    def event_deliveries(self, event_ref: str, *, limit: int = 500) -> list[Delivery]:
        """The deliveries made for one stored event, newest first, at most `limit`."""
        with self._read() as conn:
            return stored_events.deliveries_of(conn, event_ref, limit=limit)

    @_locked
    def recorded_requests(self, ids: Sequence[str]) -> dict[str, RecordedRequest]:
        """The stored request of each delivery in `ids` still on record, by id."""
        with self._read() as conn:
            return stored_events.recorded(conn, ids)

    @_locked
    def purge_events(self, *, older_than: float) -> int:
        """Delete stored events received before `older_than` (the deliveries' retention)."""
        deleted = 0
        before = event_id_floor(older_than)
        while True:
            with self._write() as conn:
                ids = stored_events.purge_ids(conn, before=before, limit=_PURGE_CHUNK)
            deleted += len(ids)
            if len(ids) < _PURGE_CHUNK:
                return deleted

    @_locked
    def restore_events(self, events: Sequence[StoredEvent]) -> int:
        """Store events read from another store as they were; an id already stored is kept."""
        with self._write() as conn:
            return stored_events.restore(conn, events)

    @_locked
    def stats(self, *, since: float | None = None) -> Stats:
        """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
        with self._read() as conn:
            return history.stats(conn, since=since)

    # --- endpoints (issue 15; SQL in endpoints.py) ---------------------------------------------

    @_locked
    def pause_endpoint(self, endpoint: str, *, now: float, reason: str | None = None) -> bool:
        """Hold `endpoint`'s deliveries from `now` (claims skip them); False if already paused."""
        with self._write() as conn:
            return endpoint_state.pause(conn, endpoint, now=now, reason=reason)

    @_locked
    def resume_endpoint(self, endpoint: str, *, now: float) -> bool:
        """Release a paused endpoint's deliveries; False if it was not paused."""
        with self._write() as conn:
            return endpoint_state.resume(conn, endpoint, now=now)

    @_locked
    def paused_endpoints(self) -> dict[str, tuple[float, str | None]]:
        """Every paused endpoint: (since, reason)."""
        with self._read() as conn:
            return endpoint_state.paused(conn)

    @_locked
    def breaker_states(self) -> dict[str, BreakerView]:
        """Every endpoint whose breaker is failing or open, by name."""
        with self._read() as conn:
            return endpoint_state.views(conn)

    @_locked
    def endpoint_health(self, *, since: float) -> list[EndpointHealth]:
        """Every endpoint with deliveries or state, by name; attempt figures since `since`."""
        with self._read() as conn:
            return endpoint_state.health(conn, since=since)

    # --- rate limits (issue 15; SQL in endpoints.py) --------------------------------------------

    @_locked
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
        """Take up to `count` send slots for `endpoint` within `horizon` (one write: the file's
        write lock makes it atomic across processes)."""
        with self._write() as conn:
            return endpoint_state.reserve(
                conn,
                endpoint,
                rule=rule,
                rate=rate,
                interval=interval,
                count=count,
                now=now,
                horizon=horizon,
            )

    @_locked
    def slow_endpoint(self, endpoint: str, *, until: float, now: float, reason: str) -> None:
        """Hold `endpoint` until `until` (a Retry-After): its schedule and claims start there."""
        with self._write() as conn:
            endpoint_state.slow(conn, endpoint, until=until, now=now, reason=reason)

    @_locked
    def endpoint_limits(self, *, now: float) -> dict[str, EndpointLimit]:
        """Endpoints with a rate recorded within RATE_MEMORY or a Retry-After hold past `now`."""
        with self._read() as conn:
            return endpoint_state.limits(conn, now=now)
