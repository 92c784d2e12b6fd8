"""The queue on PostgreSQL: enqueue, claim, complete, leases, requeue, due counts, and their SQL.

Each operation is a function of the cursor (and `retry`, whether the transaction is being run
again) that store.py runs inside its transactions (`PostgresStore._run`); the class keeps its
own state (which ids it holds leased, whether its holder is registered) and updates it after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hookctl.store.event_records import NewEvent
from hookctl.store.ids import ID_CLOCK_SLACK, ID_PATTERN, id_floor
from hookctl.store.log_records import QueueLevels
from hookctl.store.postgres import endpoints as endpoint_state
from hookctl.store.postgres import events as stored_events
from hookctl.store.postgres import history, ordering
from hookctl.store.postgres.rows import (
    CLAIM_COLUMNS,
    INSERT_DELIVERY,
    REPLACE_REQUEST,
    claims,
    delivery_params,
    request_params,
)
from hookctl.store.records import STATUSES, AttemptResult, Claim, NewDelivery

Cursor = Any  # psycopg.Cursor; Any so this module imports without the driver
# store.py's lease-holder hooks: register this holder, make dead holders' claims due.
HolderHook = Callable[[Cursor, float], None]

CHANNEL = "hookctl_due"  # NOTIFY channel: deliveries became due (enqueued, released, replayed)

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


def check_new(deliveries: Sequence[NewDelivery], *, now: float) -> None:
    """Refuse ids new_delivery_id() did not make, or minted too far from `now`."""
    lowest, beyond = id_floor(now - ID_CLOCK_SLACK), id_floor(now + ID_CLOCK_SLACK + 0.001)
    for d in deliveries:
        if not ID_PATTERN.match(d.id):
            raise ValueError(f"delivery id {d.id!r} was not made by new_delivery_id()")
        if not lowest <= d.id < beyond:
            raise ValueError(f"delivery id {d.id!r} was minted too far from now={now!r}")


def enqueue(
    cur: Cursor,
    retry: bool,
    *,
    deliveries: Sequence[NewDelivery],
    rows: Sequence[Any],
    keys: Sequence[tuple[str | None, str | None]],
    events: Sequence[NewEvent],
    now: float,
    claim_token: str | None,
    waiting: set[str],
    register: HolderHook,
) -> list[tuple[str, bool]]:
    """Insert `rows` (of `deliveries`) and `events`; (id, False) for a duplicate. `waiting` is
    refilled with the ordered ones inserted unleased, not in their turn."""
    if claim_token is not None:
        register(cur, now)
    seen = owners(cur, [k for k in keys if k[1] is not None])
    results: list[tuple[str, bool]] = []
    new_rows, new_at = [], []
    for d, key, row in zip(deliveries, keys, rows, strict=True):
        if key[1] is not None:
            owner = seen.get(key)
            if owner is not None and owner != d.id:  # ours after a retry: inserted
                results.append((owner, False))
                continue
            seen[key] = d.id
        results.append((d.id, True))
        new_rows.append(row)
        new_at.append(len(results) - 1)
    if not new_rows:
        if events:
            stored_events.insert(cur, events, deliveries, results)
        return results
    cur.executemany(INSERT_DELIVERY, new_rows, returning=True)
    lost: list[int] = []  # a concurrent enqueue took the dedupe key first
    for k in new_at:
        if cur.fetchone() is None and (not retry or not exists(cur, results[k][0])):
            lost.append(k)
        cur.nextset()
    if lost:
        taken = owners(cur, [keys[k] for k in lost])
        for k in lost:
            results[k] = (taken.get(keys[k], results[k][0]), False)
    waiting.clear()  # a retried transaction decides again
    ranked = ordering.keyed(
        (i, d)
        for d, (i, inserted) in zip(deliveries, results, strict=True)
        if inserted and d.order_key is not None
    )
    waiting.update(ordering.place(cur, ranked, now=now, leased=claim_token is not None))
    if events:
        stored_events.insert(cur, events, deliveries, results)
    if claim_token is None:
        cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return results


def claim(
    cur: Cursor,
    retry: bool,
    *,
    bind: dict[str, Any],
    token: str,
    now: float,
    by_ids: bool,
    register: HolderHook,
    reap: HolderHook,
) -> list[Claim]:
    """Lease the due deliveries `bind` selects (those of bind["ids"] if `by_ids`) to `token`."""
    # A claim committed just before a lost connection is not seen again here: those rows
    # stay leased to `token` until the lease ends, then any worker takes them (nothing lost).
    register(cur, now)
    reap(cur, now)
    probes: list[Any] = []
    if not by_ids:
        # An open endpoint's one probe first (its breaker, store/breaker.py).
        probes = endpoint_state.take_probes(cur, bind, CLAIM_PROBE)
    cur.execute(
        CLAIM_DUE if not by_ids else CLAIM_IDS,
        {**bind, "limit": bind["limit"] - len(probes)},
    )
    taken = claims(token, [*probes, *cur.fetchall()])
    probed = {row[0] for row in probes}
    for c in taken:
        c.probe = c.id in probed
    return taken


def check_results(results: Sequence[AttemptResult]) -> None:
    """Refuse an unknown status, or a pending result without its next attempt."""
    for r in results:
        if r.status not in STATUSES:
            raise ValueError(f"unknown delivery status {r.status!r}")
        if r.status == "pending" and r.next_attempt_at is None:
            raise ValueError(f"delivery {r.delivery_id} stays pending but has no next attempt")


def complete(
    cur: Cursor,
    retry: bool,
    *,
    results: Sequence[AttemptResult],
    columns: dict[str, list[Any]],
    now: float,
    follow_ups: Mapping[str, NewDelivery],
    endpoint_notices: Mapping[str, NewDelivery | None],
    claim_token: str | None,
    lease_until: float | None,
    shared: dict[int, str | None],
    holder: str,
    register: HolderHook,
) -> tuple[list[bool], set[str]]:
    """Log attempts, apply them where the lease holds, advance breakers, insert follow-ups:
    the applied flags and the ids of the follow-ups (and notices) inserted."""
    ids = sorted(set(columns["id"]))
    # Locked in id order (no deadlocks between batches): attempt numbers stay unique.
    cur.execute(
        "SELECT id FROM deliveries WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
        (ids,),
    )
    logged: dict[tuple[str, str, float], bool] = {}
    if retry:  # this batch may have committed before the connection went
        cur.execute(
            "SELECT delivery_id, token, started_at, applied FROM attempts "
            "WHERE delivery_id = ANY(%s) AND token = ANY(%s)",
            (ids, sorted(set(columns["token"]))),
        )
        logged = {(i, t, s): a for i, t, s, a in cur.fetchall()}
    keys = list(zip(columns["id"], columns["token"], columns["started_at"], strict=True))
    todo = [k for k, key in enumerate(keys) if key not in logged]
    batch = {name: [values[k] for k in todo] for name, values in columns.items()}
    batch["applied"] = [False] * len(todo)
    applied = [logged.get(key, False) for key in keys]
    if todo:
        cur.execute(APPLY_RESULTS, {**batch, "now": now})
        for (n,) in cur.fetchall():
            applied[todo[n - 1]] = True
            batch["applied"][n - 1] = True
        cur.execute(INSERT_ATTEMPTS, batch)
        # A finished ordered delivery lets the next of its key go (ordering.py).
        ordering.unpark_next(
            cur,
            [
                delivery_id
                for delivery_id, status, ok in zip(
                    batch["id"], batch["status"], batch["applied"], strict=True
                )
                if ok and status != "pending"
            ],
        )
    inserted: set[str] = set()

    def disable(endpoint: str) -> bool:
        # Called once, in the transaction that auto-pauses the endpoint: its notice.
        if endpoint not in endpoint_notices:
            return False
        notice = endpoint_notices[endpoint]
        if notice is not None:
            if claim_token is not None:
                register(cur, now)
            row = delivery_params(notice, now, claim_token, lease_until, shared, holder)
            cur.execute(INSERT_DELIVERY, row)
            if cur.fetchone() is not None:
                inserted.add(notice.id)
        return True

    # Only the outcomes this try records: a retried batch's earlier try counted its own.
    endpoint_state.record_outcomes(cur, [results[k] for k in todo], now=now, disable=disable)
    wanted = [
        follow_ups[r.delivery_id]
        for r, ok in zip(results, applied, strict=True)
        if ok and r.delivery_id in follow_ups
    ]
    if wanted:
        if claim_token is not None:
            register(cur, now)
        cur.executemany(
            INSERT_DELIVERY,
            [delivery_params(f, now, claim_token, lease_until, shared, holder) for f in wanted],
        )
        # Present under its own id: inserted now, or by this batch before a reconnect.
        cur.execute("SELECT id FROM deliveries WHERE id = ANY(%s)", ([f.id for f in wanted],))
        inserted |= {row[0] for row in cur.fetchall()}
    return applied, inserted


def extend_lease(
    cur: Cursor, retry: bool, ids: Sequence[str], *, token: str, until: float
) -> list[str]:
    """Push out the lease on those of `ids` `token` still holds; returns those ids."""
    cur.execute(
        "UPDATE deliveries SET lease_expires_at = %s "
        "WHERE id = ANY(%s) AND lease_token = %s RETURNING id",
        (until, sorted(ids), token),
    )
    held = {row[0] for row in cur.fetchall()}
    return [i for i in ids if i in held]


def release(
    cur: Cursor, retry: bool, ids: Sequence[str], *, token: str, until: float | None
) -> int:
    """Give back the claims of `ids` `token` holds: due again (not before `until`)."""
    cur.execute(
        "UPDATE deliveries SET lease_token = NULL, lease_expires_at = NULL, "
        "next_attempt_at = GREATEST(next_attempt_at, COALESCE(%s, next_attempt_at)) "
        "WHERE id = ANY(%s) AND lease_token = %s",
        (until, sorted(ids), token),
    )
    count = int(cur.rowcount)
    endpoint_state.drop_probes(cur, ids, token=token)
    if count:
        cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return count


def requeue(
    cur: Cursor,
    retry: bool,
    *,
    ids: Sequence[str],
    status: str | None,
    rule: str | None,
    since: float | None,
    now: float,
    rendered: Mapping[str, NewDelivery],
) -> list[str]:
    """Replay the deliveries selected under the same id (PostgresStore.requeue says how)."""
    selected = history.select_ids(cur, ids=ids, status=status, rule=rule, since=since)
    bare = {row.id for row in history.unrendered(cur, selected)}
    shared: dict[int, str | None] = {}
    renewed = [
        request_params(rendered[i], i, shared) for i in selected if i in bare and i in rendered
    ]
    if renewed:
        cur.executemany(REPLACE_REQUEST, renewed)
        # Rendered anew with a key it lacked: it takes the next place of that key.
        ordering.place(
            cur,
            ordering.keyed((i, rendered[i]) for i in selected if i in bare and i in rendered),
            now=now,
            leased=False,
        )
    selected = [i for i in selected if i not in bare or i in rendered]
    if selected:
        cur.execute(REQUEUE, {"ids": selected, "now": now})
        cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return selected


def due_count(cur: Cursor, retry: bool, *, now: float, reap: HolderHook) -> int:
    """How many deliveries a claim at `now` could take."""
    reap(cur, now)  # so a cron retry-loop does not say "nothing due"
    cur.execute(DUE_COUNT, {"now": now, "due": now})
    return int(cur.fetchone()[0])


def levels(cur: Cursor, retry: bool, *, now: float, reap: HolderHook) -> QueueLevels:
    """Pending (the status index), due now, and the oldest due time (the due index)."""
    reap(cur, now)
    cur.execute(DUE_COUNT, {"now": now, "due": now})
    (due,) = cur.fetchone()
    cur.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'")
    (pending,) = cur.fetchone()
    cur.execute(
        "SELECT next_attempt_at FROM deliveries WHERE next_attempt_at <= %(now)s "
        "AND status = 'pending' ORDER BY next_attempt_at LIMIT 1",
        {"now": now},
    )
    first = cur.fetchone()
    return QueueLevels(pending=int(pending), due=int(due), oldest_due_at=first and first[0])


def rule_counts(cur: Cursor, retry: bool) -> dict[str, dict[str, int]]:
    """Deliveries in the store by rule and status (one GROUP BY)."""
    cur.execute("SELECT rule, status, count(*) FROM deliveries GROUP BY rule, status")
    counts: dict[str, dict[str, int]] = {}
    for rule, status, count in cur.fetchall():
        counts.setdefault(rule, dict.fromkeys(STATUSES, 0))[status] = int(count)
    return counts
