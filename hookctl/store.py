"""SQLite outbox, retry queue and execution log: migrate, enqueue, claim, complete, query.

All SQL lives here so another backend can replace this module behind the same small interface.
Several hookctl processes share one file: every write is a `BEGIN IMMEDIATE` transaction, claims
hand out a lease token, and a result is applied only while its token still holds the lease.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import sqlite_utils

from hookctl.errors import StoreError, UsageError

STATUSES = ("pending", "succeeded", "failed")
BUSY_TIMEOUT = 30.0  # seconds a process waits for another's write transaction before giving up
APPLICATION_ID = 0x686B6374  # "hkct" in the SQLite header marks a file as ours
ID_PREFIX = "msg_"
# Ids carry their creation time so `since` filters can seek the id indexes; enqueue refuses ids
# minted further than this from its clock, which keeps that shortcut exact.
ID_CLOCK_SLACK = 3600.0
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # ASCII-ordered, so string order is numeric order
_ID_PATTERN = re.compile(rf"^{ID_PREFIX}[0-7][{_CROCKFORD}]{{25}}$")
_PAGE = 500  # rows per keyset page / per IN (...) list, well under SQLite's variable limit
_PURGE_CHUNK = 2000  # deleted per transaction, so purging a big log never stalls senders for long
_SQLITE_BUSY, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 11, 26


def new_delivery_id(now: float) -> str:
    """A new "msg_" + 26-char ULID (48-bit milliseconds, 80 random bits): ids sort by time."""
    millis = math.floor(now * 1000)
    if not 0 <= millis < 1 << 48:
        raise ValueError(f"cannot make a delivery id for time {now!r}")
    return ID_PREFIX + _encode((millis << 80) | int.from_bytes(os.urandom(10), "big"))


def _id_floor(when: float) -> str:
    """The smallest id that could have been minted at `when`."""
    millis = min(max(math.floor(when * 1000), 0), (1 << 48) - 1)
    return ID_PREFIX + _encode(millis << 80)


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


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
    status: Literal["pending", "succeeded", "failed"]
    next_attempt_at: float | None


def m001_initial(db: sqlite_utils.Database) -> None:
    """Deliveries, their attempts, and the indexes the queue and the log need."""
    # Hand-written DDL: sqlite-utils' create() cannot express CHECK, ON DELETE CASCADE or
    # partial indexes.
    statements = [
        f"PRAGMA application_id = {APPLICATION_ID}",
        """
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            event_id TEXT,
            event_name TEXT,
            ticket TEXT,
            dedupe_key TEXT,
            status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            url TEXT NOT NULL,
            method TEXT NOT NULL,
            request TEXT NOT NULL,
            policy TEXT NOT NULL,
            timeout REAL NOT NULL,
            accept TEXT NOT NULL,
            on_failure TEXT,
            event TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            first_attempt_at REAL,
            next_attempt_at REAL,
            last_status_code INTEGER,
            error TEXT,
            lease_token TEXT,
            lease_expires_at REAL,
            fence INTEGER NOT NULL DEFAULT 0,
            notified INTEGER NOT NULL DEFAULT 0,
            CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
        )
        """,
        # Only pending rows are ever due, so the claim index skips the whole history; the lease
        # is in it so claims and due counts skip in-flight rows without reading them.
        """
        CREATE INDEX deliveries_due ON deliveries (next_attempt_at, lease_expires_at)
        WHERE status = 'pending'
        """,
        # (filter, id): the log reads newest first straight off these, no sort, no scan.
        "CREATE INDEX deliveries_status ON deliveries (status, id)",
        "CREATE INDEX deliveries_ticket ON deliveries (ticket, id)",
        "CREATE INDEX deliveries_rule ON deliveries (rule, id)",
        """
        CREATE UNIQUE INDEX deliveries_dedupe ON deliveries (rule, dedupe_key)
        WHERE dedupe_key IS NOT NULL
        """,
        """
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            started_at REAL NOT NULL,
            duration_ms REAL NOT NULL,
            status_code INTEGER,
            error TEXT,
            response_headers TEXT,
            response_body TEXT
        )
        """,
        "CREATE UNIQUE INDEX attempts_delivery ON attempts (delivery_id, number)",
    ]
    for sql in statements:
        db.execute(sql)


# Append-only: never edit or reorder a migration that has shipped; add a new one.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (m001_initial,)

_INSERT_DELIVERY = """
INSERT INTO deliveries (
    id, rule, event_id, event_name, ticket, dedupe_key, status, attempts, url, method, request,
    policy, timeout, accept, on_failure, event, created_at, updated_at, next_attempt_at,
    lease_token, lease_expires_at, fence
) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_CLAIM_COLUMNS = (
    "id, rule, ticket, url, method, request, policy, timeout, accept, attempts, "
    "first_attempt_at, on_failure, event, event_id"
)
# INDEXED BY because, without statistics, the planner prefers the equality on
# deliveries_status and then sorts every pending row.
_DUE = (
    "deliveries INDEXED BY deliveries_due WHERE status = 'pending' AND next_attempt_at <= :now "
    "AND (lease_expires_at IS NULL OR lease_expires_at <= :now)"
)
# The attempt is recorded even when the lease was lost: the request did happen. Numbers run
# over the delivery's whole life (replays included), so they stay unique in the log.
_INSERT_ATTEMPT = """
INSERT INTO attempts (
    delivery_id, number, started_at, duration_ms, status_code, error, response_headers,
    response_body
)
SELECT :id, COALESCE((SELECT MAX(number) FROM attempts WHERE delivery_id = :id), 0) + 1,
    :started_at, :duration_ms, :status_code, :error, :response_headers, :response_body
WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = :id)
"""
_APPLY_RESULT = """
UPDATE deliveries SET
    attempts = attempts + 1, status = :status, next_attempt_at = :next_attempt_at,
    last_status_code = :status_code, error = :error, updated_at = :now,
    first_attempt_at = COALESCE(first_attempt_at, :started_at),
    lease_token = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_token = :token
"""
_JSON_COLUMNS = ("request", "policy", "on_failure", "event", "response_headers")


