"""Ordered delivery per key on SQLite (issue 15): places in a key's sequence, whose turn it is.

A delivery with an `order_key` (its rule's rendered `order_by:`) is claimable only while no
other delivery of its (rule, order_key) is pending before it in the sequence, and none is in
flight (a live lease: after a replay, the one already sent finishes first). A delivery that
failed for good is not pending, so it never blocks the next. Every write holds SQLite's write
lock, so the places and the turn are decided one transaction at a time, across processes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from hookctl.store.records import Delivery, NewDelivery

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
_UNLEASE = f"""
UPDATE deliveries SET lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL, fence = 0
WHERE id = :id AND lease_token IS NOT NULL AND NOT {IN_TURN}
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
    that has a place keeps it); when they were inserted `leased`, hand back the lease of each
    that is not its key's turn.

    Returns the ids left unleased (they wait: a later claim takes them in turn)."""
    waiting: set[str] = set()
    for delivery_id, rule, key in keys:
        conn.execute(_PLACE, {"id": delivery_id, "rule": rule, "key": key})
        if leased and conn.execute(_UNLEASE, {"id": delivery_id, "now": now}).rowcount:
            waiting.add(delivery_id)
    return waiting


def annotate(conn: sqlite3.Connection, rows: list[Delivery]) -> None:
    """Fill in what the log says of each keyed delivery: what it waits for, and whether the
    one before it failed for good (read now: it changes as its key's deliveries finish)."""
    for row in rows:
        if row.order_key is None:
            continue
        (seq,) = conn.execute("SELECT order_seq FROM deliveries WHERE id = ?", (row.id,)).fetchone()
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
