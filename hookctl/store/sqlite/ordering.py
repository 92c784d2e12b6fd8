"""Ordered delivery per key on SQLite (issue 15): places in a key's sequence, whose turn it is.

A delivery with an `order_key` (its rule's rendered `order_by:`) is claimable only while no
other delivery of its (rule, order_key) is pending before it in the sequence, and none is in
flight (a live lease: after a replay, the one already sent finishes first). A delivery that
failed for good is not pending, so it never blocks the next. Every write holds SQLite's write
lock, so the places and the turn are decided one transaction at a time, across processes.

One queued out of its turn is *parked*: its next attempt moves to PARKED_AT (its own time
kept in `order_due`), out of the claims' range, so a claim never walks past a backlog of
waiting deliveries. When a delivery of the key finishes (succeeded or failed for good), the
same transaction puts the key's next pending one back at its own time. The turn condition
(IN_TURN) stays the rule; parking only keeps claims cheap.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from hookctl.store.log_records import Delivery
from hookctl.store.records import ORDER_PARKED_AT, NewDelivery

# The claim's condition (inside READY, over an unaliased `deliveries`): a row without a key
# always passes, untouched; a keyed one makes two range seeks, one in deliveries_order_pending
# (an earlier one pending) and one in deliveries_order_leased (one of its key in flight), so
# neither walks the deliveries waiting behind it.
IN_TURN = (
    "(order_key IS NULL OR (NOT EXISTS (SELECT 1 FROM deliveries AS o "
    "WHERE o.rule = deliveries.rule AND o.order_key = deliveries.order_key "
    "AND o.status = 'pending' AND o.order_seq < deliveries.order_seq) "
    "AND NOT EXISTS (SELECT 1 FROM deliveries AS o "
    "WHERE o.rule = deliveries.rule AND o.order_key = deliveries.order_key "
    "AND o.status = 'pending' AND o.lease_expires_at > :now AND o.id != deliveries.id)))"
)
_PLACE = """
UPDATE deliveries SET order_key = :key, order_seq = 1 + coalesce((
    SELECT max(o.order_seq) FROM deliveries AS o WHERE o.rule = :rule AND o.order_key = :key
), 0)
WHERE id = :id AND order_seq IS NULL
"""
_PARK = f"""
UPDATE deliveries SET order_due = next_attempt_at, next_attempt_at = :parked,
    lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL, fence = 0
WHERE id = :id AND status = 'pending' AND next_attempt_at != :parked AND NOT {IN_TURN}
"""
# The next of each finished delivery's key, back at its own time (if it was parked).
_UNPARK = """
UPDATE deliveries SET next_attempt_at = order_due, order_due = NULL
WHERE next_attempt_at = :parked AND id = (
    SELECT n.id FROM deliveries AS d, deliveries AS n
    WHERE d.id = :id AND n.rule = d.rule AND n.order_key = d.order_key AND n.status = 'pending'
    ORDER BY n.order_seq LIMIT 1
)
"""
# The earliest pending one before it (what it waits for), and the one just before it.
_AHEAD = """
SELECT id, attempts FROM deliveries WHERE rule = :rule AND order_key = :key
    AND status = 'pending' AND order_seq < :seq ORDER BY order_seq LIMIT 1
"""
_BEFORE = """
SELECT id, status FROM deliveries WHERE rule = :rule AND order_key = :key AND order_seq < :seq
ORDER BY order_seq DESC LIMIT 1
"""


def keyed(pairs: Iterable[tuple[str, NewDelivery]]) -> list[tuple[str, str, str]]:
    """(id, rule, order_key) of each (stored id, delivery) that has a key."""
    return [(i, d.rule, d.order_key) for i, d in pairs if d.order_key is not None]


def place(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str, str]], *, now: float, leased: bool
) -> set[str]:
    """Give each (id, rule, order_key) the next place of its key, in the order given (a row
    that has a place keeps it), and park each that is not its key's turn (its lease, when
    inserted `leased`, handed back).

    Returns the ids parked (they wait: a claim takes them in turn)."""
    waiting: set[str] = set()
    for delivery_id, rule, key in keys:
        conn.execute(_PLACE, {"id": delivery_id, "rule": rule, "key": key})
        bind = {"id": delivery_id, "now": now, "parked": ORDER_PARKED_AT}
        if conn.execute(_PARK, bind).rowcount:
            waiting.add(delivery_id)
    return waiting


def unpark_next(conn: sqlite3.Connection, finished: Sequence[str]) -> None:
    """After deliveries finished (succeeded or failed for good), in the same transaction: the
    next pending delivery of each one's key, if parked, is due at its own time again. A
    delivery without a key costs one primary-key lookup."""
    conn.executemany(_UNPARK, [{"id": i, "parked": ORDER_PARKED_AT} for i in finished])


def annotate(conn: sqlite3.Connection, rows: list[Delivery]) -> None:
    """Fill in what the log says of each keyed delivery: what it waits for, and whether the
    one before it failed for good (read now: it changes as its key's deliveries finish)."""
    for row in rows:
        if row.order_key is None:
            continue
        seq, due = conn.execute(
            "SELECT order_seq, order_due FROM deliveries WHERE id = ?", (row.id,)
        ).fetchone()
        if row.next_attempt_at == ORDER_PARKED_AT:
            row.next_attempt_at = due  # parked: its own time, as it would be sent
        if seq is None:
            continue
        bind = {"rule": row.rule, "key": row.order_key, "seq": seq}
        if row.status == "pending":
            ahead = conn.execute(_AHEAD, bind).fetchone()
            if ahead is not None:
                row.waiting_after, row.waiting_after_attempts = ahead[0], int(ahead[1])
        before = conn.execute(_BEFORE, bind).fetchone()
        if before is not None and before[1] == "failed":
            row.follows_failed = before[0]
