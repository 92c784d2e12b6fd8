"""Ordered delivery per key on PostgreSQL (issue 15): SQLite's ordering.py for many writers.

The same rules (store/contract.py, "Order per key"), the same parking (one queued out of its
turn waits at ORDER_PARKED_AT, out of the claims' range). What differs: places come from the
sequence `deliveries_order_seq`, and an enqueue takes a transaction-scoped advisory lock per
(rule, order_key) before it gives places, decides turns and parks. Two clients enqueueing for
one key at once therefore go one after the other: the second sees the first's rows, so places
follow commit order and no two of one key are ever leased at once. The outcome that finishes a
delivery takes the same lock before it unparks the next of its key, so an enqueue that parked
a delivery behind it (seeing it still pending) has committed by then and is seen. Claims take
no lock: a claim only ever takes the first pending delivery of a key (SKIP LOCKED keeps two
claimers off one row), and finishing one is a status change both snapshots agree on.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from hookctl.store.log_records import Delivery
from hookctl.store.postgres.rows import text
from hookctl.store.records import ORDER_PARKED_AT, NewDelivery

# pg_advisory_xact_lock(int, int) space (apart from the migrations' bigint key): "hkor".
LOCK_SPACE = 0x686B6F72

# The claim's condition, over an unaliased `deliveries` (as the paused check is written).
IN_TURN = (
    "(deliveries.order_key IS NULL OR (NOT EXISTS (SELECT 1 FROM deliveries AS o "
    "WHERE o.rule = deliveries.rule AND o.order_key = deliveries.order_key "
    "AND o.status = 'pending' AND o.order_seq < deliveries.order_seq) "
    "AND NOT EXISTS (SELECT 1 FROM deliveries AS o "
    "WHERE o.rule = deliveries.rule AND o.order_key = deliveries.order_key "
    "AND o.status = 'pending' AND o.lease_expires_at > %(now)s AND o.id <> deliveries.id)))"
)
_PLACE = """
UPDATE deliveries SET order_key = %(key)s, order_seq = nextval('deliveries_order_seq')
WHERE id = %(id)s AND order_seq IS NULL
"""
_PARK = f"""
UPDATE deliveries SET order_due = next_attempt_at, next_attempt_at = %(parked)s,
    lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL, fence = 0
WHERE id = %(id)s AND status = 'pending' AND next_attempt_at <> %(parked)s AND NOT {IN_TURN}
RETURNING id
"""
_UNPARK = """
UPDATE deliveries SET next_attempt_at = order_due, order_due = NULL
WHERE next_attempt_at = %(parked)s AND id = (
    SELECT n.id FROM deliveries AS n
    WHERE n.rule = %(rule)s AND n.order_key = %(key)s AND n.status = 'pending'
    ORDER BY n.order_seq LIMIT 1
)
"""
_AHEAD = """
SELECT o.id, o.attempts FROM deliveries AS o, deliveries AS d
WHERE d.id = %(id)s AND o.rule = d.rule AND o.order_key = d.order_key
    AND o.status = 'pending' AND o.order_seq < d.order_seq
ORDER BY o.order_seq LIMIT 1
"""
_BEFORE = """
SELECT o.id, o.status FROM deliveries AS o, deliveries AS d
WHERE d.id = %(id)s AND o.rule = d.rule AND o.order_key = d.order_key
    AND o.order_seq < d.order_seq
ORDER BY o.order_seq DESC LIMIT 1
"""


def _lock_of(rule: str, key: str) -> int:
    """The advisory lock's number for a (rule, key): a stable 32-bit hash (collisions only
    serialize two keys' enqueues)."""
    value = zlib.crc32(f"{rule}\x1f{key}".encode("utf-8", "surrogatepass"))
    return value - (1 << 32) if value >= 1 << 31 else value


def keyed(pairs: Iterable[tuple[str, NewDelivery]]) -> list[tuple[str, str, str]]:
    """(id, rule, order_key) of each (stored id, delivery) that has a key."""
    return [(i, d.rule, text(d.order_key) or "") for i, d in pairs if d.order_key is not None]


def place(cur: Any, keys: Sequence[tuple[str, str, str]], *, now: float, leased: bool) -> set[str]:
    """Lock each key, give each (id, rule, order_key) the next place in the order given (one
    that has a place keeps it: a retried transaction), and park each that is not its key's
    turn (its lease, when inserted `leased`, handed back). Returns the ids parked."""
    if not keys:
        return set()
    _lock(cur, {(rule, key) for _, rule, key in keys})
    waiting: set[str] = set()
    for delivery_id, _, key in keys:
        cur.execute(_PLACE, {"id": delivery_id, "key": key})
        cur.execute(_PARK, {"id": delivery_id, "now": now, "parked": ORDER_PARKED_AT})
        if cur.fetchone() is not None:
            waiting.add(delivery_id)
    return waiting


def _lock(cur: Any, pairs: Iterable[tuple[str, str]]) -> None:
    """The keys' advisory locks, one at a time in one order (by the lock's number), so two
    transactions never wait on each other (a deadlock would still only be a retry)."""
    for lock in sorted({_lock_of(rule, key) for rule, key in pairs}):
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, lock))


def unpark_next(cur: Any, finished: Sequence[str]) -> None:
    """After deliveries finished (succeeded or failed for good), in the same transaction:
    under each key's lock, the next pending delivery of the key, if parked, is due at its own
    time again. One statement for a batch without ordered deliveries."""
    if not finished:
        return
    cur.execute(
        "SELECT DISTINCT rule, order_key FROM deliveries "
        "WHERE id = ANY(%s) AND order_key IS NOT NULL",
        (list(finished),),
    )
    pairs = sorted((rule, key) for rule, key in cur.fetchall())
    if not pairs:
        return
    _lock(cur, pairs)
    for rule, key in pairs:
        cur.execute(_UNPARK, {"rule": rule, "key": key, "parked": ORDER_PARKED_AT})


def annotate(cur: Any, rows: list[Delivery]) -> None:
    """What the log says of each keyed delivery (SQLite's ordering.annotate)."""
    for row in rows:
        if row.order_key is None:
            continue
        if row.next_attempt_at == ORDER_PARKED_AT:
            cur.execute("SELECT order_due FROM deliveries WHERE id = %s", (row.id,))
            row.next_attempt_at = cur.fetchone()[0]  # parked: its own time
        if row.status == "pending":
            cur.execute(_AHEAD, {"id": row.id})
            ahead = cur.fetchone()
            if ahead is not None:
                row.waiting_after, row.waiting_after_attempts = ahead[0], int(ahead[1])
        cur.execute(_BEFORE, {"id": row.id})
        before = cur.fetchone()
        if before is not None and before[1] == "failed":
            row.follows_failed = before[0]
