"""Ordered delivery per key on PostgreSQL (issue 15): SQLite's ordering.py for many writers.

The same rules (store/contract.py, "Order per key"). What differs: places come from the
sequence `deliveries_order_seq`, and an enqueue takes a transaction-scoped advisory lock per
(rule, order_key) before it gives places and decides turns. Two clients enqueueing for one key
at once therefore go one after the other: the second sees the first's rows, so places follow
commit order and no two of one key are ever leased at once. Claims take no such lock: a
claim only ever takes the first pending delivery of a key (SKIP LOCKED keeps two claimers off
one row), and finishing one is a status change both snapshots agree on.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from hookctl.store.postgres.rows import text
from hookctl.store.records import Delivery, NewDelivery

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
_UNLEASE = f"""
UPDATE deliveries SET lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL, fence = 0
WHERE id = %(id)s AND lease_token IS NOT NULL AND NOT {IN_TURN}
RETURNING id
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
    that has a place keeps it: a retried transaction); when inserted `leased`, hand back the
    lease of each that is not its key's turn. Returns the ids left unleased."""
    if not keys:
        return set()
    # Locked one at a time in one order (by the lock's number), so two enqueues never wait
    # on each other (a deadlock would still only be a retried transaction).
    for lock in sorted({_lock_of(rule, key) for _, rule, key in keys}):
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, lock))
    waiting: set[str] = set()
    for delivery_id, _, key in keys:
        cur.execute(_PLACE, {"id": delivery_id, "key": key})
        if leased:
            cur.execute(_UNLEASE, {"id": delivery_id, "now": now})
            if cur.fetchone() is not None:
                waiting.add(delivery_id)
    return waiting


def annotate(cur: Any, rows: list[Delivery]) -> None:
    """What the log says of each keyed delivery (SQLite's ordering.annotate)."""
    for row in rows:
        if row.order_key is None:
            continue
        if row.status == "pending":
            cur.execute(_AHEAD, {"id": row.id})
            ahead = cur.fetchone()
            if ahead is not None:
                row.waiting_after, row.waiting_after_attempts = ahead[0], int(ahead[1])
        cur.execute(_BEFORE, {"id": row.id})
        before = cur.fetchone()
        if before is not None and before[1] == "failed":
            row.follows_failed = before[0]
