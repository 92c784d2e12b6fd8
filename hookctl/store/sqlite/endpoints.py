"""Endpoint state and health in SQLite: pause and resume, and the listing `hookctl endpoints` shows.

The `endpoints` table (migration m008_endpoints) holds what every worker on the file shares
about an endpoint (m011_rate adds its rate schedule and Retry-After hold, and
`endpoint_rates` the rate each rule named); the claim SQL (rows.READY) skips a paused one's
deliveries, and those of one whose schedule is full or held. Health is read
from the deliveries and their attempts: pending and failed counts over all time, attempts,
successes (2xx answers) and the p95 duration over a window, the latest success.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict

from hookctl.store import schedule
from hookctl.store.records import RATE_MEMORY, EndpointHealth, EndpointLimit, Reservation
from hookctl.store.summaries import percentile


def pause(conn: sqlite3.Connection, endpoint: str, *, now: float, reason: str | None) -> bool:
    """Pause `endpoint` (known or not yet); False if it was paused already (left as it was)."""
    row = conn.execute(
        "SELECT paused_since FROM endpoints WHERE endpoint = ?", (endpoint,)
    ).fetchone()
    if row is not None and row[0] is not None:
        return False
    conn.execute(
        "INSERT INTO endpoints (endpoint, paused_since, paused_reason, updated_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET "
        "paused_since = excluded.paused_since, paused_reason = excluded.paused_reason, "
        "updated_at = excluded.updated_at",
        (endpoint, now, reason, now),
    )
    return True


def resume(conn: sqlite3.Connection, endpoint: str, *, now: float) -> bool:
    """Resume `endpoint`; False if it was not paused."""
    cursor = conn.execute(
        "UPDATE endpoints SET paused_since = NULL, paused_reason = NULL, updated_at = ? "
        "WHERE endpoint = ? AND paused_since IS NOT NULL",
        (now, endpoint),
    )
    return cursor.rowcount == 1


def paused(conn: sqlite3.Connection) -> dict[str, tuple[float, str | None]]:
    """Every paused endpoint: since when, and why (None: no reason given)."""
    return {
        endpoint: (since, reason)
        for endpoint, since, reason in conn.execute(
            "SELECT endpoint, paused_since, paused_reason FROM endpoints "
            "WHERE paused_since IS NOT NULL"
        )
    }


def health(conn: sqlite3.Connection, *, since: float) -> list[EndpointHealth]:
    """Every endpoint with a delivery or a state on record, by name. Reads every delivery
    and the window's attempts (no per-endpoint index: this is a report, not the hot path)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    last_success: dict[str, float] = {}
    for endpoint, status, n, last in conn.execute(
        "SELECT endpoint, status, count(*), max(updated_at) FROM deliveries "
        "WHERE endpoint IS NOT NULL GROUP BY endpoint, status"
    ):
        counts[endpoint][status] = n
        if status == "succeeded":
            last_success[endpoint] = last
    durations: dict[str, list[float]] = defaultdict(list)
    successes: dict[str, int] = defaultdict(int)
    for endpoint, duration, code in conn.execute(
        "SELECT d.endpoint, a.duration_ms, a.status_code FROM attempts a "
        "JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE a.started_at >= ? AND d.endpoint IS NOT NULL",
        (since,),
    ):
        durations[endpoint].append(float(duration or 0))
        if code is not None and 200 <= code <= 299:
            successes[endpoint] += 1
    state = paused(conn)
    for (known,) in conn.execute("SELECT endpoint FROM endpoints"):
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


# --- rate limits (m011_rate; the slot arithmetic is store/schedule.py, shared with PostgreSQL) --


def reserve(
    conn: sqlite3.Connection,
    endpoint: str,
    *,
    rule: str | None,
    rate: str,
    interval: float,
    count: int,
    now: float,
    horizon: float,
) -> Reservation:
    """Record `rule`'s rate for `endpoint` (None: record nothing) and hand out its slots (in
    the caller's write)."""
    conn.execute(
        "INSERT INTO endpoints (endpoint, updated_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (endpoint, now),
    )
    if rule is not None:
        conn.execute(
            "INSERT INTO endpoint_rates (endpoint, rule, rate, interval, seen_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint, rule) DO UPDATE SET "
            "rate = excluded.rate, interval = excluded.interval, seen_at = excluded.seen_at",
            (endpoint, rule, rate, interval, now),
        )
    others = conn.execute(
        "SELECT rate, interval FROM endpoint_rates WHERE endpoint = ? AND seen_at >= ?",
        (endpoint, now - RATE_MEMORY),
    ).fetchall()
    next_slot, not_before = conn.execute(
        "SELECT next_slot, not_before FROM endpoints WHERE endpoint = ?", (endpoint,)
    ).fetchone()
    got = schedule.hand_out(
        next_slot=next_slot,
        not_before=not_before,
        now=now,
        rate=schedule.strictest(others, (rate, interval)),
        count=count,
        horizon=horizon,
    )
    conn.execute(
        "UPDATE endpoints SET next_slot = ?, claim_after = ?, updated_at = ? WHERE endpoint = ?",
        (
            got.next_slot,
            schedule.claim_after(got, not_before=not_before, horizon=horizon),
            now,
            endpoint,
        ),
    )
    return got


def slow(conn: sqlite3.Connection, endpoint: str, *, until: float, now: float, reason: str) -> None:
    """Hold `endpoint` until `until` (a Retry-After): schedule and claims start there."""
    conn.execute(
        "INSERT INTO endpoints (endpoint, updated_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (endpoint, now),
    )
    conn.execute(
        "UPDATE endpoints SET "
        "not_before_reason = CASE WHEN :until > coalesce(not_before, 0) THEN :reason "
        "ELSE not_before_reason END, "
        "not_before = max(coalesce(not_before, 0), :until), "
        "next_slot = max(coalesce(next_slot, 0), :until), "
        "claim_after = max(coalesce(claim_after, 0), :until), updated_at = :now "
        "WHERE endpoint = :endpoint",
        {"until": until, "reason": reason, "now": now, "endpoint": endpoint},
    )


def limits(conn: sqlite3.Connection, *, now: float) -> dict[str, EndpointLimit]:
    """Endpoints with a rate recorded within RATE_MEMORY or a Retry-After hold past `now`."""
    rates = conn.execute(
        "SELECT endpoint, rate, interval FROM endpoint_rates WHERE seen_at >= ?",
        (now - RATE_MEMORY,),
    ).fetchall()
    rows = conn.execute(
        "SELECT endpoint, next_slot, not_before, not_before_reason FROM endpoints "
        "WHERE next_slot IS NOT NULL OR not_before IS NOT NULL"
    ).fetchall()
    return schedule.limits(rows, rates, now=now)
