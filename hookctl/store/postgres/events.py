"""Stored events on PostgreSQL: kept in the outbox transaction, read back by window, purged.

The same table and rules as SQLite's events.py (migration m003_events): an event's record and
its deliveries commit together; `plan` reads them a page at a time; an event's JSON beyond
MAX_STORED_EVENT_BYTES is cut and marked `truncated`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hookctl.store.event_records import NewEvent, RecordedRequest, StoredEvent
from hookctl.store.log_records import Delivery
from hookctl.store.postgres import history
from hookctl.store.postgres.rows import (
    EVENT_COLUMNS,
    dumps,
    event_params,
    recorded,
    stored_event,
    text,
)
from hookctl.store.records import NewDelivery
from hookctl.store.sqlite.events import MAX_STORED_EVENT_BYTES, window_bounds

__all__ = ["PAGE", "get", "insert", "page", "purge_ids", "ref_of", "requests", "restore"]
__all__ += ["deliveries_of", "rule_names", "search", "window_bounds"]

PAGE = 500  # events per read page

Cursor = Any  # psycopg.Cursor; Any so this module imports without the driver

_INSERT = f"""
INSERT INTO events ({EVENT_COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""


def insert(
    cur: Cursor,
    events: Sequence[NewEvent],
    deliveries: Sequence[NewDelivery],
    results: Sequence[tuple[str, bool]],
) -> None:
    """Store events with, for each, its rules' deliveries (a duplicate: the earlier one).
    Inside enqueue's transaction; a delivery's own row names its event (`event_ref`)."""
    links: dict[str, dict[str, str]] = {}
    for d, (delivery_id, _) in zip(deliveries, results, strict=True):
        if d.event_ref is not None:
            links.setdefault(d.event_ref, {})[d.rule] = delivery_id
    cur.executemany(
        _INSERT,
        [
            [
                *event_params(e, MAX_STORED_EVENT_BYTES),
                dumps(links[e.id]) if e.id in links else None,
            ]
            for e in events
        ],
    )


def restore(cur: Cursor, events: Sequence[StoredEvent]) -> int:
    """Insert events read from another store as they were (an id already here is kept)."""
    cur.executemany(_INSERT, [_restored(e) for e in events])
    return int(cur.rowcount)  # psycopg >= 3.1: summed over the batch; skipped ones count 0


def _restored(e: StoredEvent) -> list[Any]:
    """A stored event's row again: a truncated one keeps its cut text, a whole one its data."""
    data = e.text if e.truncated else dumps(e.data)
    return [
        e.id, e.received_at, text(e.source), e.line, text(e.event_id), text(e.event_name),
        text(e.ticket), e.size, e.truncated, data or "",
        dumps(e.deliveries) if e.deliveries else None,
    ]  # fmt: skip


def page(cur: Cursor, *, after: str, before: str | None, limit: int = PAGE) -> list[StoredEvent]:
    """Up to `limit` events with ids after `after` (and before `before`), oldest first."""
    if before is None:
        cur.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id > %s ORDER BY id LIMIT %s",
            (after, limit),
        )
    else:
        cur.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id > %s AND id < %s ORDER BY id LIMIT %s",
            (after, before, limit),
        )
    return [stored_event(row) for row in cur.fetchall()]


def rule_names(cur: Cursor, *, after: str, before: str | None) -> set[str]:
    """Every rule with a delivery on record for an event in the id range (its map only)."""
    sql = "SELECT deliveries FROM events WHERE id > %s AND deliveries IS NOT NULL"
    params: tuple[str, ...] = (after,)
    if before is not None:
        sql += " AND id < %s"
        params = (after, before)
    cur.execute(sql, params)
    names: set[str] = set()
    for (links,) in cur.fetchall():
        names.update(json.loads(links))
    return names


def get(cur: Cursor, event_ref: str) -> StoredEvent | None:
    """One stored event by its id."""
    cur.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_ref,))
    row = cur.fetchone()
    return stored_event(row) if row else None


def ref_of(cur: Cursor, delivery_id: str) -> str | None:
    """The stored event a delivery was made for, if it was kept."""
    cur.execute("SELECT event_ref FROM deliveries WHERE id = %s", (delivery_id,))
    row = cur.fetchone()
    return row[0] if row else None


def requests(cur: Cursor, ids: Sequence[str]) -> dict[str, RecordedRequest]:
    """The stored request of each of the deliveries `ids` still on record."""
    if not ids:
        return {}
    cur.execute(
        "SELECT id, rule, status, ticket, request, body, unrendered FROM deliveries "
        "WHERE id = ANY(%s)",
        (sorted(set(ids)),),
    )
    return recorded(cur.fetchall())


def purge_ids(cur: Cursor, *, before: str, limit: int) -> list[str]:
    """Delete up to `limit` of the oldest events with ids below `before`; their ids."""
    cur.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < %s ORDER BY id "
        "LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
        (before, limit),
    )
    return [row[0] for row in cur.fetchall()]


def search(
    cur: Cursor, *, filters: dict[str, str | None], since: float | None, limit: int
) -> list[StoredEvent]:
    """The newest `limit` events passing exact-match `filters` (by column), received since
    `since`; the planner picks among the m008_event_search indexes."""
    where: list[str] = []
    params: list[Any] = []
    for column in ("source", "event_name", "ticket", "event_id"):
        value = filters.get(column)
        if value is not None:
            where.append(f"{column} = %s")
            params.append(text(value))
    if since is not None:
        where.append("id > %s")
        params.append(window_bounds(since, None)[0])
    cur.execute(
        f"SELECT {EVENT_COLUMNS} FROM events"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY id DESC LIMIT %s",
        [*params, limit],
    )
    return [stored_event(row) for row in cur.fetchall()]


def deliveries_of(cur: Cursor, event_ref: str, *, limit: int) -> list[Delivery]:
    """The deliveries made for one stored event, newest first (index deliveries_event_ref)."""
    return history.page(cur, ["event_ref = %s"], [event_ref], None, limit)
