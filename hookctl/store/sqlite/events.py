"""Stored events in SQLite: kept in the outbox transaction, read back by time window, purged.

`fire` (and `serve`) hand the events they read to `Store.enqueue` with the deliveries made for
them, so an event's record and its deliveries commit together (or not at all). `hookctl plan`
reads them back a page at a time. The table is built by migration m007_events.

An event's JSON is bounded: beyond MAX_STORED_EVENT_BYTES only that many bytes of it are kept,
marked `truncated` (with its whole `size`), so one huge event cannot bloat the file; a
truncated event is listed but cannot be replayed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from hookctl.store.event_records import NewEvent, RecordedRequest, StoredEvent
from hookctl.store.ids import event_id_floor
from hookctl.store.log_records import Delivery
from hookctl.store.records import NewDelivery
from hookctl.store.sqlite import endpoints as endpoint_state
from hookctl.store.sqlite import history, ordering
from hookctl.store.sqlite.rows import dicts, dumps

MAX_STORED_EVENT_BYTES = 256 * 1024  # documented in the README ("Stored events")
PAGE = 500  # events per read page / ids per IN (...) list

_INSERT = """
INSERT OR IGNORE INTO events (
    id, received_at, source, line, event_id, event_name, ticket, size, truncated, data, deliveries
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_COLUMNS = (
    "id, received_at, source, line, event_id, event_name, ticket, size, truncated, data, deliveries"
)


def encode(event: NewEvent) -> tuple[Any, ...]:
    """The event's row without its `deliveries` (known only inside the transaction)."""
    text = dumps(event.data) or "{}"
    size = len(text)  # ASCII (the encoder escapes the rest), so characters are bytes
    truncated = size > MAX_STORED_EVENT_BYTES
    if truncated:
        text = text[:MAX_STORED_EVENT_BYTES]
    return (
        event.id, event.received_at, event.source, event.line, event.event_id, event.event_name,
        event.ticket, size, int(truncated), text,
    )  # fmt: skip


def insert(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[Any, ...]],
    deliveries: Sequence[NewDelivery],
    results: Sequence[tuple[str, bool]],
) -> None:
    """Store encoded events with, for each, its rules' deliveries (a duplicate: the earlier
    one). Inside enqueue's transaction; a delivery's own row names its event (`event_ref`)."""
    links: dict[str, dict[str, str]] = {}
    for d, (delivery_id, _) in zip(deliveries, results, strict=True):
        if d.event_ref is not None:
            links.setdefault(d.event_ref, {})[d.rule] = delivery_id
    conn.executemany(
        _INSERT, [(*row, dumps(links[row[0]]) if row[0] in links else None) for row in rows]
    )


def restore(conn: sqlite3.Connection, events: Sequence[StoredEvent]) -> int:
    """Insert events read from another store as they were (an id already here is kept)."""
    before = conn.total_changes
    conn.executemany(_INSERT, [_restored(e) for e in events])
    return conn.total_changes - before


def _restored(event: StoredEvent) -> tuple[Any, ...]:
    """A stored event's row again: a truncated one keeps its cut text, a whole one its data."""
    text = event.text if event.truncated else dumps(event.data)
    return (
        event.id, event.received_at, event.source, event.line, event.event_id, event.event_name,
        event.ticket, event.size, int(event.truncated), text or "",
        dumps(event.deliveries) if event.deliveries else None,
    )  # fmt: skip


def page(
    conn: sqlite3.Connection, *, after: str, before: str | None, limit: int = PAGE
) -> list[StoredEvent]:
    """Up to `limit` events with ids after `after` (and before `before`), oldest first."""
    if before is None:
        sql = f"SELECT {_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?"
        params: tuple[Any, ...] = (after, limit)
    else:
        sql = f"SELECT {_COLUMNS} FROM events WHERE id > ? AND id < ? ORDER BY id LIMIT ?"
        params = (after, before, limit)
    return [_stored(row) for row in conn.execute(sql, params)]


def window_bounds(since: float | None, until: float | None) -> tuple[str, str | None]:
    """The id range of events received in [since, until): ids are minted from that clock."""
    # The floor's prefix sorts below every id minted at or after `since` (its last digit is
    # the lowest), so `id > prefix` keeps the keyset condition the same on every page.
    after = event_id_floor(since)[:-1] if since is not None else ""
    return after, event_id_floor(until) if until is not None else None


