"""Endpoint state and health on PostgreSQL: pause and resume, and what `hookctl endpoints` lists.

The `endpoints` table (migration m004_endpoints) holds what every worker on the database shares
about an endpoint; the claim SQL (store.py, PAUSED) skips a paused one's deliveries. Health is
read as SQLite's endpoints.py reads it: pending and failed counts over all time, attempts,
successes (2xx answers) and the p95 duration over a window, the latest success.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hookctl.store import schedule
from hookctl.store.records import RATE_MEMORY, EndpointHealth, EndpointLimit, Reservation
from hookctl.store.summaries import percentile

Cursor = Any  # psycopg.Cursor; Any so this module imports without the driver


def pause(cur: Cursor, endpoint: str, *, now: float, reason: str | None) -> bool:
    """Pause `endpoint` (known or not yet); False if it was paused already (left as it was)."""
    cur.execute(
        "INSERT INTO endpoints (endpoint, paused_since, paused_reason, updated_at) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (endpoint) DO UPDATE SET "
        "paused_since = excluded.paused_since, paused_reason = excluded.paused_reason, "
        "updated_at = excluded.updated_at WHERE endpoints.paused_since IS NULL",
        (endpoint, now, reason, now),
    )
    return bool(cur.rowcount == 1)


def resume(cur: Cursor, endpoint: str, *, now: float) -> bool:
    """Resume `endpoint`; False if it was not paused."""
    cur.execute(
        "UPDATE endpoints SET paused_since = NULL, paused_reason = NULL, updated_at = %s "
        "WHERE endpoint = %s AND paused_since IS NOT NULL",
        (now, endpoint),
    )
    return bool(cur.rowcount == 1)


def paused(cur: Cursor) -> dict[str, tuple[float, str | None]]:
    """Every paused endpoint: since when, and why (None: no reason given)."""
    cur.execute(
        "SELECT endpoint, paused_since, paused_reason FROM endpoints WHERE paused_since IS NOT NULL"
    )
    return {endpoint: (since, reason) for endpoint, since, reason in cur.fetchall()}


def health(cur: Cursor, *, since: float) -> list[EndpointHealth]:
    """Every endpoint with a delivery or a state on record, by name (a report: full scans)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    last_success: dict[str, float] = {}
    cur.execute(
        "SELECT endpoint, status, count(*), max(updated_at) FROM deliveries "
        "WHERE endpoint IS NOT NULL GROUP BY endpoint, status"
    )
    for endpoint, status, n, last in cur.fetchall():
        counts[endpoint][status] = n
        if status == "succeeded":
            last_success[endpoint] = last
    durations: dict[str, list[float]] = defaultdict(list)
    successes: dict[str, int] = defaultdict(int)
    cur.execute(
        "SELECT d.endpoint, a.duration_ms, a.status_code FROM attempts a "
        "JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE a.started_at >= %s AND d.endpoint IS NOT NULL",
        (since,),
    )
    for endpoint, duration, code in cur.fetchall():
        durations[endpoint].append(float(duration or 0))
        if code is not None and 200 <= code <= 299:
            successes[endpoint] += 1
    state = paused(cur)
    cur.execute("SELECT endpoint FROM endpoints")
    for (known,) in cur.fetchall():
        counts.setdefault(known, defaultdict(int))
    found = []
    for endpoint in sorted(counts):
        taken = sorted(durations.get(endpoint, []))
        since_, reason = state.get(endpoint, (None, None))
        found.append(
            EndpointHealth(
                endpoint=endpoint,
                pending=counts[endpoint]["pending"],
                failed=counts[endpoint]["failed"],
                attempts=len(taken),
                successes=successes.get(endpoint, 0),
                p95_ms=percentile(taken, 95),
                last_success_at=last_success.get(endpoint),
                paused_since=since_,
                paused_reason=reason,
            )
        )
    return found


# --- rate limits (m007_rate; the slot arithmetic is store/schedule.py, shared with SQLite) -----


def reserve(
    cur: Cursor,
    endpoint: str,
    *,
    rule: str | None,
    rate: str,
    interval: float,
    count: int,
    now: float,
    horizon: float,
) -> Reservation:
    """Record `rule`'s rate for `endpoint` (None: record nothing) and hand out its slots, the
    endpoint's row locked
    (FOR UPDATE) so that concurrent reservations take turns."""
    cur.execute(
        "INSERT INTO endpoints (endpoint, updated_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (endpoint, now),
    )
    cur.execute(
        "SELECT next_slot, not_before FROM endpoints WHERE endpoint = %s FOR UPDATE", (endpoint,)
    )
    next_slot, not_before = cur.fetchone()
    if rule is not None:
        cur.execute(
            'INSERT INTO endpoint_rates (endpoint, rule, rate, "interval", seen_at) '
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (endpoint, rule) DO UPDATE SET "
            'rate = excluded.rate, "interval" = excluded."interval", seen_at = excluded.seen_at',
            (endpoint, rule, rate, interval, now),
        )
    cur.execute(
        'SELECT rate, "interval" FROM endpoint_rates WHERE endpoint = %s AND seen_at >= %s',
        (endpoint, now - RATE_MEMORY),
    )
    others = cur.fetchall()
    got = schedule.hand_out(
        next_slot=next_slot,
        not_before=not_before,
        now=now,
        rate=schedule.strictest(others, (rate, interval)),
        count=count,
        horizon=horizon,
    )
    cur.execute(
        "UPDATE endpoints SET next_slot = %s, claim_after = %s, updated_at = %s "
        "WHERE endpoint = %s",
        (
            got.next_slot,
            schedule.claim_after(got, not_before=not_before, horizon=horizon),
            now,
            endpoint,
        ),
    )
    return got


def slow(cur: Cursor, endpoint: str, *, until: float, now: float, reason: str) -> None:
    """Hold `endpoint` until `until` (a Retry-After): schedule and claims start there."""
    cur.execute(
        "INSERT INTO endpoints (endpoint, updated_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (endpoint, now),
    )
    cur.execute(
        "UPDATE endpoints SET "
        "not_before_reason = CASE WHEN %(until)s > coalesce(not_before, 0) THEN %(reason)s "
        "ELSE not_before_reason END, "
        "not_before = GREATEST(not_before, %(until)s), "
        "next_slot = GREATEST(next_slot, %(until)s), "
        "claim_after = GREATEST(claim_after, %(until)s), updated_at = %(now)s "
        "WHERE endpoint = %(endpoint)s",
        {"until": until, "reason": reason, "now": now, "endpoint": endpoint},
    )


def limits(cur: Cursor, *, now: float) -> dict[str, EndpointLimit]:
    """Endpoints with a rate recorded within RATE_MEMORY or a Retry-After hold past `now`."""
    cur.execute(
        'SELECT endpoint, rate, "interval" FROM endpoint_rates WHERE seen_at >= %s',
        (now - RATE_MEMORY,),
    )
    rates = cur.fetchall()
    cur.execute(
        "SELECT endpoint, next_slot, not_before, not_before_reason FROM endpoints "
        "WHERE next_slot IS NOT NULL OR not_before IS NOT NULL"
    )
    return schedule.limits(cur.fetchall(), rates, now=now)
