"""The queue's SQL on SQLite: expiring a dead holder's leases, finding dedupe keys taken.

Used by store_queue.py and store.py, which run these inside `SQLiteStore._write` transactions.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence

from hookctl.store.records import NewDelivery
from hookctl.store.sqlite.history import PAGE

# A dead holder's claims become due at once: expire the leases it still holds.
EXPIRE_HOLDER = """
UPDATE deliveries SET lease_expires_at = :now
WHERE status = 'pending' AND lease_holder = :holder AND lease_token IS NOT NULL
    AND lease_expires_at > :now
"""


def existing_dedupe(
    conn: sqlite3.Connection, deliveries: Sequence[NewDelivery]
) -> dict[tuple[str, str | None], str]:
    """Ids already stored for the batch's (rule, dedupe_key) pairs."""
    keys_by_rule: dict[str, set[str]] = defaultdict(set)
    for d in deliveries:
        if d.dedupe_key is not None:
            keys_by_rule[d.rule].add(d.dedupe_key)
    found: dict[tuple[str, str | None], str] = {}
    for rule, keys in keys_by_rule.items():
        ordered = sorted(keys)
        for start in range(0, len(ordered), PAGE):
            chunk = ordered[start : start + PAGE]
            sql = (
                "SELECT dedupe_key, id FROM deliveries WHERE rule = ? "
                f"AND dedupe_key IN ({', '.join('?' * len(chunk))})"
            )
            for key, delivery_id in conn.execute(sql, [rule, *chunk]):
                found[(rule, key)] = delivery_id
    return found
