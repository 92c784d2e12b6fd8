"""Reading the execution log: filters, id prefixes, deliveries newest first, one in full, stats.

Plain functions over a connection; `Store` wraps them (and their transactions) in its API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from hookctl.store.errors import AmbiguousId, BadSelection, UnknownDelivery
from hookctl.store.ids import ID_CLOCK_SLACK, ID_PREFIX, id_floor
from hookctl.store.log_records import Attempt, Delivery, DeliveryDetail, Stats, Unrendered
from hookctl.store.records import STATUSES
from hookctl.store.sqlite import endpoints as endpoint_state
from hookctl.store.sqlite import ordering
from hookctl.store.sqlite.rows import dicts
from hookctl.store.summaries import stats_from

# What the log lists: the row without its request, event or policy (no JSON to parse).
DELIVERY_COLUMNS = (
    "id, rule, status, attempts, replays, method, url, last_status_code AS status_code, error, "
    "ticket, event_id, event_name, dedupe_key, created_at, updated_at, first_attempt_at, "
    "next_attempt_at, lease_expires_at, unrendered, endpoint, order_key"
)
ATTEMPT_COLUMNS = (
    "delivery_id, number, started_at, duration_ms, status_code, error, response_headers, "
    "response_body"
)
PAGE = 500  # rows per keyset page / per IN (...) list, well under SQLite's variable limit


def filters(
    *,
    status: str | None = None,
    rule: str | None = None,
    ticket: str | None = None,
    since: float | None = None,
) -> tuple[list[str], list[Any]]:
    """WHERE terms and their parameters for the log's filters; `since` is creation time."""
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
        params.extend([id_floor(since - ID_CLOCK_SLACK), since])
    return where, params


def resolve_id(conn: sqlite3.Connection, delivery_id: str) -> str | None:
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
        raise AmbiguousId(f"{delivery_id!r} matches more than one delivery; give more of the id")
    return matches[0][0] if matches else None


def select_ids(
    conn: sqlite3.Connection,
    *,
    ids: Sequence[str] = (),
    status: str | None = None,
    rule: str | None = None,
    since: float | None = None,
) -> list[str]:
    """Full ids, sorted, for ids or unique prefixes (UnknownDelivery for an unknown one) or
    filters."""
    if ids and (status is not None or rule is not None or since is not None):
        raise BadSelection("select deliveries by id or by filters, not both")
    if not ids and status is None and rule is None and since is None:
        raise BadSelection("nothing to requeue: give delivery ids or a filter")
    if ids:
        selected = []
        for given in ids:
            full_id = resolve_id(conn, given)
            if full_id is None:
                raise UnknownDelivery(f"no delivery {given!r}")
            selected.append(full_id)
        return sorted(set(selected))
    where, params = filters(status=status, rule=rule, since=since)
    sql = f"SELECT id FROM deliveries WHERE {' AND '.join(where)} ORDER BY id"
    return [row[0] for row in conn.execute(sql, params)]


def unrendered(conn: sqlite3.Connection, ids: Sequence[str]) -> list[Unrendered]:
    """The deliveries among `ids` whose request could not be rendered: rule, event and ticket."""
    found: list[Unrendered] = []
    for start in range(0, len(ids), PAGE):
        chunk = list(ids[start : start + PAGE])
        found += (
            Unrendered(**row)
            for row in dicts(
                conn.execute(
                    "SELECT id, rule, status, ticket, event_id, event_name, event, error "
                    f"FROM deliveries WHERE unrendered AND id IN ({', '.join('?' * len(chunk))}) "
                    "ORDER BY id",
                    chunk,
                )
            )
        )
    return found


