"""The queue's SQL on PostgreSQL: claims, due counts, applying outcomes, requeues.

Moved out of store.py, which runs these inside its transactions (`PostgresStore._run`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hookctl.store.postgres import ordering
from hookctl.store.postgres.rows import CLAIM_COLUMNS

# A paused endpoint's deliveries are not due: held, their attempts and schedule untouched;
# nor are those of an endpoint whose rate schedule is full or that a Retry-After slowed
# (claim_after, m007_rate), nor an open one's (its breaker, store/breaker.py): claim()
# hands out its one probe apart. NOT EXISTS, not NOT IN: a row with no endpoint stays claimable.
_NOT_PAUSED = (
    "NOT EXISTS (SELECT 1 FROM endpoints AS e WHERE e.endpoint = deliveries.endpoint "
    "AND (e.paused_since IS NOT NULL OR e.opened_at IS NOT NULL OR e.claim_after > %(now)s))"
)
_IN_TURN = ordering.IN_TURN  # an ordered delivery waits for its turn (ordering.py)
_CLAIM_SET = (
    "UPDATE deliveries AS d SET lease_token = %(token)s, lease_expires_at = %(until)s, "
    "fence = d.fence + 1, lease_holder = %(holder)s FROM chosen WHERE d.id = chosen.id "
    f"RETURNING {CLAIM_COLUMNS}, d.next_attempt_at, d.seq"
)
# Expired leases (a crashed worker's) through deliveries_leased, the rest through
# deliveries_due; the oldest due of both are taken. SKIP LOCKED: rows another worker is
# claiming right now are passed over, never waited for.
CLAIM_DUE = f"""
WITH expired AS (
    SELECT id, next_attempt_at, seq FROM deliveries
    WHERE lease_token IS NOT NULL AND lease_expires_at <= %(now)s
        AND status = 'pending' AND next_attempt_at <= %(due)s AND {_NOT_PAUSED} AND {_IN_TURN}
    ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED
), fresh AS (
    SELECT id, next_attempt_at, seq FROM deliveries
    WHERE status = 'pending' AND lease_token IS NULL AND next_attempt_at <= %(due)s
        AND {_NOT_PAUSED} AND {_IN_TURN}
    ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED
), chosen AS (
    SELECT id FROM (SELECT * FROM expired UNION ALL SELECT * FROM fresh) AS both_kinds
    ORDER BY next_attempt_at, seq LIMIT %(limit)s
)
{_CLAIM_SET}
"""
CLAIM_IDS = f"""
WITH chosen AS (
    SELECT id FROM deliveries
    WHERE id = ANY(%(ids)s) AND status = 'pending' AND next_attempt_at <= %(due)s
        AND (lease_token IS NULL OR lease_expires_at <= %(now)s) AND {_NOT_PAUSED} AND {_IN_TURN}
    ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED
)
{_CLAIM_SET}
"""
# An open endpoint's probe: its oldest due delivery, leased like any claim.
CLAIM_PROBE = f"""
WITH chosen AS (
    SELECT id FROM deliveries
    WHERE endpoint = %(endpoint)s AND status = 'pending' AND next_attempt_at <= %(due)s
        AND (lease_token IS NULL OR lease_expires_at <= %(now)s) AND {_IN_TURN}
    ORDER BY next_attempt_at, seq LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED
)
{_CLAIM_SET}
"""
DUE_COUNT = f"""
SELECT (SELECT count(*) FROM deliveries
        WHERE status = 'pending' AND lease_token IS NULL AND next_attempt_at <= %(due)s
            AND {_NOT_PAUSED} AND {_IN_TURN})
     + (SELECT count(*) FROM deliveries
        WHERE lease_token IS NOT NULL AND lease_expires_at <= %(now)s
            AND status = 'pending' AND next_attempt_at <= %(due)s AND {_NOT_PAUSED} AND {_IN_TURN})
"""
_RESULTS = """
unnest(%(id)s::text[], %(token)s::text[], %(started_at)s::float8[], %(duration_ms)s::float8[],
    %(status_code)s::int[], %(error)s::text[], %(headers)s::text[], %(body)s::bytea[],
    %(status)s::text[], %(next_at)s::float8[], %(sent)s::bool[], %(free)s::bool[],
    %(applied)s::bool[])
    WITH ORDINALITY AS r(id, token, started_at, duration_ms, status_code, error, headers, body,
        status, next_at, sent, free, applied, n)
"""
# The fence: an outcome changes its delivery only while its token still holds the lease.
APPLY_RESULTS = f"""
UPDATE deliveries AS d SET
    attempts = d.attempts + r.sent::int, status = r.status, next_attempt_at = r.next_at,
    attempts_at_replay = d.attempts_at_replay + r.free::int,
    last_status_code = CASE WHEN r.sent THEN r.status_code ELSE d.last_status_code END,
    error = r.error, updated_at = %(now)s,
    first_attempt_at = CASE WHEN r.sent AND NOT r.free
        THEN COALESCE(d.first_attempt_at, r.started_at) ELSE d.first_attempt_at END,
    lease_token = NULL, lease_expires_at = NULL
FROM {_RESULTS}
WHERE d.id = r.id AND d.lease_token = r.token
RETURNING r.n
"""
# Logged even when the lease was lost: the request did happen. Numbers run over the delivery's
# life; the delivery rows are locked first, so two workers never take the same number.
INSERT_ATTEMPTS = f"""
INSERT INTO attempts (
    delivery_id, number, started_at, duration_ms, status_code, error, response_headers,
    response_body, token, applied
)
SELECT r.id,
    COALESCE((SELECT max(number) FROM attempts AS a WHERE a.delivery_id = r.id), 0)
        + row_number() OVER (PARTITION BY r.id ORDER BY r.n),
    r.started_at, r.duration_ms, r.status_code, r.error, r.headers, r.body, r.token, r.applied
FROM {_RESULTS}
WHERE r.sent AND EXISTS (SELECT 1 FROM deliveries AS d WHERE d.id = r.id)
"""
REQUEUE = """
UPDATE deliveries SET
    attempts_at_replay = CASE WHEN status = 'pending' THEN attempts_at_replay ELSE attempts END,
    replays = CASE WHEN status = 'pending' THEN replays ELSE replays + 1 END,
    first_attempt_at = CASE WHEN status = 'pending' THEN first_attempt_at END,
    lease_token = CASE WHEN status = 'pending' THEN lease_token END,
    lease_expires_at = CASE WHEN status = 'pending' THEN lease_expires_at END,
    status = 'pending', next_attempt_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s)
"""


def owners(cur: Any, keys: Sequence[tuple[str | None, str | None]]) -> dict[Any, str]:
    """Ids already stored for these (rule, dedupe_key) pairs."""
    if not keys:
        return {}
    rules, dedupe = [k[0] for k in keys], [k[1] for k in keys]
    cur.execute(
        "SELECT rule, dedupe_key, id FROM deliveries WHERE (rule, dedupe_key) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        (rules, dedupe),
    )
    return {(rule, key): delivery_id for rule, key, delivery_id in cur.fetchall()}


def exists(cur: Any, delivery_id: str) -> bool:
    cur.execute("SELECT 1 FROM deliveries WHERE id = %s", (delivery_id,))
    return cur.fetchone() is not None
