"""The circuit breaker's state machine per endpoint: pure, shared by every backend.

A backend reads an endpoint's row, hands it and a batch's outcomes to `advance`, and writes
back what comes out, in the transaction that records the outcomes (so every worker on the
store sees one breaker). Consecutive "down" answers (no answer, a timeout, 5xx, 408, 429)
open it once a rule's `failures` is reached; the claim SQL then skips the endpoint except for
one probe, the first `probe` seconds after opening, each failed probe doubling the wait up to
`probe_max`. Any answer ("up": a 2xx, 3xx or another 4xx) closes it. An endpoint with no
success for a rule's `disable_after` is paused ("auto: ..."); a 410 under `on_gone: pause`
pauses it too. A batch of healthy outcomes for an endpoint with no failures changes nothing,
so the hot path reads one row per endpoint per batch and writes none.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hookctl.durations import format_duration
from hookctl.store.endpoint_records import DEFAULT_BREAKER
from hookctl.store.records import AttemptResult

# The breaker's columns of `endpoints`, in State's order (sqlite m010_breaker, postgres m006).
COLUMNS = (
    "failures",
    "failing_since",
    "last_success_at",
    "opened_at",
    "next_probe_at",
    "probe_interval",
    "probe_token",
    "probe_expires_at",
    "probe_delivery",
)


@dataclass
class State:
    """One endpoint's breaker as stored (a missing row is the all-default State)."""

    failures: int = 0  # consecutive "down" outcomes
    failing_since: float | None = None  # the first of them (no success since)
    last_success_at: float | None = None  # the success that last reset a failing endpoint
    opened_at: float | None = None  # open since (None: closed)
    next_probe_at: float | None = None  # when the next probe may be claimed
    probe_interval: float | None = None  # the wait before that probe (doubles on failure)
    probe_token: str | None = None  # the claim token the probe is leased to
    probe_expires_at: float | None = None  # ... until then (a crashed prober's is retaken)
    probe_delivery: str | None = None  # which delivery is the probe

    def values(self) -> tuple[object, ...]:
        """The COLUMNS values, in order."""
        return tuple(getattr(self, c) for c in COLUMNS)


@dataclass
class Change:
    """What a batch did to an endpoint: its new state, and what else the backend must do."""

    state: State
    # The breaker closed, having opened at this time: pending deliveries whose first attempt
    # came before it get their retry window back (their first_attempt_at moves on by the
    # time it was open).
    closed_from: float | None = None
    pause_reason: str | None = None  # pause the endpoint (a 410 under `on_gone: pause`)
    disable_reason: str | None = None  # pause it as failing too long (auto-disable: notice)


def advance(
    endpoint: str, state: State | None, results: Sequence[AttemptResult], *, now: float
) -> Change | None:
    """The state after `results` (in the order given, all for `endpoint`); None: unchanged."""
    before = state or State()
    st = replace(before)
    change = Change(st)
    for r in results:
        if r.health is None:
            continue
        settings = r.breaker or DEFAULT_BREAKER
        probing = st.probe_delivery == r.delivery_id and st.probe_token == r.token
        if probing:
            st.probe_token = st.probe_expires_at = st.probe_delivery = None
        if r.health != "down":
            if st.failures or st.opened_at is not None:
                if st.opened_at is not None and change.closed_from is None:
                    change.closed_from = st.opened_at
                if r.health == "up":
                    st.last_success_at = r.started_at
                st.failures, st.failing_since = 0, None
                st.opened_at = st.next_probe_at = st.probe_interval = None
                st.probe_token = st.probe_expires_at = st.probe_delivery = None
            if r.health == "gone":
                change.pause_reason = f"410 Gone from {endpoint} (delivery {r.delivery_id})"
            continue
        st.failures += 1
        if st.failing_since is None:
            st.failing_since = r.started_at
        if st.opened_at is None:
            if st.failures >= settings.failures:
                st.opened_at = now
                st.probe_interval = settings.probe
                st.next_probe_at = now + settings.probe
        elif probing:
            interval = min(2 * (st.probe_interval or settings.probe), settings.probe_max)
            st.probe_interval = max(interval, settings.probe)
            st.next_probe_at = now + st.probe_interval
        limit = settings.disable_after
        if limit is not None and now - st.failing_since >= limit:
            since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(st.failing_since))
            change.disable_reason = (
                f"auto: no success for {format_duration(limit)} (failing since {since})"
            )
    if st == before and change.pause_reason is None and change.disable_reason is None:
        return None
    return change


def probe_due(state: State, now: float) -> bool:
    """An open endpoint whose probe may be claimed now (none out, or its lease ran out)."""
    return (
        state.opened_at is not None
        and state.next_probe_at is not None
        and state.next_probe_at <= now
        and (state.probe_token is None or (state.probe_expires_at or 0) <= now)
    )
