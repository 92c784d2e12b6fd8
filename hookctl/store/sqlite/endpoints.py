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
from collections.abc import Callable, Sequence

from hookctl.store import breaker, schedule
from hookctl.store.endpoint_records import (
    RATE_MEMORY,
    BreakerView,
    EndpointHealth,
    EndpointLimit,
    Reservation,
)
from hookctl.store.health import health_from
from hookctl.store.records import AttemptResult
from hookctl.store.sqlite.ordering import IN_TURN

_STATE = ", ".join(breaker.COLUMNS)
_UPSERT_STATE = (
    f"INSERT INTO endpoints (endpoint, updated_at, {_STATE}) "
    f"VALUES (?, ?, {', '.join('?' * len(breaker.COLUMNS))}) "
    "ON CONFLICT (endpoint) DO UPDATE SET updated_at = excluded.updated_at, "
    + ", ".join(f"{c} = excluded.{c}" for c in breaker.COLUMNS)
)
# The breaker closed: deliveries that started their retry window before it opened get the
# time it was open back (it does not count against their window).
_GIVE_BACK_WINDOW = (
    "UPDATE deliveries SET first_attempt_at = first_attempt_at + (? - ?) "
    "WHERE status = 'pending' AND endpoint = ? AND first_attempt_at <= ?"
)


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
    """Resume `endpoint`; False if it was not paused. A failing one starts a new period
    before auto-disable, and an open one's probe is due at once (someone says it is back)."""
    cursor = conn.execute(
        "UPDATE endpoints SET paused_since = NULL, paused_reason = NULL, updated_at = ?, "
        "failing_since = CASE WHEN failing_since IS NULL THEN NULL ELSE ? END, "
        "next_probe_at = CASE WHEN opened_at IS NULL THEN NULL ELSE ? END "
        "WHERE endpoint = ? AND paused_since IS NOT NULL",
        (now, now, now, endpoint),
    )
    return cursor.rowcount == 1


def states(
    conn: sqlite3.Connection, endpoints: Sequence[str] | None = None
) -> dict[str, tuple[breaker.State, float | None]]:
    """The breaker state and paused_since of `endpoints` that have a row (None: all of them)."""
    sql = f"SELECT endpoint, paused_since, {_STATE} FROM endpoints"
    if endpoints is None:
        rows = conn.execute(sql).fetchall()
    else:
        rows = []
        names = list(endpoints)
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            rows += conn.execute(
                f"{sql} WHERE endpoint IN ({', '.join('?' * len(chunk))})", chunk
            ).fetchall()
    return {row[0]: (breaker.State(*row[2:]), row[1]) for row in rows}


def record_outcomes(
    conn: sqlite3.Connection,
    results: Sequence[AttemptResult],
    *,
    now: float,
    disable: Callable[[str], bool],
) -> None:
    """Advance the breaker of each endpoint in `results` (one row read per endpoint, written
    only when it changes), pausing those a 410 or auto-disable says to. `disable(endpoint)`
    is called in the transaction that auto-pauses it (once): it enqueues the notice, or
    returns False when no notice can go with this batch, and the pause waits for one that can."""
    by_endpoint: dict[str, list[AttemptResult]] = {}
    for r in results:
        if r.health is not None and r.endpoint is not None:
            by_endpoint.setdefault(r.endpoint, []).append(r)
    if not by_endpoint:
        return
    known = states(conn, list(by_endpoint))
    for endpoint, taken in by_endpoint.items():
        state, paused_since = known.get(endpoint, (None, None))
        change = breaker.advance(endpoint, state, taken, now=now)
        if change is None:
            continue
        conn.execute(_UPSERT_STATE, (endpoint, now, *change.state.values()))
        if change.closed_from is not None:
            conn.execute(_GIVE_BACK_WINDOW, (now, change.closed_from, endpoint, change.closed_from))
        if paused_since is not None:
            continue
        if change.pause_reason is not None:
            pause(conn, endpoint, now=now, reason=change.pause_reason)
        elif change.disable_reason is not None and disable(endpoint):
            pause(conn, endpoint, now=now, reason=change.disable_reason)


def take_probes(
    conn: sqlite3.Connection, *, now: float, due: float, limit: int, token: str, until: float
) -> list[str]:
    """For each open endpoint whose probe is due, its oldest due delivery (at most `limit`),
    recorded as the endpoint's one probe, leased to `token` until `until`."""
    taken: list[str] = []
    # Not while a Retry-After holds it (claim_after), and only a delivery in its order_by turn.
    rows = conn.execute(
        f"SELECT endpoint, {_STATE} FROM endpoints WHERE opened_at IS NOT NULL "
        "AND paused_since IS NULL AND next_probe_at <= :now "
        "AND (claim_after IS NULL OR claim_after <= :now)",
        {"now": now},
    ).fetchall()
    for endpoint, *values in rows:
        if len(taken) >= limit or not breaker.probe_due(breaker.State(*values), now):
            continue
        row = conn.execute(
            "SELECT id FROM deliveries INDEXED BY deliveries_due WHERE status = 'pending' "
            "AND next_attempt_at <= :due "
            "AND (lease_expires_at IS NULL OR lease_expires_at <= :now) "
            f"AND endpoint = :endpoint AND {IN_TURN} ORDER BY next_attempt_at LIMIT 1",
            {"due": due, "now": now, "endpoint": endpoint},
        ).fetchone()
        if row is None:
            continue
        conn.execute(
            "UPDATE endpoints SET probe_token = ?, probe_expires_at = ?, probe_delivery = ? "
            "WHERE endpoint = ?",
            (token, until, row[0], endpoint),
        )
        taken.append(row[0])
    return taken


def drop_probes(conn: sqlite3.Connection, ids: Sequence[str], *, token: str) -> None:
    """Claims handed back unattempted: a probe among them may be claimed again at once."""
    conn.executemany(
        "UPDATE endpoints SET probe_token = NULL, probe_expires_at = NULL, probe_delivery = NULL "
        "WHERE probe_token = ? AND probe_delivery = ?",
        [(token, i) for i in ids],
    )


def opened(conn: sqlite3.Connection) -> dict[str, tuple[float, float | None]]:
    """Every endpoint whose breaker is open: since when, and its next probe."""
    return {
        endpoint: (since, next_probe)
        for endpoint, since, next_probe in conn.execute(
            "SELECT endpoint, opened_at, next_probe_at FROM endpoints WHERE opened_at IS NOT NULL"
        )
    }


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
    by_status = conn.execute(
        "SELECT endpoint, status, count(*), max(updated_at) FROM deliveries "
        "WHERE endpoint IS NOT NULL GROUP BY endpoint, status"
    ).fetchall()
    attempts = conn.execute(
        "SELECT d.endpoint, a.duration_ms, a.status_code FROM attempts a "
        "JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE a.started_at >= ? AND d.endpoint IS NOT NULL",
        (since,),
    ).fetchall()
    return health_from(by_status, attempts, paused(conn), states(conn))


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


def views(conn: sqlite3.Connection) -> dict[str, BreakerView]:
    """Every endpoint with failures or an open breaker, as a worker reads it."""
    return {
        endpoint: BreakerView(
            failures=state.failures,
            failing_since=state.failing_since,
            open_since=state.opened_at,
            next_probe_at=state.next_probe_at,
            paused=paused_since is not None,
        )
        for endpoint, (state, paused_since) in states(conn).items()
        if state.failures or state.opened_at is not None
    }
