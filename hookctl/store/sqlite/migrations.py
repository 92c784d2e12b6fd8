"""The database schema, built by append-only migrations applied in order when a store opens.

Each migration is a small named function; its name is recorded in `_migrations` once applied.
Never edit or reorder a migration that has shipped: add a new one at the end of MIGRATIONS.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hookctl.store.errors import ForeignDatabase, NewerDatabase

if TYPE_CHECKING:
    import sqlite_utils

APPLICATION_ID = 0x686B6374  # "hkct" in the SQLite header marks a file as ours


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


def m002_request_body(db: sqlite_utils.Database) -> None:
    """A request's body in a column of its own, not as a string inside the request's JSON.

    A JSON body inside JSON has every quote escaped: encoding it at enqueue and decoding it at
    claim took half the store's JSON time. Rows from before keep their body in `request`.
    """
    db.execute("ALTER TABLE deliveries ADD COLUMN body TEXT")


def m005_replays(db: sqlite_utils.Database) -> None:
    """Attempts counted over a delivery's whole life, replays counted, unrendered ones marked.

    `attempts` used to restart at 0 on a replay while the attempt log kept numbering on, so
    the list and the detail disagreed. Now `attempts` is the total, `replays` how often it was
    replayed, and `attempts_at_replay` the total when the latest replay began (its retry
    policy counts from there). `unrendered` marks a delivery whose request could not be
    rendered: its stored request is a bare template that must never be sent (a replay renders
    it again from the rule). Rows from before are fixed up from the attempt log and the error
    they recorded.
    """
    for sql in (
        "ALTER TABLE deliveries ADD COLUMN replays INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN attempts_at_replay INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN unrendered INTEGER NOT NULL DEFAULT 0",
        # A logged attempt beyond the count means the delivery was replayed (at least once).
        """
        UPDATE deliveries SET
            attempts_at_replay = logged.n - deliveries.attempts, replays = 1, attempts = logged.n
        FROM (SELECT delivery_id, count(*) AS n FROM attempts GROUP BY delivery_id) AS logged
        WHERE logged.delivery_id = deliveries.id AND logged.n > deliveries.attempts
        """,
        """
        UPDATE deliveries SET unrendered = 1
        WHERE error LIKE 'cannot render the request:%' OR id IN (
            SELECT delivery_id FROM attempts WHERE error LIKE 'cannot render the request:%'
        )
        """,
    ):
        db.execute(sql)


def m006_lease_holder(db: sqlite_utils.Database) -> None:
    """Who holds each lease, so a worker on the same machine can take over a dead one's claims.

    `lease_holder` on a delivery names the process that claimed it last (machine, pid, start
    time: see hookctl/store/holder.py); `lease_holders` lists the processes that may hold
    leases, so a claim checks a handful of holders instead of every leased row.
    """
    for sql in (
        "ALTER TABLE deliveries ADD COLUMN lease_holder TEXT",
        """
        CREATE TABLE lease_holders (
            holder TEXT PRIMARY KEY,
            machine TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started TEXT NOT NULL,
            since REAL NOT NULL
        )
        """,
        "CREATE INDEX lease_holders_machine ON lease_holders (machine)",
    ):
        db.execute(sql)


def m007_events(db: sqlite_utils.Database) -> None:
    """Every event `fire` (and `serve`) reads, matched or not, for `hookctl plan` (issue 17).

    `id` is an "evt_" ULID minted from `received_at`, so a time window is an id range and
    purge needs no other index. `data` is the event's compact JSON, or its first
    MAX_STORED_EVENT_BYTES with `truncated` = 1 when it was bigger (`size` is the whole size).
    `deliveries` maps each matched rule to the delivery on record for the event (JSON).
    `deliveries.event_ref` is the way back from a delivery to the stored event it came from.
    """
    for sql in (
        """
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,
            source TEXT NOT NULL,
            line INTEGER,
            event_id TEXT,
            event_name TEXT,
            ticket TEXT,
            size INTEGER NOT NULL,
            truncated INTEGER NOT NULL DEFAULT 0,
            data TEXT NOT NULL,
            deliveries TEXT
        )
        """,
        "ALTER TABLE deliveries ADD COLUMN event_ref TEXT",
    ):
        db.execute(sql)


def m008_endpoints(db: sqlite_utils.Database) -> None:
    """Each delivery's endpoint (scheme://host:port, hookctl/store/endpoint.py) and the
    per-endpoint state every worker on the file shares (issue 15): paused since when and why.

    `endpoint` is filled at enqueue; rows from before get it from their `url` here (the same
    function names both, so they agree). The breaker's state will join `endpoints` later.
    """
    from hookctl.store.endpoint import endpoint_of

    conn = db.conn
    conn.execute("ALTER TABLE deliveries ADD COLUMN endpoint TEXT")
    conn.create_function("hookctl_endpoint_of", 1, endpoint_of, deterministic=True)
    try:
        conn.execute("UPDATE deliveries SET endpoint = hookctl_endpoint_of(url)")
    finally:
        conn.create_function("hookctl_endpoint_of", 1, None)
    conn.execute(
        """
        CREATE TABLE endpoints (
            endpoint TEXT PRIMARY KEY,
            paused_since REAL,
            paused_reason TEXT,
            updated_at REAL NOT NULL
        )
        """
    )


def m009_order(db: sqlite_utils.Database) -> None:
    """Ordered delivery per key (issue 15): a rule's rendered `order_by:` and each delivery's
    place in its key's sequence.

    `order_seq` is given at enqueue, one more than the highest of its (rule, order_key), under
    the write lock, so it is strict within a batch and across processes. Only ordered rows are
    in the two partial indexes: `deliveries_order` finds a key's last place (and the one before
    a delivery, for the log), `deliveries_order_pending` answers the claim's "is an earlier one
    of its key still pending" with one seek, `deliveries_order_leased` its "is one of its key
    in flight". Rows without a key cost nothing. `order_due` keeps a parked delivery's own
    next attempt time (ordering.py).
    """
    for sql in (
        "ALTER TABLE deliveries ADD COLUMN order_key TEXT",
        "ALTER TABLE deliveries ADD COLUMN order_seq INTEGER",
        "ALTER TABLE deliveries ADD COLUMN order_due REAL",
        """
        CREATE INDEX deliveries_order ON deliveries (rule, order_key, order_seq)
        WHERE order_key IS NOT NULL
        """,
        """
        CREATE INDEX deliveries_order_pending ON deliveries (rule, order_key, order_seq)
        WHERE order_key IS NOT NULL AND status = 'pending'
        """,
        """
        CREATE INDEX deliveries_order_leased ON deliveries (rule, order_key, lease_expires_at)
        WHERE order_key IS NOT NULL AND status = 'pending' AND lease_expires_at IS NOT NULL
        """,
    ):
        db.execute(sql)


def m011_rate(db: sqlite_utils.Database) -> None:
    """Rate limits per endpoint (issue 15): each endpoint's send schedule and Retry-After hold,
    and the rate each rule named for it (the strictest recent one applies to every delivery).

    `next_slot` is the schedule's end (the next free send slot); `claim_after` is until when
    claims skip the endpoint (rows.READY); `not_before` and its reason are a Retry-After hold.
    """
    conn = db.conn
    for column in (
        "next_slot REAL",
        "claim_after REAL",
        "not_before REAL",
        "not_before_reason TEXT",
    ):
        conn.execute(f"ALTER TABLE endpoints ADD COLUMN {column}")
    conn.execute(
        """
        CREATE TABLE endpoint_rates (
            endpoint TEXT NOT NULL,
            rule TEXT NOT NULL,
            rate TEXT NOT NULL,
            interval REAL NOT NULL,
            seen_at REAL NOT NULL,
            PRIMARY KEY (endpoint, rule)
        )
        """
    )


def m010_breaker(db: sqlite_utils.Database) -> None:
    """The circuit breaker's state per endpoint (store/breaker.py, issue 15): consecutive
    failures, failing since, the last success that reset it, open since, the next probe and
    the wait before it, and the probe in flight (its token, lease and delivery)."""
    for sql in (
        "ALTER TABLE endpoints ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE endpoints ADD COLUMN failing_since REAL",
        "ALTER TABLE endpoints ADD COLUMN last_success_at REAL",
        "ALTER TABLE endpoints ADD COLUMN opened_at REAL",
        "ALTER TABLE endpoints ADD COLUMN next_probe_at REAL",
        "ALTER TABLE endpoints ADD COLUMN probe_interval REAL",
        "ALTER TABLE endpoints ADD COLUMN probe_token TEXT",
        "ALTER TABLE endpoints ADD COLUMN probe_expires_at REAL",
        "ALTER TABLE endpoints ADD COLUMN probe_delivery TEXT",
    ):
        db.conn.execute(sql)


def m012_event_search(db: sqlite_utils.Database) -> None:
    """Searching stored events (`serve`'s events page) and listing an event's deliveries.

    The page asks for the newest events of a ticket, an event id, a source or an event name:
    each index ends in `id`, so such a search seeks to the value and reads backwards, newest
    first, stopping at the page's limit instead of walking every event for a rare value.
    `deliveries_event_ref` lists every delivery made for one event (those of a "fire again"
    too, which the event's own `deliveries` map does not name).
    """
    for sql in (
        "CREATE INDEX events_ticket ON events (ticket, id)",
        "CREATE INDEX events_event_id ON events (event_id, id)",
        "CREATE INDEX events_source ON events (source, id)",
        "CREATE INDEX events_event_name ON events (event_name, id)",
        "CREATE INDEX deliveries_event_ref ON deliveries (event_ref, id) WHERE event_ref IS NOT NULL",
    ):
        db.execute(sql)


# Append-only: never edit or reorder a migration that has shipped; add a new one.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    m001_initial,
    m002_request_body,
    m005_replays,
    m006_lease_holder,
    m007_events,
    m008_endpoints,
    m009_order,
    m010_breaker,
    m011_rate,
    m012_event_search,
)


def check_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a SQLite file some other program made; an empty one is fine (we will claim it)."""
    # Callers hold a transaction, so both reads below see the same snapshot.
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    if app_id == APPLICATION_ID:
        return
    (tables,) = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    if app_id != 0 or tables:
        raise ForeignDatabase(
            f"{path} is a SQLite database but not a hookctl database; "
            "point --db or HOOKCTL_DB at another file"
        )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the database at `path` lacks, each in order, under the write lock."""
    with _transaction(conn, "BEGIN"):
        applied = _applied(conn, path)
    if {m.__name__ for m in MIGRATIONS} <= applied:
        return  # the common case: no write lock taken just to open
    with _transaction(conn, "BEGIN IMMEDIATE"):
        # Checked again under the lock: another process may have migrated meanwhile.
        check_ours(conn, path)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)"
        )
        applied = _applied(conn, path)
        # Imported only here: sqlite-utils (with the click and pluggy it pulls in) costs tens
        # of milliseconds at start-up, and an already-migrated database never needs it.
        import sqlite_utils

        db = sqlite_utils.Database(conn, execute_plugins=False)
        for migration in MIGRATIONS:
            if migration.__name__ not in applied:
                migration(db)
                # Bookkeeping only, never scheduling, so the real clock is fine here.
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (migration.__name__, time.time()),
                )


def _applied(conn: sqlite3.Connection, path: Path) -> set[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    if not exists:
        return set()
    applied = {name for (name,) in conn.execute("SELECT name FROM _migrations")}
    unknown = applied - {m.__name__ for m in MIGRATIONS}
    if unknown:
        raise NewerDatabase(
            f"{path} was written by a newer hookctl (migration "
            f"{', '.join(sorted(unknown))}); upgrade hookctl to use it"
        )
    return applied


@contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