# One encoder, built once: json.dumps builds a new one per call when given separators.
# ensure_ascii (the default) keeps lone surrogates from an event's JSON storable as text.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


def _dumps_shared(value: Any, memo: dict[int, str | None]) -> str | None:
    """Encode once per object: a batch's deliveries share their rule's policy and event."""
    key = id(value)
    if key not in memo:
        memo[key] = _dumps(value)
    return memo[key]


class Store:
    """The delivery database: an outbox, a retry queue and an execution log in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating if needed) and migrate the database at `path`."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # Stored requests carry the secrets needed to resend them; WAL files copy this mode.
                self.path.touch(mode=0o600, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create database {self.path}: {exc.strerror or exc}") from None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
        self.conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            with self._read():
                self._check_ours()
            self._enable_wal()
            # FULL: a committed enqueue survives power loss, which is what makes it an outbox.
            conn.execute("PRAGMA synchronous = FULL")
            self.db = sqlite_utils.Database(conn, execute_plugins=False)
            self._migrate()
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc) from None
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _error(self, exc: sqlite3.Error) -> StoreError:
        code = _primary(exc)
        if code == _SQLITE_NOTADB:
            return StoreError(f"{self.path} is not a SQLite database")
        if code == _SQLITE_CORRUPT:
            return StoreError(f"database {self.path} is corrupt: {exc}")
        if code == _SQLITE_BUSY:
            return StoreError(
                f"database {self.path} is busy: another hookctl process held it for over "
                f"{BUSY_TIMEOUT:g}s"
            )
        return StoreError(f"database {self.path}: {exc}")

    def _enable_wal(self) -> None:
        """Switch the file to WAL once; later opens find it already set."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                # Processes opening a new file together race for this switch, and SQLite
                # reports the loser as busy without waiting, so wait here instead.
                if _primary(exc) != _SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            else:
                return  # a file system without WAL support keeps its mode; locking still works

    def _check_ours(self) -> None:
        # Callers hold a transaction, so both reads below see the same snapshot.
        (app_id,) = self.conn.execute("PRAGMA application_id").fetchone()
        if app_id == APPLICATION_ID:
            return
        tables = self.conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        ).fetchone()[0]
        if app_id != 0 or tables:
            raise StoreError(
                f"{self.path} is a SQLite database but not a hookctl database; "
                "point --db or HOOKCTL_DB at another file"
            )

    def _applied(self) -> set[str]:
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
        ).fetchone()
        if not exists:
            return set()
        applied = {name for (name,) in self.conn.execute("SELECT name FROM _migrations")}
        unknown = applied - {m.__name__ for m in MIGRATIONS}
        if unknown:
            raise StoreError(
                f"{self.path} was written by a newer hookctl (migration "
                f"{', '.join(sorted(unknown))}); upgrade hookctl to use it"
            )
        return applied

    def _migrate(self) -> None:
        with self._read():
            applied = self._applied()
        if {m.__name__ for m in MIGRATIONS} <= applied:
            return  # the common case: no write lock taken just to open
        with self._write():
            # Checked again under the lock: another process may have migrated meanwhile.
            self._check_ours()
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)"
            )
            applied = self._applied()
            for migration in MIGRATIONS:
                if migration.__name__ not in applied:
                    migration(self.db)
                    # Bookkeeping only, never scheduling, so the real clock is fine here.
                    self.conn.execute(
                        "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                        (migration.__name__, time.time()),
                    )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front, waiting if busy."""
        # Operational errors (busy past the timeout, disk full, read-only file) become a
        # StoreError the CLI can report; the sqlite3 error stays chained for --debug.
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one snapshot."""
        try:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from exc

    def enqueue(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        claim_token: str | None = None,
        lease_seconds: float = 0,
    ) -> list[tuple[str, bool]]:
        """Durably add deliveries as pending, in one transaction; (id, False) for a duplicate.

        With claim_token they are inserted already leased to the caller, so a concurrent
        retry-loop leaves them alone while this process sends them.
        """
        if claim_token is not None and lease_seconds <= 0:
            raise ValueError("claiming on enqueue needs lease_seconds greater than 0")
        if not deliveries:
            return []
        lowest, beyond = _id_floor(now - ID_CLOCK_SLACK), _id_floor(now + ID_CLOCK_SLACK + 0.001)
        for d in deliveries:
            if not _ID_PATTERN.match(d.id):
                raise ValueError(f"delivery id {d.id!r} was not made by new_delivery_id()")
            if not lowest <= d.id < beyond:
                raise ValueError(f"delivery id {d.id!r} was minted too far from now={now!r}")
        lease_until = now + lease_seconds if claim_token is not None else None
        fence = 1 if claim_token is not None else 0
        shared: dict[int, str | None] = {}
        # Encoded before the transaction, so the write lock is held only for the inserts.
        rows = [
            (
                d.id, d.rule, d.event_id, d.event_name, d.ticket, d.dedupe_key, d.url, d.method,
                _ENCODER.encode(d.request), _dumps_shared(d.policy, shared), d.timeout, d.accept,
                _dumps_shared(d.on_failure, shared), _dumps_shared(d.event, shared), now, now,
                now, claim_token, lease_until, fence,
            )
            for d in deliveries
        ]  # fmt: skip
        results: list[tuple[str, bool]] = []
        new_rows = []
        with self._write() as conn:
            seen = self._existing_dedupe(conn, deliveries)
            for d, row in zip(deliveries, rows, strict=True):
                key = (d.rule, d.dedupe_key)
                if d.dedupe_key is not None:
                    if key in seen:
                        results.append((seen[key], False))
                        continue
                    seen[key] = d.id
                results.append((d.id, True))
                new_rows.append(row)
            conn.executemany(_INSERT_DELIVERY, new_rows)
        return results

    @staticmethod
    def _existing_dedupe(
        conn: sqlite3.Connection, deliveries: Sequence[NewDelivery]
    ) -> dict[tuple[str, str | None], str]:
        """Ids already stored for the batch's (rule, dedupe_key) pairs."""
        keys_by_rule: dict[str, set[str]] = defaultdict(set)
        for d in deliveries:
            if d.dedupe_key is not None:
                keys_by_rule[d.rule].add(d.dedupe_key)
        found: dict[tuple[str, str | None], str] = {}
        for rule, keys in keys_by_rule.items():
            ordered = sorted(keys)
            for start in range(0, len(ordered), _PAGE):
                chunk = ordered[start : start + _PAGE]
                sql = (
                    "SELECT dedupe_key, id FROM deliveries WHERE rule = ? "
                    f"AND dedupe_key IN ({', '.join('?' * len(chunk))})"
                )
                for key, delivery_id in conn.execute(sql, [rule, *chunk]):
                    found[(rule, key)] = delivery_id
        return found

    def claim(self, *, now: float, limit: int, lease_seconds: float, token: str) -> list[Claim]:
        """Lease up to `limit` due deliveries to `token`, oldest due first."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be greater than 0")
        if limit <= 0:
            return []
        with self._write() as conn:
            rows = _dicts(
                conn.execute(
                    f"SELECT {_CLAIM_COLUMNS} FROM {_DUE} ORDER BY next_attempt_at LIMIT :limit",
                    {"now": now, "limit": limit},
                )
            )
            conn.executemany(
                "UPDATE deliveries SET lease_token = ?, lease_expires_at = ?, fence = fence + 1 "
                "WHERE id = ?",
                [(token, now + lease_seconds, row["id"]) for row in rows],
            )
        return [Claim(token=token, **row) for row in rows]

    def complete(self, results: Sequence[AttemptResult], *, now: float) -> list[bool]:
        """Record attempts and apply them where the lease still holds; False = lease was lost."""
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
                    "response_headers": _dumps(r.response_headers),
                    "response_body": r.response_body,
                    "status": r.status,
                    "next_attempt_at": r.next_attempt_at if r.status == "pending" else None,
                    "now": now,
                }
            )
        if not params:
            return []
        with self._write() as conn:
            conn.executemany(_INSERT_ATTEMPT, params)
            # One statement per row: executemany cannot say which rows the fence rejected.
            return [conn.execute(_APPLY_RESULT, p).rowcount == 1 for p in params]

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
        return held

    def due_count(self, now: float) -> int:
        """How many deliveries a claim at `now` could take."""
        (count,) = self.conn.execute(f"SELECT count(*) FROM {_DUE}", {"now": now}).fetchone()
        return int(count)

    def query(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        ticket: str | None = None,
        since: float | None = None,
        limit: int | None = 50,
    ) -> Iterator[dict[str, Any]]:
        """Deliveries newest first, filtered; `since` is creation time; limit None or 0 = all."""
        where, params = self._filters(status=status, rule=rule, ticket=ticket, since=since)
        remaining = limit or None
        before: str | None = None
        # Keyset pages instead of one long-running cursor: no statement stays open between
        # yields, so the caller may write to the store while iterating.
        while remaining is None or remaining > 0:
            page_size = _PAGE if remaining is None else min(_PAGE, remaining)
            clauses = [*where, "id < ?"] if before is not None else where
            sql = (
                "SELECT * FROM deliveries"
                + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
                + " ORDER BY id DESC LIMIT ?"
            )
            page_params = [*params, before] if before is not None else params
            rows = _dicts(self.conn.execute(sql, [*page_params, page_size]))
            yield from rows
            if len(rows) < page_size:
                return
            before = rows[-1]["id"]
            if remaining is not None:
                remaining -= len(rows)

    @staticmethod
    def _filters(
        *,
        status: str | None = None,
        rule: str | None = None,
        ticket: str | None = None,
        since: float | None = None,
    ) -> tuple[list[str], list[Any]]:
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        # Without statistics SQLite may walk the wrong index for a combination (every row of a
        # rule to find one ticket). A unary + keeps a term out of index selection, so the most
        # selective filter drives: a ticket, then the rare statuses, then a rule.
        if ticket is not None:
            driver = "ticket"
        elif status in ("failed", "pending") or rule is None:
            driver = "status"
        else:
            driver = "rule"
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("rule", rule), ("ticket", ticket)):
            if value is not None:
                where.append(f"{'' if column == driver else '+'}{column} = ?")
                params.append(str(value))
        if since is not None:
            # The id bound lets the index seek; created_at keeps the answer exact.
            where.append("id >= ? AND created_at >= ?")
            params.extend([_id_floor(since - ID_CLOCK_SLACK), since])
        return where, params

    def _resolve(self, conn: sqlite3.Connection, delivery_id: str) -> str | None:
        """The full id for an id or a unique prefix of one (case-insensitive, "msg_" optional)."""
        if conn.execute("SELECT 1 FROM deliveries WHERE id = ?", (delivery_id,)).fetchone():
            return delivery_id
        prefix = delivery_id.strip()
        if prefix[: len(ID_PREFIX)].lower() == ID_PREFIX:
            prefix = prefix[len(ID_PREFIX) :]
        prefix = ID_PREFIX + prefix.upper()
        matches = conn.execute(
            "SELECT id FROM deliveries WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
            (prefix, prefix + "~"),
        ).fetchall()
        if len(matches) > 1:
            raise StoreError(f"{delivery_id!r} matches more than one delivery; give more of the id")
        return matches[0][0] if matches else None

    def get(self, delivery_id: str) -> dict[str, Any] | None:
        """One delivery by id or unique prefix, with its "attempts" in order; None if absent."""
        with self._read() as conn:
            full_id = self._resolve(conn, delivery_id)
            if full_id is None:
                return None
            (delivery,) = _dicts(conn.execute("SELECT * FROM deliveries WHERE id = ?", (full_id,)))
            # The stored count moves aside for the attempt log itself (it restarts on replay).
            delivery["attempt_count"] = delivery["attempts"]
            delivery["attempts"] = _dicts(
                conn.execute(
                    "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number", (full_id,)
                )
            )
        return delivery

    def requeue(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
        now: float,
    ) -> list[str]:
        """Replay deliveries under the same id: pending again, due now, with a fresh schedule.

        Select by ids (or unique prefixes) or by filters. Finished deliveries restart their
        retry policy (attempts and first_attempt_at reset; the attempt log is kept); pending
        ones are just made due now, and a live lease is left alone.
        """
        if ids and (status is not None or rule is not None or since is not None):
            raise UsageError("select deliveries by id or by filters, not both")
        if not ids and status is None and rule is None and since is None:
            raise UsageError("nothing to requeue: give delivery ids or a filter")
        with self._write() as conn:
            if ids:
                selected = []
                for given in ids:
                    full_id = self._resolve(conn, given)
                    if full_id is None:
                        raise StoreError(f"no delivery {given!r}")
                    selected.append(full_id)
                selected = sorted(set(selected))
            else:
                where, params = self._filters(status=status, rule=rule, since=since)
                selected = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM deliveries WHERE {' AND '.join(where)} ORDER BY id",
                        params,
                    )
                ]
            conn.executemany(
                """
                UPDATE deliveries SET
                    attempts = CASE WHEN status = 'pending' THEN attempts ELSE 0 END,
                    first_attempt_at = CASE WHEN status = 'pending' THEN first_attempt_at END,
                    lease_token = CASE WHEN status = 'pending' THEN lease_token END,
                    lease_expires_at = CASE WHEN status = 'pending' THEN lease_expires_at END,
                    status = 'pending', next_attempt_at = :now, notified = 0, updated_at = :now
                WHERE id = :id
                """,
                [{"id": i, "now": now} for i in selected],
            )
        return selected

    def mark_notified(self, delivery_id: str) -> bool:
        """Claim the right to send a delivery's on_failure; True for exactly one caller."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET notified = 1 WHERE id = ? AND notified = 0", (delivery_id,)
            )
            return cursor.rowcount == 1

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

    def stats(self, *, since: float | None = None) -> dict[str, Any]:
        """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
        where, params = self._filters(since=since)
        where_sql = f" WHERE {' AND '.join(where)}" if where else ""
        with self._read() as conn:
            by_status = dict.fromkeys(STATUSES, 0)
            by_rule: dict[str, dict[str, int]] = {}
            for rule, status, count in conn.execute(
                # + keeps GROUP BY from walking a whole index instead of the since range.
                f"SELECT rule, status, count(*) FROM deliveries{where_sql} GROUP BY +rule, +status",
                params,
            ):
                by_status[status] += count
                counts = by_rule.setdefault(rule, {**dict.fromkeys(STATUSES, 0), "total": 0})
                counts[status] += count
                counts["total"] += count
            urls: dict[str, dict[str, Any]] = {
                url: {"url": url, "deliveries": n, "failed": failed, "failed_attempts": 0}
                for url, n, failed in conn.execute(
                    "SELECT url, count(*), sum(status = 'failed') "
                    f"FROM deliveries{where_sql} GROUP BY url",
                    params,
                )
            }
            attempts = conn.execute(
                "SELECT d.url, a.duration_ms, a.error IS NOT NULL FROM attempts a "
                f"JOIN (SELECT id, url FROM deliveries{where_sql}) d ON d.id = a.delivery_id",
                params,
            ).fetchall()
        durations = sorted(a[1] for a in attempts)
        timing: dict[str, list[float]] = defaultdict(list)
        for url, duration, failed in attempts:
            timing[url].append(duration)
            urls[url]["failed_attempts"] += failed
        slowest: list[dict[str, Any]] = sorted(
            (
                {"url": u, "attempts": len(d), "avg_ms": sum(d) / len(d), "max_ms": max(d)}
                for u, d in timing.items()
            ),
            key=lambda s: float(s["avg_ms"]),
            reverse=True,
        )
        failing = sorted(
            (u for u in urls.values() if u["failed"] or u["failed_attempts"]),
            key=lambda u: (-u["failed"], -u["failed_attempts"]),
        )
        return {
            "since": since,
            "deliveries": sum(by_status.values()),
            "by_status": by_status,
            "by_rule": by_rule,
            "attempts": len(durations),
            "duration_ms": {f"p{p}": _percentile(durations, p) for p in (50, 95, 99)},
            "slowest_urls": slowest[:5],
            "failing_urls": failing[:5],
        }


def _primary(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of an error (extended codes carry it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _percentile(ordered: list[float], pct: int) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """Rows as dicts, with the JSON columns parsed."""
    names = [c[0] for c in cursor.description]
    rows = []
    for row in cursor:
        item = dict(zip(names, row, strict=True))
        for column in _JSON_COLUMNS:
            if item.get(column) is not None:
                item[column] = json.loads(item[column])
        rows.append(item)
    return rows
