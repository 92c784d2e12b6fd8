"""The PostgreSQL schema, built by append-only migrations applied once under an advisory lock
(and checked for what it does not enforce).

Its own list (PostgreSQL DDL differs from SQLite's), the same idea as sqlite/migrations.py: each
migration is a named function, recorded in `hookctl_migrations` once applied; never edit or
reorder one that has shipped, add a new one at the end. Times are epoch seconds in double
precision, as SQLite stores them, so both backends hand back the very same values. Ids collate
as "C" (bytes): they sort by time only in byte order, and prefix lookups rely on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hookctl.store.endpoint import endpoint_of
from hookctl.store.errors import ForeignDatabase, NewerDatabase

# pg_advisory_xact_lock key: "hkct" as an int, the same tag the SQLite header carries.
LOCK_KEY = 0x686B6374
TABLE = "hookctl_migrations"

Cursor = Any  # psycopg.Cursor; Any so this module imports without the driver


def m001_initial(cur: Cursor) -> None:
    """Deliveries and attempts as SQLite has them after its m005, and the queue's indexes."""
    statements = [
        """
        CREATE TABLE deliveries (
            id text COLLATE "C" PRIMARY KEY,
            rule text NOT NULL,
            event_id text,
            event_name text,
            ticket text,
            dedupe_key text,
            status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
            attempts integer NOT NULL DEFAULT 0,
            url text NOT NULL,
            method text NOT NULL,
            request text NOT NULL,
            body bytea,
            policy text NOT NULL,
            timeout double precision NOT NULL,
            accept text NOT NULL,
            on_failure text,
            event text,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            first_attempt_at double precision,
            next_attempt_at double precision,
            last_status_code integer,
            error text,
            lease_token text,
            lease_expires_at double precision,
            fence bigint NOT NULL DEFAULT 0,
            replays integer NOT NULL DEFAULT 0,
            attempts_at_replay integer NOT NULL DEFAULT 0,
            unrendered boolean NOT NULL DEFAULT false,
            -- Insertion order: ties in next_attempt_at are claimed in it, as SQLite's rowid does.
            seq bigint GENERATED ALWAYS AS IDENTITY,
            CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
        )
        """,
        # What is due: pending and not leased, oldest first. A claim moves a row from here to
        # deliveries_leased, so neither index holds the history (or the other's rows).
        """
        CREATE INDEX deliveries_due ON deliveries (next_attempt_at, seq)
        WHERE status = 'pending' AND lease_token IS NULL
        """,
        # What is leased, by expiry: a crashed worker's claims are found here once they lapse.
        """
        CREATE INDEX deliveries_leased ON deliveries (lease_expires_at)
        WHERE lease_token IS NOT NULL
        """,
        "CREATE INDEX deliveries_status ON deliveries (status, id)",
        "CREATE INDEX deliveries_ticket ON deliveries (ticket, id)",
        "CREATE INDEX deliveries_rule ON deliveries (rule, id)",
        """
        CREATE UNIQUE INDEX deliveries_dedupe ON deliveries (rule, dedupe_key)
        WHERE dedupe_key IS NOT NULL
        """,
        # `token` and `applied` make a batch of outcomes safe to apply again after a lost
        # connection: an attempt already logged under its lease token is not logged twice.
        # No foreign key: its per-row check cost 40% of logging a batch of attempts, and the
        # store already inserts an attempt only for a delivery it holds locked, and deletes
        # a delivery's attempts with it (purge). Fewer indexes on deliveries for the same
        # reason: every outcome rewrites its row into each of them.
        """
        CREATE TABLE attempts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id text COLLATE "C" NOT NULL,
            number integer NOT NULL,
            started_at double precision NOT NULL,
            duration_ms double precision NOT NULL,
            status_code integer,
            error text,
            response_headers text,
            response_body bytea,
            token text,
            applied boolean NOT NULL DEFAULT true
        )
        """,
        "CREATE UNIQUE INDEX attempts_delivery ON attempts (delivery_id, number)",
    ]
    for sql in statements:
        cur.execute(sql)


