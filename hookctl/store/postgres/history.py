"""Reading the execution log on PostgreSQL: filters, id prefixes, newest first, one in full, stats
(and purging its finished deliveries).

Plain functions over a cursor, as sqlite/history.py is; `PostgresStore` wraps them in its API
(and its transactions and reconnects). The answers are the SQLite store's, key for key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hookctl.store.errors import AmbiguousId, BadSelection, UnknownDelivery
from hookctl.store.ids import ID_CLOCK_SLACK, ID_PREFIX, id_floor
from hookctl.store.log_records import Delivery, DeliveryDetail, Stats, Unrendered
from hookctl.store.postgres import endpoints as endpoint_state
from hookctl.store.postgres import ordering, rows
from hookctl.store.postgres.rows import ATTEMPT_COLUMNS, DELIVERY_COLUMNS, DETAIL_COLUMNS
from hookctl.store.records import STATUSES
from hookctl.store.summaries import stats_from

PAGE = 500  # rows per keyset page of the log

Cursor = Any  # psycopg.Cursor; Any so this module imports without the driver


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
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("rule", rule), ("ticket", ticket)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(str(value))
    if since is not None:
        # The id bound lets the index seek; created_at keeps the answer exact.
        where.append("id >= %s AND created_at >= %s")
        params.extend([id_floor(since - ID_CLOCK_SLACK), since])
    return where, params


def resolve_id(cur: Cursor, delivery_id: str) -> str | None:
    """The full id for an id or a unique prefix of one (case-insensitive, "msg_" optional)."""
    cur.execute("SELECT 1 FROM deliveries WHERE id = %s", (delivery_id,))
    if cur.fetchone():
        return delivery_id
    prefix = delivery_id.strip()
    if prefix[: len(ID_PREFIX)].lower() == ID_PREFIX:
        prefix = prefix[len(ID_PREFIX) :]
    prefix = ID_PREFIX + prefix.upper()
    cur.execute(
        "SELECT id FROM deliveries WHERE id >= %s AND id < %s ORDER BY id LIMIT 2",
        (prefix, prefix + "~"),
    )
    matches = cur.fetchall()
    if len(matches) > 1:
        raise AmbiguousId(f"{delivery_id!r} matches more than one delivery; give more of the id")
    return str(matches[0][0]) if matches else None


def select_ids(
    cur: Cursor,
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
            full_id = resolve_id(cur, given)
            if full_id is None:
                raise UnknownDelivery(f"no delivery {given!r}")
            selected.append(full_id)
        return sorted(set(selected))
    where, params = filters(status=status, rule=rule, since=since)
    cur.execute(f"SELECT id FROM deliveries WHERE {' AND '.join(where)} ORDER BY id", params)
    return [row[0] for row in cur]


def unrendered(cur: Cursor, ids: Sequence[str]) -> list[Unrendered]:
    """The deliveries among `ids` whose request could not be rendered: rule, event and ticket."""
    if not ids:
        return []
    cur.execute(
        f"SELECT {', '.join(rows.UNRENDERED_NAMES)} FROM deliveries "
        "WHERE unrendered AND id = ANY(%s) ORDER BY id",
        (list(ids),),
    )
    return rows.unrendered(cur.fetchall())


def statuses(cur: Cursor, ids: Sequence[str]) -> dict[str, str]:
    """The status of each of `ids` that exists."""
    if not ids:
        return {}
    cur.execute("SELECT id, status FROM deliveries WHERE id = ANY(%s)", (list(ids),))
    return dict(cur.fetchall())


def page(
    cur: Cursor, where: list[str], params: list[Any], before: str | None, size: int
) -> list[Delivery]:
    """One keyset page of the log: up to `size` deliveries newest first, older than `before`."""
    clauses = [*where, "id < %s"] if before is not None else where
    sql = (
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
        + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        + " ORDER BY id DESC LIMIT %s"
    )
    cur.execute(sql, [*params, *([before] if before is not None else []), size])
    found = cur.fetchall()
    held = endpoint_state.paused(cur)  # a handful of rows: read with each page
    opened = endpoint_state.opened(cur)
    listed = [rows.delivery(row, held, opened) for row in found]
    ordering.annotate(cur, listed)
    return listed


def get(cur: Cursor, delivery_id: str) -> DeliveryDetail | None:
    """One delivery by id or unique prefix, with its attempts in order; None if absent."""
    full_id = resolve_id(cur, delivery_id)
    if full_id is None:
        return None
    cur.execute(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = %s", (full_id,))
    (summary,) = cur.fetchall()
    cur.execute(f"SELECT {DETAIL_COLUMNS} FROM deliveries WHERE id = %s", (full_id,))
    (stored,) = cur.fetchall()
    cur.execute(
        f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = %s ORDER BY number",
        (full_id,),
    )
    attempts = cur.fetchall()
    row = rows.delivery(summary, endpoint_state.paused(cur), endpoint_state.opened(cur))
    ordering.annotate(cur, [row])
    return rows.detail(row, stored, attempts)


def stats(cur: Cursor, *, since: float | None = None) -> Stats:
    """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
    where, params = filters(since=since)
    where_sql = f" WHERE {' AND '.join(where)}" if where else ""
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
    by_rule: dict[str, dict[str, int]] = {}
    cur.execute(
        f"SELECT rule, status, count(*) FROM deliveries{where_sql} GROUP BY rule, status", params
    )
    for rule, status, count in cur.fetchall():
        by_status[status] += count
        counts = by_rule.setdefault(rule, {**dict.fromkeys(STATUSES, 0), "total": 0})
        counts[status] += count
        counts["total"] += count
    cur.execute(
        "SELECT url, count(*), count(*) FILTER (WHERE status = 'failed') "
        f"FROM deliveries{where_sql} GROUP BY url",
        params,
    )
    urls: dict[str, dict[str, Any]] = {
        url: {"url": url, "deliveries": n, "failed": failed, "failed_attempts": 0}
        for url, n, failed in cur.fetchall()
    }
    cur.execute(
        "SELECT d.url, a.duration_ms, a.error IS NOT NULL FROM attempts a "
        f"JOIN (SELECT id, url FROM deliveries{where_sql}) d ON d.id = a.delivery_id",
        params,
    )
    attempts = cur.fetchall()
    return stats_from(since, by_status, by_rule, urls, attempts)


def purge_finished(cur: Cursor, retry: bool, *, older_than: float, limit: int) -> int:
    """Delete up to `limit` finished deliveries last updated before `older_than`, with their
    attempts; how many."""
    cur.execute(
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "
        "WHERE status IN ('succeeded', 'failed') AND updated_at < %s LIMIT %s "
        "FOR UPDATE SKIP LOCKED) RETURNING id",
        (older_than, limit),
    )
    ids = [row[0] for row in cur.fetchall()]
    # Their attempts in the same transaction (there is no cascading foreign key).
    cur.execute("DELETE FROM attempts WHERE delivery_id = ANY(%s)", (ids,))
    return len(ids)