def rule_names(conn: sqlite3.Connection, *, after: str, before: str | None) -> set[str]:
    """Every rule with a delivery on record for an event in the id range (its map only)."""
    sql = "SELECT deliveries FROM events WHERE id > ? AND deliveries IS NOT NULL"
    params: tuple[str, ...] = (after,)
    if before is not None:
        sql += " AND id < ?"
        params = (after, before)
    names: set[str] = set()
    for (links,) in conn.execute(sql, params):
        names.update(json.loads(links))
    return names


def get(conn: sqlite3.Connection, event_ref: str) -> StoredEvent | None:
    """One stored event by its id."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_ref,)).fetchone()
    return _stored(row) if row else None


def ref_of(conn: sqlite3.Connection, delivery_id: str) -> str | None:
    """The stored event a delivery was made for, if it was kept."""
    row = conn.execute("SELECT event_ref FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return row[0] if row else None


def recorded(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, RecordedRequest]:
    """The stored request of each of the deliveries `ids` still on record."""
    found: dict[str, RecordedRequest] = {}
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), PAGE):
        chunk = ordered[start : start + PAGE]
        cursor = conn.execute(
            "SELECT id, rule, status, ticket, request, body, unrendered FROM deliveries "
            f"WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for row in dicts(cursor):
            found[row["id"]] = RecordedRequest(
                id=row["id"],
                rule=row["rule"],
                status=row["status"],
                ticket=row["ticket"],
                request=row["request"],
                unrendered=bool(row["unrendered"]),
            )
    return found


def purge_ids(conn: sqlite3.Connection, *, before: str, limit: int) -> list[str]:
    """Delete up to `limit` of the oldest events with ids below `before`; their ids."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM events WHERE id < ? ORDER BY id LIMIT ?", (before, limit)
        )
    ]
    conn.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in ids])
    return ids


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    id_, received_at, source, line, event_id, name, ticket, size, truncated, text, links = row
    return StoredEvent(
        id=id_,
        received_at=received_at,
        source=source,
        line=line,
        event_id=event_id,
        event_name=name,
        ticket=ticket,
        size=size,
        truncated=bool(truncated),
        data=None if truncated else json.loads(text),
        deliveries=json.loads(links) if links else {},
        text=text if truncated else None,
    )


def iterate(
    read: Any, *, since: float | None, until: float | None, limit: int = PAGE
) -> Iterator[StoredEvent]:
    """Every event in the window, oldest first, one read transaction per page (`read` is the
    store's read-transaction context), so a long plan never holds writers back."""
    after, before = window_bounds(since, until)
    while True:
        with read() as conn:
            rows = page(conn, after=after, before=before, limit=limit)
        yield from rows
        if len(rows) < limit:
            return
        after = rows[-1].id


# Which filter's index drives a search, most selective first (m012_event_search): without
# statistics SQLite could walk the primary key instead and read every row to find one ticket.
_SEARCH_ORDER = ("ticket", "event_id", "source", "event_name")


def search(
    conn: sqlite3.Connection,
    *,
    filters: dict[str, str | None],
    since: float | None,
    limit: int,
) -> list[StoredEvent]:
    """The newest `limit` events passing exact-match `filters` (columns of _SEARCH_ORDER),
    received since `since`: an index seek, newest first, stopping at `limit`."""
    given = {column: filters.get(column) for column in _SEARCH_ORDER}
    driver = next((column for column in _SEARCH_ORDER if given[column] is not None), None)
    where: list[str] = []
    params: list[Any] = []
    for column, value in given.items():
        if value is not None:
            # A unary + keeps a term out of index selection, so only the driver's index is used.
            where.append(f"{'' if column == driver else '+'}{column} = ?")
            params.append(value)
    if since is not None:
        where.append("id > ?")
        params.append(window_bounds(since, None)[0])
    sql = (
        f"SELECT {_COLUMNS} FROM events"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY id DESC LIMIT ?"
    )
    return [_stored(row) for row in conn.execute(sql, [*params, limit])]


def deliveries_of(conn: sqlite3.Connection, event_ref: str, *, limit: int) -> list[Delivery]:
    """The deliveries made for one stored event, newest first (index deliveries_event_ref)."""
    rows = conn.execute(
        f"SELECT {history.DELIVERY_COLUMNS} FROM deliveries WHERE event_ref = ? "
        "ORDER BY id DESC LIMIT ?",
        (event_ref, limit),
    ).fetchall()
    paused, opened = endpoint_state.paused(conn), endpoint_state.opened(conn)
    found = [history.delivery(row, paused, opened) for row in rows]
    ordering.annotate(conn, found)
    return found