def m002_lease_holder(cur: Cursor) -> None:
    """Who holds each lease (machine, pid, start time: hookctl/store/holder.py), as SQLite's
    m006 records it: a worker takes at once the claims of a holder on its own machine whose
    process is gone; a holder on another machine keeps its lease until it runs out."""
    for sql in (
        "ALTER TABLE deliveries ADD COLUMN lease_holder text",
        """
        CREATE TABLE lease_holders (
            holder text PRIMARY KEY,
            machine text NOT NULL,
            pid integer NOT NULL,
            started text NOT NULL,
            since double precision NOT NULL
        )
        """,
        "CREATE INDEX lease_holders_machine ON lease_holders (machine)",
    ):
        cur.execute(sql)


def m003_events(cur: Cursor) -> None:
    """Every event `fire` (and `serve`) reads, for `hookctl plan`: SQLite's m007 table.

    `id` is an "evt_" ULID minted from `received_at` (a time window is an id range, in byte
    order: COLLATE "C"); `data` the event's compact JSON, cut to MAX_STORED_EVENT_BYTES when
    `truncated`; `deliveries` maps each matched rule to its delivery (JSON).
    """
    for sql in (
        """
        CREATE TABLE events (
            id text COLLATE "C" PRIMARY KEY,
            received_at double precision NOT NULL,
            source text NOT NULL,
            line integer,
            event_id text,
            event_name text,
            ticket text,
            size integer NOT NULL,
            truncated boolean NOT NULL DEFAULT false,
            data text NOT NULL,
            deliveries text
        )
        """,
        "ALTER TABLE deliveries ADD COLUMN event_ref text",
    ):
        cur.execute(sql)


def m004_endpoints(cur: Cursor) -> None:
    """Each delivery's endpoint (scheme://host:port) and the per-endpoint state every worker
    shares (paused since when, and why): SQLite's m008. Existing rows are named from their URL
    by the same function enqueue uses, so the two agree."""
    cur.execute("ALTER TABLE deliveries ADD COLUMN endpoint text")
    cur.execute("SELECT DISTINCT url FROM deliveries")
    urls = [url for (url,) in cur.fetchall()]
    if urls:
        cur.executemany(
            "UPDATE deliveries SET endpoint = %s WHERE url = %s",
            [(endpoint_of(url), url) for url in urls],
        )
    cur.execute(
        """
        CREATE TABLE endpoints (
            endpoint text PRIMARY KEY,
            paused_since double precision,
            paused_reason text,
            updated_at double precision NOT NULL
        )
        """
    )


