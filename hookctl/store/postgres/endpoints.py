"""Endpoint state and health on PostgreSQL: pause and resume, and what `hookctl endpoints` lists.

The `endpoints` table (migration m004_endpoints) holds what every worker on the database shares
about an endpoint; the claim SQL (store.py, PAUSED) skips a paused one's deliveries. Health is
read as SQLite's endpoints.py reads it: pending and failed counts over all time, attempts,
successes (2xx answers) and the p95 duration over a window, the latest success.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

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

Cursor = Any  # psycopg.Cursor; Any so this module imports without the driver

_STATE = ", ".join(breaker.COLUMNS)
_WRITE_STATE = (
    "UPDATE endpoints SET updated_at = %s, "
    + ", ".join(f"{c} = %s" for c in breaker.COLUMNS)
    + " WHERE endpoint = %s"
)
# The breaker closed: deliveries that started their retry window before it opened get the
# time it was open back (it does not count against their window).
_GIVE_BACK_WINDOW = (
    "UPDATE deliveries SET first_attempt_at = first_attempt_at + (%s - %s) "
    "WHERE status = 'pending' AND endpoint = %s AND first_attempt_at <= %s"
)


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
    """Resume `endpoint`; False if it was not paused. A failing one starts a new period
    before auto-disable, and an open one's probe is due at once (someone says it is back)."""
    cur.execute(
        "UPDATE endpoints SET paused_since = NULL, paused_reason = NULL, updated_at = %s, "
        "failing_since = CASE WHEN failing_since IS NULL THEN NULL ELSE %s END, "
        "next_probe_at = CASE WHEN opened_at IS NULL THEN NULL ELSE %s END "
        "WHERE endpoint = %s AND paused_since IS NOT NULL",
        (now, now, now, endpoint),
    )
    return bool(cur.rowcount == 1)


def states(
    cur: Cursor, endpoints: Sequence[str] | None = None, *, lock: bool = False
) -> dict[str, tuple[breaker.State, float | None]]:
    """The breaker state and paused_since of `endpoints` that have a row (None: all); `lock`
    takes their row locks (in name order, so two batches never deadlock on them)."""
    sql = f"SELECT endpoint, paused_since, {_STATE} FROM endpoints"
    if endpoints is None:
        cur.execute(sql)
    else:
        tail = " ORDER BY endpoint FOR UPDATE" if lock else ""
        cur.execute(f"{sql} WHERE endpoint = ANY(%s){tail}", (sorted(endpoints),))
    return {row[0]: (breaker.State(*row[2:]), row[1]) for row in cur.fetchall()}


def record_outcomes(
    cur: Cursor,
    results: Sequence[AttemptResult],
    *,
    now: float,
    disable: Callable[[str], bool],
) -> None:
    """Advance the breaker of each endpoint in `results` under its row lock (read once per
    endpoint, written only when it changes), pausing those a 410 or auto-disable says to.
    `disable(endpoint)` runs in the transaction that auto-pauses it (once, whatever the number
    of workers): it enqueues the notice, or returns False and the pause waits for a batch that can."""
    by_endpoint: dict[str, list[AttemptResult]] = {}
    for r in results:
        if r.health is not None and r.endpoint is not None:
            by_endpoint.setdefault(r.endpoint, []).append(r)
    if not by_endpoint:
        return
    known = states(cur, list(by_endpoint), lock=True)
    changes = _changes(by_endpoint, known, now)
    missing = sorted(e for e in changes if e not in known)
    if missing:
        # A first failure: the row is made (a rival may make it first), then read locked.
        cur.executemany(
            "INSERT INTO endpoints (endpoint, updated_at) VALUES (%s, %s) "
            "ON CONFLICT (endpoint) DO NOTHING",
            [(e, now) for e in missing],
        )
        known = states(cur, list(by_endpoint), lock=True)
        changes = _changes(by_endpoint, known, now)
    for endpoint, change in changes.items():
        cur.execute(_WRITE_STATE, (now, *change.state.values(), endpoint))
        if change.closed_from is not None:
            cur.execute(_GIVE_BACK_WINDOW, (now, change.closed_from, endpoint, change.closed_from))
        if known[endpoint][1] is not None:  # paused already
            continue
        if change.pause_reason is not None:
            pause(cur, endpoint, now=now, reason=change.pause_reason)
        elif change.disable_reason is not None and disable(endpoint):
            pause(cur, endpoint, now=now, reason=change.disable_reason)