def statuses(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    """The status of each of `ids` that exists."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), PAGE):
        chunk = list(ids[start : start + PAGE])
        sql = f"SELECT id, status FROM deliveries WHERE id IN ({', '.join('?' * len(chunk))})"
        found.update(conn.execute(sql, chunk).fetchall())
    return found


def query(
    conn: sqlite3.Connection,
    *,
    status: str | None = None,
    rule: str | None = None,
    ticket: str | None = None,
    since: float | None = None,
    limit: int | None = 50,
) -> Iterator[Delivery]:
    """Deliveries newest first, filtered; limit None or 0 = all."""
    where, params = filters(status=status, rule=rule, ticket=ticket, since=since)
    remaining = limit or None
    before: str | None = None
    # Keyset pages instead of one long-running cursor: no statement stays open between
    # yields, so the caller may write to the store while iterating.
    while remaining is None or remaining > 0:
        page_size = PAGE if remaining is None else min(PAGE, remaining)
        clauses = [*where, "id < ?"] if before is not None else where
        sql = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY id DESC LIMIT ?"
        )
        page_params = [*params, before] if before is not None else params
        held = endpoint_state.paused(conn)  # a handful of rows: read with each page
        opened = endpoint_state.opened(conn)
        rows = [delivery(row, held, opened) for row in conn.execute(sql, [*page_params, page_size])]
        ordering.annotate(conn, rows)
        yield from rows
        if len(rows) < page_size:
            return
        before = rows[-1].id
        if remaining is not None:
            remaining -= len(rows)


def delivery(
    row: Sequence[Any],
    paused: dict[str, tuple[float, str | None]],
    opened: dict[str, tuple[float, float | None]] | None = None,
) -> Delivery:
    """A row of DELIVERY_COLUMNS as a Delivery; `paused` (endpoints.paused) says if it is held,
    `opened` (endpoints.opened) if its endpoint's breaker is open."""
    (id_, rule, status, attempts, replays, method, url, status_code, error, ticket, event_id,
     event_name, dedupe_key, created, updated, first, next_at, lease, unrendered,
     endpoint, order_key) = row  # fmt: skip
    return Delivery(
        id=id_, rule=rule, status=status, attempts=attempts, replays=replays, method=method,
        url=url, status_code=status_code, error=error, ticket=ticket, event_id=event_id,
        event_name=event_name, dedupe_key=dedupe_key, created_at=created, updated_at=updated,
        first_attempt_at=first, next_attempt_at=next_at, lease_expires_at=lease,
        unrendered=bool(unrendered), endpoint=endpoint,
        paused_since=paused[endpoint][0] if endpoint in paused else None, order_key=order_key,
        open_since=opened[endpoint][0] if opened and endpoint in opened else None,
        next_probe_at=opened[endpoint][1] if opened and endpoint in opened else None,
    )  # fmt: skip


def get(conn: sqlite3.Connection, delivery_id: str) -> DeliveryDetail | None:
    """One delivery by id or unique prefix, with its attempts in order; None if absent."""
    full_id = resolve_id(conn, delivery_id)
    if full_id is None:
        return None
    (summary,) = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (full_id,)
    ).fetchall()
    (stored,) = dicts(
        conn.execute(
            "SELECT request, body, policy, timeout, accept, on_failure, event, event_ref "
            "FROM deliveries "
            "WHERE id = ?",
            (full_id,),
        )
    )
    log = dicts(
        conn.execute(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ? ORDER BY number",
            (full_id,),
        )
    )
    row = delivery(summary, endpoint_state.paused(conn), endpoint_state.opened(conn))
    ordering.annotate(conn, [row])
    return DeliveryDetail(
        delivery=row,
        **stored,
        attempt_log=[Attempt(**a) for a in log],
    )


def stats(conn: sqlite3.Connection, *, since: float | None = None) -> Stats:
    """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
    where, params = filters(since=since)
    where_sql = f" WHERE {' AND '.join(where)}" if where else ""
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
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
            f"SELECT url, count(*), sum(status = 'failed') FROM deliveries{where_sql} GROUP BY url",
            params,
        )
    }
    attempts = conn.execute(
        "SELECT d.url, a.duration_ms, a.error IS NOT NULL FROM attempts a "
        f"JOIN (SELECT id, url FROM deliveries{where_sql}) d ON d.id = a.delivery_id",
        params,
    ).fetchall()
    return stats_from(since, by_status, by_rule, urls, attempts)
