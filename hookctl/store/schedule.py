"""An endpoint's send schedule, one computation for both backends: which slots a reservation gets.

Each backend reads the endpoint's row under its write lock (SQLite's BEGIN IMMEDIATE, a row
lock on PostgreSQL), calls `hand_out` and writes the result back in the same transaction, so
two clients never get slots closer than the interval (issue 15).
"""

from __future__ import annotations

from collections.abc import Iterable

from hookctl.store.endpoint_records import EndpointLimit, Reservation


def strictest(rates: Iterable[tuple[str, float]], own: tuple[str, float]) -> tuple[str, float]:
    """The (rate, interval) with the longest interval: `own`, or one another rule recorded."""
    best = own
    for rate, interval in rates:
        if interval > best[1]:
            best = (rate, interval)
    return best


def hand_out(
    *,
    next_slot: float | None,
    not_before: float | None,
    now: float,
    rate: tuple[str, float],
    count: int,
    horizon: float,
) -> Reservation:
    """Up to `count` slots from the schedule's end (never before now or its not-before), spaced
    by the interval, none later than now + horizon; the schedule's new end."""
    label, interval = rate
    start = max(next_slot or 0.0, not_before or 0.0, now)
    slots: list[float] = []
    at = start
    while len(slots) < count and at <= now + horizon:
        slots.append(at)
        at += interval
    return Reservation(slots=slots, next_slot=at, interval=interval, rate=label)


def claim_after(reservation: Reservation, *, not_before: float | None, horizon: float) -> float:
    """Until when claims skip the endpoint: while its schedule's end is beyond the horizon
    (a claim then could not send within it) or it is slowed."""
    return max(reservation.next_slot - horizon, not_before or 0.0)


def limits(
    schedule: Iterable[tuple[str, float | None, float | None, str | None]],
    rates: Iterable[tuple[str, str, float]],
    *,
    now: float,
) -> dict[str, EndpointLimit]:
    """EndpointLimits from the endpoints' (endpoint, next_slot, not_before, reason) rows and the
    rates recorded recently (endpoint, rate, interval): those with a rate or a hold past now."""
    best: dict[str, tuple[str, float]] = {}
    for endpoint, rate, interval in rates:
        if endpoint not in best or interval > best[endpoint][1]:
            best[endpoint] = (rate, interval)
    found = {}
    for endpoint, next_slot, not_before, reason in schedule:
        held = not_before is not None and not_before > now
        if endpoint not in best and not held:
            continue
        rate, interval = best.get(endpoint, ("", 0.0))
        found[endpoint] = EndpointLimit(
            endpoint=endpoint,
            rate=rate or None,
            interval=interval,
            next_slot=next_slot,
            not_before=not_before if held else None,
            not_before_reason=reason if held else None,
        )
    return found
