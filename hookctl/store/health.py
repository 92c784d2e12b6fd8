"""Endpoint health from rows any backend read: one shape of `EndpointHealth`, computed once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from hookctl.store import breaker
from hookctl.store.endpoint_records import EndpointHealth
from hookctl.store.summaries import percentile


def health_from(
    by_status: Iterable[tuple[str, str, int, float]],
    attempts: Iterable[tuple[str, Any, Any]],
    state: Mapping[str, tuple[float, str | None]],
    breakers: Mapping[str, tuple[breaker.State, float | None]],
) -> list[EndpointHealth]:
    """Every endpoint's health from its deliveries as (endpoint, status, count, last updated),
    its attempts as (endpoint, duration in ms, status code), the paused endpoints and the
    breaker states, by name."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    last_success: dict[str, float] = {}
    for endpoint, status, n, last in by_status:
        counts[endpoint][status] = n
        if status == "succeeded":
            last_success[endpoint] = last
    durations: dict[str, list[float]] = defaultdict(list)
    successes: dict[str, int] = defaultdict(int)
    for endpoint, duration, code in attempts:
        durations[endpoint].append(float(duration or 0))
        if code is not None and 200 <= code <= 299:
            successes[endpoint] += 1
    for known in breakers:
        counts.setdefault(known, defaultdict(int))
    found = []
    for endpoint in sorted(counts):
        taken = sorted(durations.get(endpoint, []))
        since_, reason = state.get(endpoint, (None, None))
        b = breakers[endpoint][0] if endpoint in breakers else breaker.State()
        if b.last_success_at is not None:
            last_success[endpoint] = max(last_success.get(endpoint, 0.0), b.last_success_at)
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
                failures=b.failures,
                failing_since=b.failing_since,
                open_since=b.opened_at,
                next_probe_at=b.next_probe_at,
            )
        )
    return found