def m005_order(cur: Cursor) -> None:
    """Ordered delivery per key (issue 15): SQLite's m009. `order_seq` comes from a sequence,
    given under a per-key advisory lock (postgres/ordering.py), so places follow commit order;
    `order_due` keeps a parked delivery's own time; the partial indexes hold keyed rows only."""
    for sql in (
        "ALTER TABLE deliveries ADD COLUMN order_key text",
        "ALTER TABLE deliveries ADD COLUMN order_seq bigint",
        "ALTER TABLE deliveries ADD COLUMN order_due double precision",
        "CREATE SEQUENCE deliveries_order_seq",
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
        cur.execute(sql)


def m007_rate(cur: Cursor) -> None:
    """Rate limits per endpoint (issue 15), SQLite's m011_rate: each endpoint's send schedule
    (next_slot), until when claims skip it (claim_after), a Retry-After hold (not_before and
    its reason), and the rate each rule named for it (endpoint_rates)."""
    cur.execute(
        "ALTER TABLE endpoints ADD COLUMN next_slot double precision, "
        "ADD COLUMN claim_after double precision, ADD COLUMN not_before double precision, "
        "ADD COLUMN not_before_reason text"
    )
    cur.execute(
        """
        CREATE TABLE endpoint_rates (
            endpoint text NOT NULL,
            rule text NOT NULL,
            rate text NOT NULL,
            "interval" double precision NOT NULL,
            seen_at double precision NOT NULL,
            PRIMARY KEY (endpoint, rule)
        )
        """
    )


def m006_breaker(cur: Cursor) -> None:
    """The circuit breaker's state per endpoint (store/breaker.py): SQLite's m010_breaker."""
    cur.execute(
        "ALTER TABLE endpoints ADD COLUMN failures integer NOT NULL DEFAULT 0, "
        "ADD COLUMN failing_since double precision, ADD COLUMN last_success_at double precision, "
        "ADD COLUMN opened_at double precision, ADD COLUMN next_probe_at double precision, "
        "ADD COLUMN probe_interval double precision, ADD COLUMN probe_token text, "
        "ADD COLUMN probe_expires_at double precision, ADD COLUMN probe_delivery text"
    )


def m008_event_search(cur: Cursor) -> None:
    """Searching stored events and listing an event's deliveries: SQLite's m012_event_search
    (each search index ends in `id`, so the newest events of a rare value are a seek)."""
    for sql in (
        "CREATE INDEX events_ticket ON events (ticket, id)",
        "CREATE INDEX events_event_id ON events (event_id, id)",
        "CREATE INDEX events_source ON events (source, id)",
        "CREATE INDEX events_event_name ON events (event_name, id)",
        "CREATE INDEX deliveries_event_ref ON deliveries (event_ref, id) WHERE event_ref IS NOT NULL",
    ):
        cur.execute(sql)


# Append-only: never edit or reorder a migration that has shipped; add a new one.
MIGRATIONS: tuple[Callable[[Cursor], None], ...] = (
    m001_initial,
    m002_lease_holder,
    m003_events,
    m004_endpoints,
    m005_order,
    m006_breaker,
    m007_rate,
    m008_event_search,
)


def migrate(conn: Any, where: str) -> None:
    """Apply the migrations the database lacks, in order, once, under an advisory lock.

    Two processes starting together both find work to do; the transaction-scoped advisory lock
    lets one apply it while the other waits, then finds it done. A migration the list does not
    know means a newer hookctl wrote this database: refused, never half-used.
    """
    known = [m.__name__ for m in MIGRATIONS]
    with conn.transaction():
        applied = _applied(conn, where)
    if set(known) <= applied:
        return  # the common case: no lock taken just to open
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        _check_ours(cur, where)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(name text PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        applied = _applied(conn, where)  # again, under the lock: another may have migrated
        for migration in MIGRATIONS:
            if migration.__name__ not in applied:
                migration(cur)
                cur.execute(
                    f"INSERT INTO {TABLE} (name, applied_at) VALUES (%s, %s)",
                    (migration.__name__, time.time()),
                )


def _applied(conn: Any, where: str) -> set[str]:
    (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()
    if not exists:
        return set()
    applied = {name for (name,) in conn.execute(f"SELECT name FROM {TABLE}")}
    unknown = applied - {m.__name__ for m in MIGRATIONS}
    if unknown:
        raise NewerDatabase(
            f"{where} was written by a newer hookctl (migration "
            f"{', '.join(sorted(unknown))}); upgrade hookctl to use it"
        )
    return applied


def _check_ours(cur: Cursor, where: str) -> None:
    """Refuse a database whose `deliveries` table some other program made."""
    cur.execute(
        "SELECT to_regclass('deliveries') IS NOT NULL, to_regclass(%s) IS NOT NULL", (TABLE,)
    )
    deliveries, ours = cur.fetchone()
    if deliveries and not ours:
        raise ForeignDatabase(
            f"{where} already has a `deliveries` table that hookctl did not create; "
            "use another database (or schema, via ?options=-csearch_path%3Dhookctl)"
        )


def integrity_problems(cur: Cursor, retry: bool) -> list[str]:
    """What the schema does not enforce and the store relies on: attempts that belong to no
    delivery (there is no foreign key), leases without an expiry; empty: healthy."""
    problems = []
    cur.execute(
        "SELECT count(*) FROM attempts AS a WHERE NOT EXISTS "
        "(SELECT 1 FROM deliveries AS d WHERE d.id = a.delivery_id)"
    )
    (orphans,) = cur.fetchone()
    if orphans:
        problems.append(f"{orphans} attempts refer to a missing delivery")
    cur.execute(
        "SELECT count(*) FROM deliveries WHERE lease_token IS NOT NULL AND lease_expires_at IS NULL"
    )
    (unbounded,) = cur.fetchone()
    if unbounded:
        problems.append(f"{unbounded} deliveries are leased without an expiry")
    return problems
