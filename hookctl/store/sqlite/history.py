"""Reading the execution log: filters, id prefixes, deliveries newest first, one in full, stats.

Plain functions over a connection; `Store` wraps them (and their transactions) in its API.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from hookctl.errors import UsageError
from hookctl.store.records import ID_CLOCK_SLACK, ID_PREFIX, id_floor
from hookctl.store.sqlite.rows import dicts

STATUSES = ("pending", "succeeded", "failed")
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
        raise UsageError(f"{delivery_id!r} matches more than one delivery; give more of the id")
    return matches[0][0] if matches else None


def select_ids(
    conn: sqlite3.Connection,
    *,
    ids: Sequence[str] = (),
    status: str | None = None,
    rule: str | None = None,
    since: float | None = None,
) -> list[str]:
    """Full ids, sorted, for ids or unique prefixes (UsageError for an unknown one) or filters."""
    if ids and (status is not None or rule is not None or since is not None):
        raise UsageError("select deliveries by id or by filters, not both")
    if not ids and status is None and rule is None and since is None:
        raise UsageError("nothing to requeue: give delivery ids or a filter")
    if ids:
        selected = []
        for given in ids:
            full_id = resolve_id(conn, given)
            if full_id is None:
                raise UsageError(f"no delivery {given!r}")
            selected.append(full_id)
        return sorted(set(selected))
    where, params = filters(status=status, rule=rule, since=since)
    sql = f"SELECT id FROM deliveries WHERE {' AND '.join(where)} ORDER BY id"
    return [row[0] for row in conn.execute(sql, params)]


def unrendered(conn: sqlite3.Connection, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The deliveries among `ids` whose request could not be rendered: rule, event and ticket."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), PAGE):
        chunk = list(ids[start : start + PAGE])
        found += dicts(
            conn.execute(
                "SELECT id, rule, status, ticket, event_id, event_name, event, error "
                f"FROM deliveries WHERE unrendered AND id IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY id",
                chunk,
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
) -> Iterator[dict[str, Any]]:
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
            "SELECT * FROM deliveries"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY id DESC LIMIT ?"
        )
        page_params = [*params, before] if before is not None else params
        rows = dicts(conn.execute(sql, [*page_params, page_size]))
        yield from rows
        if len(rows) < page_size:
            return
        before = rows[-1]["id"]
        if remaining is not None:
            remaining -= len(rows)


def get(conn: sqlite3.Connection, delivery_id: str) -> dict[str, Any] | None:
    """One delivery by id or unique prefix, with its "attempts" in order; None if absent."""
    full_id = resolve_id(conn, delivery_id)
    if full_id is None:
        return None
    (delivery,) = dicts(conn.execute("SELECT * FROM deliveries WHERE id = ?", (full_id,)))
    # The count (over the delivery's life, as the log numbers them) moves aside for the log.
    delivery["attempt_count"] = delivery["attempts"]
    delivery["attempts"] = dicts(
        conn.execute("SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number", (full_id,))
    )
    return delivery


def stats(conn: sqlite3.Connection, *, since: float | None = None) -> dict[str, Any]:
    """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
    where, params = filters(since=since)
    where_sql = f" WHERE {' AND '.join(where)}" if where else ""
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
            f"SELECT url, count(*), sum(status = 'failed') FROM deliveries{where_sql} GROUP BY url",
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


def _percentile(ordered: list[float], pct: int) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]