def _changes(
    by_endpoint: Mapping[str, Sequence[AttemptResult]],
    known: Mapping[str, tuple[breaker.State, float | None]],
    now: float,
) -> dict[str, breaker.Change]:
    found = {}
    for endpoint, taken in by_endpoint.items():
        state = known[endpoint][0] if endpoint in known else None
        change = breaker.advance(endpoint, state, taken, now=now)
        if change is not None:
            found[endpoint] = change
    return found


def take_probes(cur: Cursor, bind: Mapping[str, Any], claim_probe: str) -> list[Any]:
    """For each open endpoint whose probe is due (its row not locked by a rival claiming it),
    its oldest due delivery, leased as CLAIM_PROBE does and recorded as the endpoint's one
    probe; the claim rows, at most bind["limit"]."""
    cur.execute(
        "SELECT endpoint FROM endpoints WHERE opened_at IS NOT NULL AND paused_since IS NULL "
        "AND next_probe_at <= %(now)s AND (claim_after IS NULL OR claim_after <= %(now)s) "
        "AND (probe_token IS NULL OR probe_expires_at <= %(now)s) "
        "ORDER BY endpoint FOR UPDATE SKIP LOCKED",
        bind,
    )
    taken: list[Any] = []
    for (endpoint,) in cur.fetchall():
        if len(taken) >= bind["limit"]:
            break
        cur.execute(claim_probe, {**bind, "endpoint": endpoint})
        row = cur.fetchone()
        if row is None:
            continue
        cur.execute(
            "UPDATE endpoints SET probe_token = %s, probe_expires_at = %s, probe_delivery = %s "
            "WHERE endpoint = %s",
            (bind["token"], bind["until"], row[0], endpoint),
        )
        taken.append(row)
    return taken


def drop_probes(cur: Cursor, ids: Sequence[str], *, token: str) -> None:
    """Claims handed back unattempted: a probe among them may be claimed again at once."""
    cur.execute(
        "UPDATE endpoints SET probe_token = NULL, probe_expires_at = NULL, probe_delivery = NULL "
        "WHERE probe_token = %s AND probe_delivery = ANY(%s)",
        (token, list(ids)),
    )


def opened(cur: Cursor) -> dict[str, tuple[float, float | None]]:
    """Every endpoint whose breaker is open: since when, and its next probe."""
    cur.execute(
        "SELECT endpoint, opened_at, next_probe_at FROM endpoints WHERE opened_at IS NOT NULL"
    )
    return {endpoint: (since, next_probe) for endpoint, since, next_probe in cur.fetchall()}


def views(cur: Cursor) -> dict[str, BreakerView]:
    """Every endpoint with failures or an open breaker, as a worker reads it."""
    return {
        endpoint: BreakerView(
            failures=state.failures,
            failing_since=state.failing_since,
            open_since=state.opened_at,
            next_probe_at=state.next_probe_at,
            paused=paused_since is not None,
        )
        for endpoint, (state, paused_since) in states(cur).items()
        if state.failures or state.opened_at is not None
    }


def paused(cur: Cursor) -> dict[str, tuple[float, str | None]]:
    """Every paused endpoint: since when, and why (None: no reason given)."""
    cur.execute(
        "SELECT endpoint, paused_since, paused_reason FROM endpoints WHERE paused_since IS NOT NULL"
    )
    return {endpoint: (since, reason) for endpoint, since, reason in cur.fetchall()}


def health(cur: Cursor, *, since: float) -> list[EndpointHealth]:
    """Every endpoint with a delivery or a state on record, by name (a report: full scans)."""
    cur.execute(
        "SELECT endpoint, status, count(*), max(updated_at) FROM deliveries "
        "WHERE endpoint IS NOT NULL GROUP BY endpoint, status"
    )
    by_status = cur.fetchall()
    cur.execute(
        "SELECT d.endpoint, a.duration_ms, a.status_code FROM attempts a "
        "JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE a.started_at >= %s AND d.endpoint IS NOT NULL",
        (since,),
    )
    attempts = cur.fetchall()
    return health_from(by_status, attempts, paused(cur), states(cur))


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
