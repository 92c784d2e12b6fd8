"""SQLiteStore's life over one SQLite file: open, close, its transactions, leases' holder.

`SQLiteStore` implements the store contract (hookctl/store/contract.py) over one file. This
module holds what every call runs in: opening and closing, the write and read transactions,
`split_commit` (the commit without its fsync) and the lease-holder registration. The contract's
methods come from one mixin per topic: store_queue.py (enqueue, claim, complete, release,
requeue, purge), store_log.py (the log's reads), store_events.py (stored events) and
store_endpoints.py (pauses, breakers, rate limits). Behind them, database.py opens the file,
migrations.py builds the schema, rows.py turns deliveries into rows and back, and history.py
holds the log's read queries. Several hookctl processes share one file: every write is a
`BEGIN IMMEDIATE` transaction, claims hand out a lease token, and a result is applied only while
its token still holds the lease. Every sqlite3 error leaves as a StoreError
(hookctl/store/errors.py), one line naming the file and what to do.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from hookctl.store import holder as holders
from hookctl.store.ids import new_delivery_id
from hookctl.store.records import STATUSES, AttemptResult, Claim, NewDelivery
from hookctl.store.sqlite import database, queue
from hookctl.store.sqlite.store_base import locked
from hookctl.store.sqlite.store_endpoints import EndpointMethods
from hookctl.store.sqlite.store_events import EventMethods
from hookctl.store.sqlite.store_log import LogMethods
from hookctl.store.sqlite.store_queue import QueueMethods

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

_T = TypeVar("_T")


class SQLiteStore(QueueMethods, LogMethods, EventMethods, EndpointMethods):
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

    @contextmanager
    def traced(self) -> Iterator[list[str]]:
        """The SQL statements this store runs inside the block (SQLite only: bench and plan tests)."""
        statements: list[str] = []
        self._conn.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            self._conn.set_trace_callback(None)

    @locked
    def query_plan(self, sql: str) -> list[str]:
        """The steps of EXPLAIN QUERY PLAN for one statement `traced` saw (SQLite only)."""
        return [str(row[3]) for row in self._conn.execute("EXPLAIN QUERY PLAN " + sql)]
